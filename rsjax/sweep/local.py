"""Runs a sweep on this machine: one worker process per run, N at a time, relaunch-safe.

A relaunch skips runs that are complete (or profiled, for `profile_only`), retries failed ones,
resumes partial ones from their last checkpoint (the trainer does that from the run's workdir),
and never starts a run whose lock another launcher holds (`rsjax.sweep.state.run_lock`).
"""

import dataclasses
import fnmatch
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

from etils import epath

from rsjax import paper_tables
from rsjax.sweep import state
from rsjax.sweep.grid import Run


@dataclasses.dataclass
class LaunchSummary:
    ran: list[str] = dataclasses.field(default_factory=list)  # finished by this launcher
    failed: list[str] = dataclasses.field(default_factory=list)  # worker exited non-zero
    skipped_done: list[str] = dataclasses.field(default_factory=list)
    skipped_locked: list[str] = dataclasses.field(default_factory=list)  # another launcher


def select(runs: Sequence[Run], only: str | None) -> list[Run]:
    """The runs whose name matches the glob `only` (all when None); ValueError if none match."""
    if not only:
        return list(runs)
    chosen = [run for run in runs if fnmatch.fnmatch(run.name, only)]
    if not chosen:
        raise ValueError(f"--only {only!r} matches none of the {len(runs)} runs.")
    return chosen


def worker_command(
    run_dir: epath.Path,
    profile_only: bool,
    batch_per_device: int = paper_tables.PROFILE_BATCH_PER_DEVICE,
) -> list[str]:
    """The command that trains (or profiles, from `batch_per_device` per device) the run
    recorded in run_dir/run.json."""
    command = [sys.executable, "-m", "rsjax.sweep.worker", str(run_dir)]
    if not profile_only:
        return command
    return [*command, "--profile_only", "--batch_per_device", str(batch_per_device)]


def launch_local(
    runs: Sequence[Run],
    workdir: str | epath.Path,
    *,
    parallel: int = 1,
    profile_only: bool = False,
    log: Callable[[str], None] = print,
    poll_s: float = 0.5,
    command: Callable[[epath.Path, bool], list[str]] = worker_command,
) -> LaunchSummary:
    """Runs every run that is not done into workdir/RUN_NAME, at most `parallel` at a time.

    Each run's worker holds the run's lock while it trains, so two launchers on the same sweep
    divide the runs between them instead of training any twice. `command(run_dir, profile_only)`
    gives a run's worker argv (tests substitute a fake worker).
    """
    if parallel < 1:
        raise ValueError(f"parallel must be >= 1, got {parallel}.")
    workdir = epath.Path(workdir).resolve()
    state.write_sweep(workdir, runs)
    summary = LaunchSummary()
    queue = list(runs)
    active: dict[str, tuple[subprocess.Popen, float]] = {}
    start = time.monotonic()
    total = len(queue)
    while queue or active:
        while queue and len(active) < parallel:
            run = queue.pop(0)
            run_dir = workdir / run.name
            current = state.run_state(run_dir)
            if current.state in state.DONE_STATUSES[profile_only]:
                summary.skipped_done.append(run.name)
                continue
            if current.state == "running":
                summary.skipped_locked.append(run.name)
                log(f"[sweep] {run.name}: running in another launcher, skipped")
                continue
            process = subprocess.Popen(command(run_dir, profile_only))
            active[run.name] = (process, time.monotonic())
            log(f"[sweep] {run.name}: started ({current.state})")
        for name, (process, started) in list(active.items()):
            code = process.poll()
            if code is None:
                continue
            del active[name]
            if code == state.LOCKED_EXIT_CODE:
                summary.skipped_locked.append(name)
                log(f"[sweep] {name}: taken by another launcher, skipped")
                continue
            if code == state.DONE_EXIT_CODE:  # finished by another launcher since we looked
                summary.skipped_done.append(name)
                continue
            (summary.ran if code == 0 else summary.failed).append(name)
            done = len(summary.ran) + len(summary.failed)
            elapsed = time.monotonic() - start
            remaining = len(queue) + len(active)
            eta = elapsed / done * remaining if done else 0.0
            log(
                f"[sweep] {name}: {'done' if code == 0 else f'FAILED (exit {code})'} in "
                f"{time.monotonic() - started:.0f} s; {done + len(summary.skipped_done)}/{total} "
                f"handled, ETA {eta / 60:.1f} min"
            )
        if active:
            time.sleep(poll_s)
    return summary
