"""Where each run of a launched sweep stands, read from its directory only.

Layout of a sweep workdir:
  DIR/sweep.json          the sweep's runs (name, run_id, base, overrides), written at launch
  DIR/RUN_NAME/run.json   the run itself (the worker reads its config from here)
  DIR/RUN_NAME/.lock      held (fcntl.flock) by the local process training the run
  DIR/RUN_NAME/result.json, checkpoints/, metrics.jsonl   written by the trainer

DIR is local or any `etils.epath` backend (gs://): everything here reads and writes through
epath. Locks are local only (a bucket has no flock): on a remote DIR, `is_locked` is False and
a live run shows as partial until its record says more.
"""

import dataclasses
import fcntl
import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from etils import epath

from rsjax.fileio import atomic_write_text
from rsjax.results.schema import RESULT_FILE, existing_result, read_result
from rsjax.sweep.grid import Run

LOCKED_EXIT_CODE = 75  # a worker found its run locked by another process (EX_TEMPFAIL)
DONE_EXIT_CODE = 76  # a worker found its run already done (finished by another launcher)
SWEEP_FILE = "sweep.json"
RUN_FILE = "run.json"
LOCK_FILE = ".lock"
# A run's state: done (complete/profiled), failed, corrupt (unreadable result), running (locked
# by a live process), partial (preempted, stopped, or checkpoints without a result), pending
# (nothing yet); on slices also queued (an attempt claimed, waiting for its slice).
STATES = ("complete", "profiled", "failed", "corrupt", "running", "queued", "partial", "pending")


# Result statuses that count as done: a training launch needs "complete"; a --profile_only
# launch is also satisfied by "profiled".
DONE_STATUSES = {False: ("complete",), True: ("complete", "profiled")}


def result_status(run_dir: str | os.PathLike) -> str | None:
    """The status in run_dir/result.json (local or gs://), None if absent or unreadable."""
    record = existing_result(run_dir)
    return record["status"] if record else None


def is_done(run_dir: str | os.PathLike, profile_only: bool = False) -> bool:
    """Whether the run in run_dir needs no (further) training or profiling."""
    return result_status(run_dir) in DONE_STATUSES[profile_only]


def run_to_json(run: Run) -> dict:
    return {
        "name": run.name,
        "run_id": run.run_id,
        "base": run.base,
        "sweep": run.sweep,
        "overrides": dict(run.overrides),
    }


def run_from_json(record: dict) -> Run:
    return Run(record["name"], record["overrides"], record["base"], record.get("sweep", ""))


def write_sweep(workdir: epath.PathLike, runs: Sequence[Run]) -> None:
    """Records the sweep's runs in DIR/sweep.json and each run in DIR/NAME/run.json."""
    workdir = epath.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    _write_json(workdir / SWEEP_FILE, {"runs": [run_to_json(r) for r in runs]})
    for run in runs:
        (workdir / run.name).mkdir(exist_ok=True)
        _write_json(workdir / run.name / RUN_FILE, run_to_json(run))


def read_sweep(workdir: epath.PathLike) -> list[Run]:
    """The runs recorded by `write_sweep` (FileNotFoundError if DIR holds no sweep)."""
    path = epath.Path(workdir) / SWEEP_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{workdir} holds no {SWEEP_FILE}: no sweep was launched there.")
    return [run_from_json(r) for r in json.loads(path.read_text())["runs"]]


def _write_json(path: epath.Path, record: dict) -> None:
    atomic_write_text(path, json.dumps(record, indent=2, sort_keys=True))


@contextmanager
def run_lock(run_dir: epath.PathLike) -> Iterator[bool]:
    """Yields True while this process holds the run's lock, False if another process does.

    An flock is released by the kernel when its holder exits, so a killed launcher or worker
    never leaves a stale lock behind. Needs a filesystem with flock (local disks, most NFS):
    ValueError for a remote run_dir.
    """
    if is_remote(run_dir):
        raise ValueError(f"{run_dir}: run locks need a local filesystem (flock)")
    run_dir = epath.Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.uname().nodename} {os.getpid()}\n".encode())
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def is_remote(path: epath.PathLike) -> bool:
    """Whether `path` is a URL of a remote filesystem (gs://...), not a local path."""
    return "://" in os.fspath(path)


def is_locked(run_dir: epath.PathLike) -> bool:
    """Whether some live local process holds the run's lock (False on a remote run_dir)."""
    if is_remote(run_dir) or not (epath.Path(run_dir) / LOCK_FILE).exists():
        return False
    with run_lock(run_dir) as acquired:
        return not acquired


@dataclasses.dataclass(frozen=True)
class RunState:
    name: str
    state: str  # one of STATES
    detail: str = ""  # failure reason, corrupt-file message, or the top-1 of a finished run


def run_state(run_dir: epath.PathLike) -> RunState:
    """The state of the run in `run_dir` (see STATES); never raises for a corrupt result."""
    run_dir = epath.Path(run_dir)
    name = run_dir.name
    if is_locked(run_dir):
        return RunState(name, "running")
    result_path = run_dir / RESULT_FILE
    if result_path.exists():
        try:
            result = read_result(result_path)
        except (ValueError, OSError) as e:
            return RunState(name, "corrupt", str(e))
        status = result["status"]
        if status == "failed":
            kind = result.get("error_type")
            return RunState(
                name, "failed", f"{kind}: {result['error']}" if kind else result["error"]
            )
        if status in ("complete", "profiled"):
            top1 = result.get("metrics", {}).get("ema_top1")
            return RunState(name, status, f"ema_top1 {top1:.4f}" if top1 is not None else "")
        if status == "preempted":
            return RunState(name, "partial", f"preempted at step {result['checkpoint_step']}")
        if status == "running":  # no live process holds it: the process died without a word
            return RunState(name, "partial", "stopped while running (killed?)")
    if (run_dir / "checkpoints").is_dir() and any((run_dir / "checkpoints").iterdir()):
        return RunState(name, "partial")
    return RunState(name, "pending")


def sweep_states(workdir: epath.PathLike) -> list[RunState]:
    """The state of every run of the sweep launched in `workdir`, in sweep order."""
    return [run_state(epath.Path(workdir) / run.name) for run in read_sweep(workdir)]
