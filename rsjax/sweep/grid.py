"""Runs of a sweep: a named set of config overrides over a base config (big_vision style).

A `Run` is pure data: `overrides` maps dotted config keys ("model.depth") to JSON-able values,
`base` names the config they apply to ("imagenet:resnetrs50_i160", "fashion_mnist:long", or a
config file "path.py:preset"), and `run_id` is the hash of the full config they make.
"""

import dataclasses
import functools
import itertools
import json
import types
from collections.abc import Iterable, Mapping
from typing import Any

import ml_collections

from rsjax import configs
from rsjax.errors import UsageError


@dataclasses.dataclass(frozen=True)
class Run:
    """One training run of a sweep.

    Attributes:
      name: readable and unique within its sweep (e.g. "d101-w1.5-r224-e350"); no spaces or "/".
      overrides: dotted config key -> JSON-able value (read-only after construction).
      base: "CONFIG[:PRESET]": a bundled config or a config file, and its preset.
      sweep: the sweep's name; `load_sweep` fills in the file's stem when empty.
    """

    name: str
    overrides: Mapping[str, Any]
    base: str
    sweep: str = ""

    def __post_init__(self) -> None:
        if not self.name or any(c.isspace() or c in "/\\:" for c in self.name):
            raise ValueError(
                f"Run name must be non-empty without spaces, '/' or ':': {self.name!r}."
            )
        if not self.base:
            raise ValueError(f"Run {self.name!r} has no base config.")
        for key in self.overrides:
            if not isinstance(key, str) or not key or any(not part for part in key.split(".")):
                raise ValueError(f"Run {self.name!r}: bad override key {key!r} (want 'a.b.c').")
        try:
            json.dumps(dict(self.overrides), allow_nan=False)
        except (TypeError, ValueError) as e:
            raise TypeError(f"Run {self.name!r}: overrides must be JSON-able: {e}") from None
        object.__setattr__(self, "overrides", types.MappingProxyType(dict(self.overrides)))

    @functools.cached_property
    def run_id(self) -> str:
        """The id of the run's full config (`rsjax.configs.run_id`): the same in every sweep, on
        every host, and for the same config started by hand."""
        return configs.run_id(build_config(self))


def product(**axes: Iterable[Any]) -> list[dict[str, Any]]:
    """Cartesian product of named axes as a list of dicts; the first axis varies slowest.

    product(depth=[50, 101], width=[1.0, 2.0]) ->
      [{"depth": 50, "width": 1.0}, {"depth": 50, "width": 2.0}, {"depth": 101, ...}, ...]
    """
    names = list(axes)
    return [dict(zip(names, values, strict=True)) for values in itertools.product(*axes.values())]


def run_name(
    depth: int, width: float, resolution: int, epochs: float, seed: int | None = None
) -> str:
    """ "d{depth}-w{width}-r{resolution px}-e{epochs}", e.g. "d101-w1.5-r224-e350", and
    "-s{seed}" for a replicate ("d101-w1.5-r224-e350-s1")."""
    return f"d{depth}-w{width:g}-r{resolution}-e{epochs:g}" + ("" if seed is None else f"-s{seed}")


def build_config(run: Run) -> ml_collections.ConfigDict:
    """The run's full config: its base config with `name` and `sweep` set to the run's, then its
    overrides (UsageError naming the run for a bad base or override). Not validated: see
    `rsjax.sweep.loader.validate`."""
    try:
        config = configs.load_file(run.base)
        config.name = run.name
        config.sweep = run.sweep
        return configs.apply_overrides(config, run.overrides)
    except UsageError as e:
        raise UsageError(f"run {run.name!r}: {e}") from None
