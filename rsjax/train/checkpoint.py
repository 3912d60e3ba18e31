"""Orbax checkpoints of the TrainState, plus the run's config kept beside them.

A workdir holds `checkpoints/<step>/` (Orbax, async, the last `keep` kept) and `config.json`. A
restart resumes from the newest readable checkpoint: an unreadable newer one (a truncated file)
is named in one warning and moved to `unreadable_checkpoints/<step>` (never deleted), and none
readable at all is a `CheckpointError`. Leftover `*.orbax-checkpoint-tmp*` directories of a
killed save are not steps and are ignored. A workdir whose config differs from the new one (other
than in `rsjax.configs.RESUMABLE_KEYS`, which do not change the result) is refused.
"""

import contextlib
import gc
import json
import logging as std_logging
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import ml_collections
import orbax.checkpoint as ocp
from absl import logging
from etils import epath
from flax.traverse_util import flatten_dict

from rsjax.configs import RESUMABLE_KEYS, canonical, with_added_keys
from rsjax.errors import UsageError, first_line
from rsjax.fileio import atomic_write_text

CONFIG_FILE = "config.json"
UNREADABLE_DIR = "unreadable_checkpoints"  # in the workdir, beside checkpoints/


class CheckpointError(UsageError):
    """No checkpoint of the workdir can be read."""


def create_manager(workdir: epath.Path, keep: int) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=True, enable_async_checkpointing=True
    )
    return ocp.CheckpointManager(workdir / "checkpoints", options=options)


def has_steps(workdir: epath.Path) -> bool:
    """Whether `workdir/checkpoints` holds a step directory (readable or not)."""
    directory = workdir / "checkpoints"
    return directory.is_dir() and any(p.name.isdigit() for p in directory.iterdir())


def save(manager: ocp.CheckpointManager, step: int, state: Any) -> None:
    manager.save(step, args=ocp.args.StandardSave(state), force=True)


def restore(manager: ocp.CheckpointManager, abstract_state: Any) -> tuple[Any, int] | None:
    """(state, step) of the newest readable checkpoint on `abstract_state`'s shardings; None
    when there is no checkpoint. Unreadable newer ones are moved aside (see the module doc)."""
    unreadable: list[tuple[int, str]] = []
    for step in sorted(manager.all_steps(), reverse=True):
        with _quiet_stderr() as outcome:
            try:
                state = manager.restore(step, args=ocp.args.StandardRestore(abstract_state))
            except Exception as e:  # Orbax raises many types for a damaged checkpoint
                outcome["failed"] = _reason(e)
            # The error is released here, inside the quiet window: its abandoned reads go too.
        if "failed" in outcome:
            unreadable.append((step, outcome["failed"]))
            continue
        for bad_step, reason in unreadable:
            moved = _move_aside(manager, bad_step)
            logging.warning(
                "checkpoint %d in %s is unreadable (%s); moved to %s, resuming from step %d",
                bad_step, manager.directory, reason, moved, step,
            )  # fmt: skip
        if unreadable:
            manager.reload()
        return state, step
    if unreadable:
        steps = ", ".join(str(s) for s, _ in unreadable)
        raise CheckpointError(
            f"no readable checkpoint in {manager.directory} (steps {steps}; newest: "
            f"{unreadable[0][1]}); nothing was changed: use a new --workdir or move them away"
        )
    return None


@contextlib.contextmanager
def _quiet_stderr(grace_s: float = 0.5) -> Iterator[dict[str, str]]:
    """Holds stderr (the file descriptor, so C++ threads too), unraisable-exception reports and
    the asyncio logger's records for one restore attempt. Set "failed" in the yielded dict when
    the attempt failed: its echoes are dropped after `grace_s` (when one array of a damaged
    checkpoint fails to read, Orbax abandons the other reads, "Exception ignored in ..." and
    "Task exception was never retrieved", and TensorStore's late callbacks find its event loop
    closed, each printing a traceback); `restore` reports the error in one line. After an
    attempt that succeeded, whatever it printed is printed as usual."""
    outcome: dict[str, str] = {}
    sys.stderr.flush()
    saved_fd, hook = os.dup(2), sys.unraisablehook
    asyncio_logger, held_records = std_logging.getLogger("asyncio"), _HeldRecords()
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        sys.unraisablehook = lambda unraisable: None
        asyncio_logger.addFilter(held_records)
        try:
            yield outcome
        finally:
            gc.collect()
            if "failed" in outcome:
                time.sleep(grace_s)  # stragglers of the failed reads finish and print here
                gc.collect()
            sys.stderr.flush()
            os.dup2(saved_fd, 2)
            os.close(saved_fd)
            sys.unraisablehook = hook
            asyncio_logger.removeFilter(held_records)
            if "failed" not in outcome:
                held.seek(0)
                sys.stderr.write(held.read().decode(errors="replace"))
                for record in held_records.records:
                    asyncio_logger.handle(record)


class _HeldRecords(std_logging.Filter):
    """Holds back the records of a logger ("Task exception was never retrieved", which asyncio
    logs when the abandoned reads of a failed restore are collected) instead of emitting them."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[std_logging.LogRecord] = []

    def filter(self, record: std_logging.LogRecord) -> bool:
        self.records.append(record)
        return False


def _move_aside(manager: ocp.CheckpointManager, step: int) -> epath.Path:
    source = epath.Path(manager.directory) / str(step)
    target_dir = epath.Path(manager.directory).parent / UNREADABLE_DIR
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / str(step)
    suffix = 1
    while target.exists():
        target, suffix = target_dir / f"{step}.{suffix}", suffix + 1
    source.rename(target)
    return target


def _reason(error: BaseException) -> str:
    """ "Type: first line" of the innermost cause of a restore error (TensorStore's own words,
    not Orbax's wrapper with its spec dump)."""
    while error.__cause__ is not None:
        error = error.__cause__
    message = first_line(error).split(" See full TensorStore")[0][:300]
    return f"{type(error).__name__}: {message}"


def check_or_write_config(workdir: epath.Path, config: ml_collections.ConfigDict) -> None:
    """Writes config.json on a fresh workdir; on an existing one, refuses a different config."""
    path = workdir / CONFIG_FILE
    current = json.loads(config.to_json())
    if path.exists():
        saved = with_added_keys(flatten_dict(json.loads(path.read_text()), sep="."))
        new = with_added_keys(flatten_dict(current, sep="."))
        differing = sorted(
            k
            for k in set(saved) | set(new)
            if canonical(saved.get(k)) != canonical(new.get(k)) and k not in RESUMABLE_KEYS
        )
        if differing:
            details = "; ".join(f"{k}: {saved.get(k)!r} -> {new.get(k)!r}" for k in differing[:8])
            raise UsageError(
                f"{workdir} holds a run with a different config ({details}); use a new --workdir, "
                "or restore the original config to resume it"
            )
        return
    atomic_write_text(path, json.dumps(current, indent=2, sort_keys=True))
