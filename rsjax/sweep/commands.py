"""`rsjax sweep plan|launch|status`: argument parsing lives in rsjax.cli, the work here."""

import argparse
import collections
import functools
import json
import time

from etils import epath

from rsjax.errors import UsageError
from rsjax.sweep import attempts, local, state
from rsjax.sweep.grid import Run
from rsjax.sweep.loader import load_sweep

# Override keys shown as plan columns (short name -> dotted key), in this order.
PLAN_COLUMNS = {
    "depth": "model.depth",
    "blocks": "model.stage_sizes",
    "width": "model.width_multiplier",
    "res": "data.image_size",
    "epochs": "num_epochs",
    "RA": "data.randaugment_magnitude",
    "sd": "model.stochastic_depth_rate",
    "drop": "model.dropout_rate",
    "ls": "label_smoothing",
    "wd": "optim.weight_decay",
    "lr": "optim.base_learning_rate",
    "steps": "num_train_steps",
}


def format_plan(runs: list[Run]) -> str:
    """The runs as a fixed-width table, then counts per base config."""
    columns = [c for c, key in PLAN_COLUMNS.items() if any(key in r.overrides for r in runs)]
    header = ["name", "run_id", *columns, "base"]
    rows = [
        [
            run.name,
            run.run_id,
            *(_cell(run.overrides.get(PLAN_COLUMNS[c], "")) for c in columns),
            run.base,
        ]
        for run in runs
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    lines = [
        "  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
    counts = collections.Counter(run.base for run in runs)
    lines.append("")
    if len(counts) <= 3:
        lines.append(
            f"{len(runs)} runs (" + ", ".join(f"{n} on {b}" for b, n in counts.items()) + ")"
        )
    else:
        lines.append(f"{len(runs)} runs over {len(counts)} base configs")
    return "\n".join(lines)


def _cell(value: object) -> str:
    if isinstance(value, list | tuple):
        return "-".join(_cell(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def plan(args: argparse.Namespace) -> int:
    runs = load_sweep(args.sweep_file)
    runs = local.select(runs, args.only)
    if args.jsonl:
        for run in runs:
            print(json.dumps(state.run_to_json(run)))
    else:
        print(format_plan(runs))
    return 0


def launch(args: argparse.Namespace) -> int:
    if args.profile_batch_per_device < 1:
        raise UsageError(
            f"--profile_batch_per_device must be >= 1, got {args.profile_batch_per_device}"
        )
    runs = local.select(load_sweep(args.sweep_file), args.only)
    if args.launcher == "tpu-vm":
        from rsjax.sweep import tpu_vm

        return tpu_vm.launch(runs, args)
    if state.is_remote(args.workdir):
        raise UsageError(f"--launcher local needs a local --workdir, got {args.workdir}")
    workdir = epath.Path(args.workdir).resolve()
    print(f"[sweep] {len(runs)} runs -> {workdir} (parallel {args.parallel})")
    summary = local.launch_local(
        runs,
        workdir,
        parallel=args.parallel,
        profile_only=args.profile_only,
        command=functools.partial(
            local.worker_command, batch_per_device=args.profile_batch_per_device
        ),
    )
    print(
        f"[sweep] finished here: {len(summary.ran)}, failed: {len(summary.failed)}, "
        f"already done: {len(summary.skipped_done)}, "
        f"held by another launcher: {len(summary.skipped_locked)}"
    )
    if summary.failed:
        print(f"[sweep] failed runs: {', '.join(summary.failed)} (see `rsjax sweep status`)")
    return 1 if summary.failed else 0


def status(args: argparse.Namespace) -> int:
    """Each run's state from its record and, for slice launches, its attempts."""
    workdir = epath.Path(args.workdir)
    now = time.time()
    rows, hours = [], 0.0
    for s in state.sweep_states(workdir):
        summary = attempts.summarize(attempts.read_attempts(workdir / s.name), now)
        hours += summary.slice_hours
        name = s.state
        if summary.live and s.state in ("partial", "pending", "failed"):
            name = summary.live  # a live attempt says more than the last record
        detail = "; ".join(d for d in (s.detail, summary.text) if d)
        rows.append((name, s.name, detail))
    counts = collections.Counter(row[0] for row in rows)
    print(
        f"{workdir}: {len(rows)} runs: "
        + ", ".join(f"{counts[k]} {k}" for k in state.STATES if counts[k])
        + (f"; {hours:.2f} slice-hours" if hours else "")
    )
    for name, run, detail in rows:
        if args.all or name in ("failed", "corrupt", "running", "queued", "partial"):
            print(f"  {name:<9} {run}" + (f"  {detail}" if detail else ""))
    return 0


def logs(args: argparse.Namespace) -> int:
    """Prints one worker's log of a run's attempt (the newest by default)."""
    history = attempts.read_attempts(args.run_dir)
    if not history:
        raise UsageError(f"{args.run_dir} has no slice attempts (was it launched on TPU?)")
    numbers = [a.number for a in history]
    number = numbers[-1] if args.attempt is None else args.attempt
    if number not in numbers:
        raise UsageError(f"{args.run_dir} has no attempt {number} (it has {numbers})")
    path = attempts.attempt_dir(args.run_dir, number) / attempts.log_name(args.worker)
    if not path.exists():
        raise UsageError(f"no log from worker {args.worker} in attempt {number} yet: {path}")
    print(path.read_text(), end="")
    return 0
