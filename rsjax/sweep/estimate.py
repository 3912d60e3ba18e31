"""Slice-hours of a sweep before it runs, from a `--profile_only` sweep of the same file.

A profiled record (`rsjax.train.latency.profile_train_step`) holds `normalized_step_s`, the
train-step time of `normalized_batch` images on the profiling slice. A run's estimate scales it
linearly to the run's global batch (Appendix H's normalisation) and multiplies by its steps:

    hours = total_steps x normalized_step_s x global_batch_size / normalized_batch / 3600

It counts train steps only (no compilation, evaluation, checkpoints, input stalls or time spent
queued), so it is a lower bound on each slice's billed time; the profiles must come from the
slice type the sweep will run on.
"""

import dataclasses
from collections.abc import Sequence

from etils import epath

from rsjax import configs
from rsjax.data import split_sizes
from rsjax.results import existing_result
from rsjax.sweep.grid import Run, build_config
from rsjax.train import programs


@dataclasses.dataclass(frozen=True)
class Estimate:
    """One run's estimate; `hours` is None (and `note` says why) without a usable profile."""

    name: str
    total_steps: int
    global_batch: int
    step_s: float | None = None  # at global_batch, from the profile
    hours: float | None = None
    device: str = ""  # "TPU v4 x16": where the profile was measured
    note: str = ""


def estimate_run(run: Run, profiles: str | epath.PathLike) -> Estimate:
    """The run's train-step hours from `profiles/<run name>/result.json` (status "profiled")."""
    config = build_config(run)
    batch = int(config.global_batch_size)
    steps_per_epoch = max(1, split_sizes.train_examples(config.data) // batch)
    steps = programs.durations(config, steps_per_epoch).total_steps
    base = Estimate(run.name, steps, batch)
    record = existing_result(epath.Path(profiles) / run.name)
    if record is None or not record.get("profile"):
        return dataclasses.replace(base, note="no profile")
    if record.get("run_id") != configs.run_id(config):
        return dataclasses.replace(
            base, note=f"profile is of another config (run id {record.get('run_id')})"
        )
    profile = record["profile"]
    step_s = profile["normalized_step_s"] * batch / profile["normalized_batch"]
    return dataclasses.replace(
        base,
        step_s=step_s,
        hours=steps * step_s / 3600,
        device=f"{profile.get('device_kind', '?')} x{profile.get('num_devices', '?')}",
    )


def estimate(runs: Sequence[Run], profiles: str | epath.PathLike) -> list[Estimate]:
    return [estimate_run(run, profiles) for run in runs]


def format_estimates(
    estimates: Sequence[Estimate], max_slices: int, budget_slice_hours: float | None = None
) -> str:
    """A table of the estimates, the total (against the budget, if any), and the sweep's
    shortest possible wall time."""
    lines = [f"{'run':<24} {'steps':>8} {'batch':>6} {'step_s':>8} {'slice-h':>9}  profile"]
    for e in estimates:
        step = f"{e.step_s:.3f}" if e.step_s is not None else "-"
        hours = _hours(e.hours) if e.hours is not None else "-"
        where = e.device or e.note
        row = f"{e.name:<24} {e.total_steps:>8} {e.global_batch:>6} {step:>8} {hours:>9}"
        lines.append(f"{row}  {where}")
    known = [e.hours for e in estimates if e.hours is not None]
    missing = len(estimates) - len(known)
    total = sum(known)
    lines.append(
        f"estimated {_hours(total)} slice-hours of train steps for {len(known)} of "
        f"{len(estimates)} runs" + (f" ({missing} without a usable profile)" if missing else "")
    )
    if known:
        wall = max(total / max_slices, max(known))
        lines.append(
            f"at --max_slices {max_slices}: at least {_hours(wall)} h of wall time "
            "(train steps only; add compilation, evaluation and queueing)"
        )
    if budget_slice_hours is not None and total > budget_slice_hours:
        lines.append(
            f"the estimate exceeds --budget_slice_hours {budget_slice_hours:g}: the last runs "
            "to start will not"
        )
    devices = sorted({e.device for e in estimates if e.device})
    if len(devices) > 1:
        lines.append(f"warning: profiles from different devices: {', '.join(devices)}")
    return "\n".join(lines)


def _hours(hours: float) -> str:
    """One decimal from an hour up ("1,234.5"), two significant digits below ("0.0013")."""
    return f"{hours:,.1f}" if hours >= 1 else f"{hours:.2g}"
