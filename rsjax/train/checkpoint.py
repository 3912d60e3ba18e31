"""Orbax checkpoints of the TrainState, plus the run's config kept beside them.

A workdir holds `checkpoints/<step>/` (Orbax, async, the last `keep` kept) and `config.json`. A
restart resumes from the latest checkpoint; a workdir whose config differs from the new one (other
than in `RESUMABLE_KEYS`, which do not change the result) is refused.
"""

import json
from typing import Any

import ml_collections
import orbax.checkpoint as ocp
from etils import epath
from flax.traverse_util import flatten_dict

from rsjax.fileio import atomic_write_text

CONFIG_FILE = "config.json"
# Keys that may change between a run and its resumption without changing what it computes.
RESUMABLE_KEYS = frozenset(
    {
        "log_every_steps",
        "checkpoint_every_steps",
        "keep_checkpoints",
        "progress",
        "data.threads",
        "data.autotune",  # deterministic either way: the same batches
        "model.remat",  # recomputes the same values; the state is unchanged
    }
)


def create_manager(workdir: epath.Path, keep: int) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=True, enable_async_checkpointing=True
    )
    return ocp.CheckpointManager(workdir / "checkpoints", options=options)


def save(manager: ocp.CheckpointManager, step: int, state: Any) -> None:
    manager.save(step, args=ocp.args.StandardSave(state), force=True)


def restore(manager: ocp.CheckpointManager, abstract_state: Any) -> tuple[Any, int] | None:
    """(state, step) of the latest checkpoint, restored onto `abstract_state`'s shardings."""
    step = manager.latest_step()
    if step is None:
        return None
    return manager.restore(step, args=ocp.args.StandardRestore(abstract_state)), step


def check_or_write_config(workdir: epath.Path, config: ml_collections.ConfigDict) -> None:
    """Writes config.json on a fresh workdir; on an existing one, refuses a different config."""
    path = workdir / CONFIG_FILE
    current = json.loads(config.to_json())
    if path.exists():
        saved = flatten_dict(json.loads(path.read_text()), sep=".")
        new = flatten_dict(current, sep=".")
        differing = sorted(
            k
            for k in set(saved) | set(new)
            if saved.get(k) != new.get(k) and k not in RESUMABLE_KEYS
        )
        if differing:
            details = "; ".join(f"{k}: {saved.get(k)!r} -> {new.get(k)!r}" for k in differing[:8])
            raise ValueError(
                f"{workdir} holds a run with a different config ({details}). Use a new --workdir, "
                "or restore the original config to resume it."
            )
        return
    atomic_write_text(path, json.dumps(current, indent=2, sort_keys=True))
