"""Loads a sweep file (`get_sweep() -> list[Run]`) and validates every run before any launches."""

import collections
import dataclasses
import inspect
import pathlib
from collections.abc import Sequence

from rsjax import configs
from rsjax.configs.loader import import_file
from rsjax.errors import UsageError
from rsjax.sweep.grid import Run, build_config


def _duplicates(values: Sequence[str]) -> list[str]:
    return sorted(v for v, n in collections.Counter(values).items() if n > 1)


def validate(runs: Sequence[Run], source: str = "sweep") -> None:
    """Raises ValueError/TypeError for an empty grid, a non-Run entry, duplicate names or run ids,
    or a run that `rsjax train` would reject (`rsjax.configs.validate` of its full config), naming
    the run and the key."""
    if not isinstance(runs, list | tuple):
        raise TypeError(f"{source}: get_sweep() must return a list of Run, got {type(runs)}.")
    if not runs:
        raise ValueError(f"{source}: the sweep is empty (get_sweep() returned no runs).")
    for i, run in enumerate(runs):
        if not isinstance(run, Run):
            raise TypeError(f"{source}: entry {i} is a {type(run).__name__}, not a Run.")
    if names := _duplicates([run.name for run in runs]):
        raise ValueError(f"{source}: duplicate run names: {', '.join(names)}.")
    for run in runs:  # before the ids: a run id needs the full config
        config = build_config(run)  # names the run in its errors
        try:
            configs.validate(config)
        except UsageError as e:
            raise UsageError(f"{source}: run {run.name!r}: {e}") from None
    if ids := _duplicates([run.run_id for run in runs]):
        clashes = [
            f"{run_id} ({', '.join(r.name for r in runs if r.run_id == run_id)})" for run_id in ids
        ]
        raise ValueError(f"{source}: runs with identical configs (run ids): {'; '.join(clashes)}.")


def split_preset(spec: str | pathlib.Path) -> tuple[pathlib.Path, str | None]:
    """'sweeps/fmnist_fig3.py:demo' -> (Path('sweeps/fmnist_fig3.py'), 'demo')."""
    text = str(spec)
    head, sep, preset = text.rpartition(":")
    if sep and head.endswith(".py") and preset and "/" not in preset:
        return pathlib.Path(head), preset
    return pathlib.Path(text), None


def load_sweep(spec: str | pathlib.Path) -> list[Run]:
    """The validated runs of a sweep file, `PATH` or `PATH:PRESET` (`get_sweep(PRESET)`).

    Runs without a sweep name get the file's stem ("sweeps/paper_fig3.py" -> "paper_fig3"), with
    the preset appended when one is given ("fmnist_fig3:demo").
    """
    path, preset = split_preset(spec)
    if not path.is_file():
        raise FileNotFoundError(f"No sweep file {path}.")
    module = import_file(path, "sweep")
    get_sweep = getattr(module, "get_sweep", None)
    if not callable(get_sweep):
        raise ValueError(f"Sweep file {path} defines no get_sweep() function.")
    if preset is None:
        runs = get_sweep()
    else:
        try:
            inspect.signature(get_sweep).bind(preset)
        except TypeError:
            raise ValueError(f"{path}: get_sweep() takes no preset (got {preset!r}).") from None
        runs = get_sweep(preset)
    name = path.stem if preset is None else f"{path.stem}:{preset}"
    if isinstance(runs, list | tuple):
        runs = [
            dataclasses.replace(r, sweep=name) if isinstance(r, Run) and not r.sweep else r
            for r in runs
        ]
    validate(runs, source=str(spec))
    return list(runs)
