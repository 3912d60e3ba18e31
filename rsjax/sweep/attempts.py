"""The records of a run's attempts on slices, in RUN_DIR/_launch/attempt-K/ (local or gs://).

  claim.json      {resource, claimed_at}            the controller, before it creates the QR
  heartbeat.json  {started_at, time, step, beats}   worker 0, every heartbeat while training
  exit.json       {returncode, ended_at, step}      worker 0, when training ended
  lost.json       {reason, at}                      the controller, when it found the slice
                                                    preempted, failed or hung and deleted it
  worker-W.log    each worker's training log, copied up at every heartbeat and at the end

An attempt is *live* until it has exit.json or lost.json. An ended attempt is a *failure* when
its exit code is non-zero and the run's record does not say "preempted" (SIGTERM checkpoints and
exits); lost attempts are preemptions (hung slices included) and are retried without counting
against `--max_failures`.
"""

import dataclasses
import json
import re
import time

from etils import epath

from rsjax.fileio import atomic_write_text

LAUNCH_DIR = "_launch"
CLAIM_FILE = "claim.json"
HEARTBEAT_FILE = "heartbeat.json"
EXIT_FILE = "exit.json"
LOST_FILE = "lost.json"
_ATTEMPT_DIR = re.compile(r"attempt-(\d+)")


def attempt_dir(run_dir: epath.PathLike, attempt: int) -> epath.Path:
    """RUN_DIR/_launch/attempt-K."""
    return epath.Path(run_dir) / LAUNCH_DIR / f"attempt-{attempt}"


def log_name(worker: int) -> str:
    return f"worker-{worker}.log"


def write_json(path: epath.Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(record, sort_keys=True))


def _read_json(path: epath.Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None  # absent, or being written by a non-atomic backend: next tick


@dataclasses.dataclass(frozen=True)
class AttemptRecord:
    number: int
    claim: dict | None
    heartbeat: dict | None
    exit: dict | None
    lost: dict | None

    @property
    def ended(self) -> bool:
        return self.exit is not None or self.lost is not None

    def slice_hours(self, now: float) -> float:
        """Hours the slice ran this attempt: from worker 0's start to the exit, the loss, the
        last heartbeat (an attempt whose slice vanished without a word), or `now` while live."""
        if not self.heartbeat:
            return 0.0
        if self.exit:
            end = self.exit["ended_at"]
        elif self.lost:
            end = self.lost["at"]
        else:
            end = now
        return max(0.0, end - self.heartbeat["started_at"]) / 3600.0


def read_attempts(run_dir: epath.PathLike) -> list[AttemptRecord]:
    """The run's attempts, oldest first ([] before the first claim)."""
    launch = epath.Path(run_dir) / LAUNCH_DIR
    if not launch.is_dir():
        return []
    numbers = sorted(int(m[1]) for p in launch.iterdir() if (m := _ATTEMPT_DIR.fullmatch(p.name)))
    records = []
    for number in numbers:
        where = attempt_dir(run_dir, number)
        records.append(
            AttemptRecord(
                number=number,
                claim=_read_json(where / CLAIM_FILE),
                heartbeat=_read_json(where / HEARTBEAT_FILE),
                exit=_read_json(where / EXIT_FILE),
                lost=_read_json(where / LOST_FILE),
            )
        )
    return records


def record_lost(run_dir: epath.PathLike, attempt: int, reason: str) -> None:
    write_json(attempt_dir(run_dir, attempt) / LOST_FILE, {"reason": reason, "at": time.time()})


def claim(run_dir: epath.PathLike, attempt: int, resource: str) -> None:
    write_json(
        attempt_dir(run_dir, attempt) / CLAIM_FILE,
        {"resource": resource, "claimed_at": time.time()},
    )


def unclaim(run_dir: epath.PathLike, attempt: int) -> None:
    """Forgets a claim whose create was refused for quota or capacity (nothing was made)."""
    where = attempt_dir(run_dir, attempt)
    if not (where / HEARTBEAT_FILE).exists():
        (where / CLAIM_FILE).unlink(missing_ok=True)
        if where.is_dir() and not any(where.iterdir()):
            where.rmdir()


@dataclasses.dataclass(frozen=True)
class Summary:
    """A run's attempts in one line of `rsjax sweep status`."""

    live: str | None  # "running" (a heartbeat came) or "queued" (claimed, no heartbeat yet)
    text: str  # "attempt 2: step 1200, heartbeat 40 s ago; preempted x1; 0.52 slice-hours"
    slice_hours: float


def summarize(history: list[AttemptRecord], now: float) -> Summary:
    if not history:
        return Summary(None, "", 0.0)
    current, parts, live = history[-1], [], None
    if not current.ended and current.claim:
        if current.heartbeat:
            live = "running"
            age = now - current.heartbeat["time"]
            parts.append(
                f"attempt {current.number}: step {current.heartbeat.get('step')}, "
                f"heartbeat {age:.0f} s ago"
            )
        else:
            live = "queued"
            since = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(current.claim["claimed_at"]))
            parts.append(f"attempt {current.number}: queued since {since}")
    lost = sum(1 for a in history if a.lost and not a.lost["reason"].startswith("create"))
    failed = [a for a in history if a.exit and a.exit["returncode"] != 0]
    if lost:
        parts.append(f"preempted x{lost}")
    if failed:
        parts.append(f"failed attempts {len(failed)} (exit {failed[-1].exit['returncode']})")
    hours = sum(a.slice_hours(now) for a in history)
    parts.append(f"{hours:.2f} slice-hours")
    return Summary(live, "; ".join(parts), hours)
