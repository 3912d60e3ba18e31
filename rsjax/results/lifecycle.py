"""A run's `result.json` from start to end: created "running", updated on every way out.

`RunRecord.start` writes the record before anything large (checkpoints, event files), so a run
that dies later still has one. Each end rewrites it: `complete(...)`, `fail(error)` (type and
first line of the message; the traceback goes to `error.log` beside it), `preempt(step)`, or
`profiled(profile)` for a run that is only profiled.
`ema_is_warm` is the rule for whether a record's EMA metrics mean something (its `train.ema_warm`).
Writing the record is never what fails a run: if even that small write fails (a full disk), one
line on stderr says so and the run goes on to its own end.
"""

import datetime
import os
import sys
import traceback
from typing import Any

from etils import epath

from rsjax.errors import first_line
from rsjax.results.schema import write_result

ERROR_LOG = "error.log"
# The EMA that evaluation uses (of the weights and of the BN statistics) counts as warmed up when
# its horizon, 1 / (1 - ema_decay) steps, fits into the run this many times: a plain EMA would
# then weigh its starting point by at most ema_decay**steps <= e**-3 (5%). Shorter runs evaluate
# an average of their early, fast-changing weights (measured: 47-step Fashion-MNIST runs at
# decay 0.999 lost 6.3 points of top-1 to their EMA on average, 469-step runs 0.08).
EMA_WARM_HORIZONS = 3


def ema_is_warm(ema_decay: float, total_steps: int) -> bool:
    """Whether a run of `total_steps` has a warmed-up EMA (see `EMA_WARM_HORIZONS`)."""
    return ema_decay <= 0 or total_steps * (1.0 - ema_decay) >= EMA_WARM_HORIZONS


def now() -> str:
    """UTC now as ISO 8601 to the second (YYYY-MM-DDTHH:MM:SS+00:00)."""
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


class RunRecord:
    """The record of one run in `workdir` (written only where `enabled`: process 0)."""

    def __init__(self, workdir: str | os.PathLike, record: dict[str, Any], enabled: bool = True):
        self.workdir = epath.Path(workdir)
        self.record = record
        self.enabled = enabled

    @classmethod
    def start(
        cls, workdir: str | os.PathLike, header: dict[str, Any], enabled: bool = True
    ) -> "RunRecord":
        """Writes `header` (identity, config, model, ...) with status "running" and returns it."""
        run = cls(
            workdir, {**header, "status": "running", "error": None, "started": now()}, enabled
        )
        run.write()
        return run

    def write(self) -> None:
        if not self.enabled:
            return
        try:
            write_result(self.workdir, self.record)
        except OSError as e:
            print(f"rsjax: could not write {self.workdir}/result.json: {e}", file=sys.stderr)

    def complete(self, **blocks: Any) -> None:
        """Status "complete"; `blocks` (metrics, train, profile) update the record's blocks."""
        for key, value in blocks.items():
            current = self.record.get(key)
            self.record[key] = {**current, **value} if isinstance(current, dict) else value
        self.record.update(status="complete", error=None, finished=now())
        self.write()

    def profiled(self, profile: dict[str, Any]) -> None:
        """Status "profiled": a profile-only run measured `profile` (no training)."""
        self.record.update(status="profiled", error=None, profile=profile, finished=now())
        self.write()

    def preempt(self, step: int) -> None:
        """Status "preempted" after a checkpoint at `step` was saved."""
        self.record.update(
            status="preempted",
            checkpoint_step=int(step),
            error="preempted (SIGTERM); rerun the same command to resume",
            finished=now(),
        )
        self.write()

    def fail(self, error: BaseException) -> None:
        """Status "failed" with the error's type and first line; the traceback in error.log."""
        self.record.update(
            status="failed",
            error_type=type(error).__name__,
            error=first_line(error),
            finished=now(),
        )
        self.write()
        if self.enabled:
            text = "".join(traceback.format_exception(error))
            try:
                (self.workdir / ERROR_LOG).write_text(text)
            except OSError as e:
                print(f"rsjax: could not write {self.workdir}/{ERROR_LOG}: {e}", file=sys.stderr)
