"""One attempt of a run on one worker of a slice: `python -m rsjax.sweep.slice_worker ... -- TRAIN`.

Every worker of a slice runs this from the startup script (`rsjax.sweep.startup`). It runs the
training command TRAIN (`rsjax train ... --jax_distributed`) as a child process with its output
in a local log, and while it runs, every `--heartbeat_s`:
  - worker 0 writes RUN_DIR/_launch/attempt-K/heartbeat.json {started_at, time, step, beats};
  - every worker copies its log to RUN_DIR/_launch/attempt-K/worker-W.log.
When TRAIN ends, worker 0 writes exit.json {returncode, ended_at, step} and then deletes the
slice's own queued resource (`--resource`), so a finished slice stops costing at once. SIGTERM
(a spot preemption notice) is passed on to TRAIN, which checkpoints and stops. RUN_DIR may be
gs:// (every file goes through etils.epath).
"""

import argparse
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence

from etils import epath

from rsjax.sweep.attempts import EXIT_FILE, HEARTBEAT_FILE, attempt_dir, log_name, write_json

_STEP = re.compile(rb"step (\d+)/")


def last_step(log: bytes) -> int | None:
    """The step of the last progress line ("step N/TOTAL ...") in a training log."""
    found = _STEP.findall(log[-65536:])
    return int(found[-1]) if found else None


def run_attempt(
    run_dir: str,
    attempt: int,
    worker: int,
    train: Sequence[str],
    *,
    heartbeat_s: float = 30.0,
    delete_command: Sequence[str] = (),
) -> int:
    """Runs `train` to its end, with heartbeats and log copies; its exit code."""
    where = attempt_dir(run_dir, attempt)
    where.mkdir(parents=True, exist_ok=True)
    fd, log_path = tempfile.mkstemp(prefix=f"rsjax-w{worker}-", suffix=".log")
    started = time.time()
    child = subprocess.Popen(list(train), stdout=fd, stderr=subprocess.STDOUT)
    os.close(fd)
    previous = signal.signal(signal.SIGTERM, lambda *_: child.send_signal(signal.SIGTERM))
    beats = 0
    try:
        while True:
            try:
                returncode = child.wait(timeout=heartbeat_s)
                break
            except subprocess.TimeoutExpired:
                beats += 1
                _report(where, worker, log_path, started, beats)
    finally:
        signal.signal(signal.SIGTERM, previous)
    step = _report(where, worker, log_path, started, beats + 1)
    if worker == 0:
        try:
            write_json(
                where / EXIT_FILE, {"returncode": returncode, "ended_at": time.time(), "step": step}
            )
        finally:  # the slice goes either way: a controller reads the run's record instead
            if delete_command:
                subprocess.run(list(delete_command), capture_output=True)
    os.unlink(log_path)
    return returncode


def _report(where: epath.Path, worker: int, log_path: str, started: float, beats: int):
    """Copies the log up; on worker 0 also writes the heartbeat. The step it saw (or None).
    A failed upload (a storage hiccup) is reported on stderr and left to the next beat."""
    with open(log_path, "rb") as f:
        log = f.read()
    step = last_step(log)
    try:
        (where / log_name(worker)).write_bytes(log)
        if worker == 0:
            write_json(
                where / HEARTBEAT_FILE,
                {"started_at": started, "time": time.time(), "step": step, "beats": beats},
            )
    except OSError as e:
        print(f"rsjax.sweep.slice_worker: upload to {where} failed: {e}", file=sys.stderr)
    return step


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv:
        sys.exit(
            "usage: python -m rsjax.sweep.slice_worker RUN_DIR ATTEMPT WORKER [...] -- TRAIN..."
        )
    split = argv.index("--")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("attempt", type=int)
    parser.add_argument("worker", type=int)
    parser.add_argument("--heartbeat_s", type=float, default=30.0)
    parser.add_argument(
        "--delete", default="", help="the command (one string) that deletes this slice's QR"
    )
    args = parser.parse_args(argv[:split])
    delete = shlex.split(args.delete)
    sys.exit(
        run_attempt(
            args.run_dir,
            args.attempt,
            args.worker,
            argv[split + 1 :],
            heartbeat_s=args.heartbeat_s,
            delete_command=delete,
        )
    )


if __name__ == "__main__":
    main()
