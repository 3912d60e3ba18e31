"""What identifies a run: the `run_id` hash of its config, and the keys that do not change it.

`run_id(config)` is 8 hex digits of sha256 over the config's canonical JSON, leaving out the
run's labels (`IDENTITY_KEYS`: its name and sweep) and the keys that do not change what it
computes (`RESUMABLE_KEYS`: logging, checkpoint cadence, input threads; `STORAGE_KEYS`: the
state's layout in memory and checkpoints). So a sweep run, the same
run restarted by hand, and its crashed first attempt all carry the id `rsjax sweep plan` prints.
"""

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import ml_collections
from flax.traverse_util import flatten_dict

# Labels of a run, not part of what it computes.
IDENTITY_KEYS = frozenset({"name", "sweep"})
# Keys that may change between a run and its resumption without changing what it computes.
RESUMABLE_KEYS = frozenset(
    {
        "log_every_steps",
        "checkpoint_every_steps",
        "keep_checkpoints",
        "progress",
        "data.threads",
        "data.autotune",  # deterministic either way: the same batches
        "data.decoded_cache",  # the same batches, decoded once instead of every epoch
        "model.remat",  # recomputes the same values; the state is unchanged
        "data.train_eval_split",  # one more evaluation at the end; training is unchanged
        "data.validation_split",  # likewise
    }
)

# How the state is stored, not what it computes ("auto" is resolved per backend by the trainer;
# config.json keeps the resolved value so a resume in another layout is refused).
STORAGE_KEYS = frozenset({"state_layout"})


# Keys added after runs were recorded, each with the value that keeps the behaviour those runs
# had. At that value a key is left out of the run id, and a config.json without it reads as
# holding it (`with_added_keys`), so earlier runs keep their ids and can still be resumed.
ADDED_KEYS: Mapping[str, Any] = {
    "data.input_shards": 0,
    "model.family": "resnet_rs",
    "model.depth_multiplier": 1.0,
    "optim.name": "sgd",
    "optim.rmsprop_decay": 0.9,
    "optim.rmsprop_epsilon": 1e-3,
    "optim.schedule": "cosine",
    "optim.decay_rate": 0.97,
    "optim.decay_epochs": 2.4,
    "model.resnet_d": True,
    "init_from.path": "",
    "init_from.step": 0,
    "init_from.weights": "ema",
    "cotrain.pseudo_labels": "",
    "cotrain.ratio": 1.0,
    "cotrain.hard": False,
    "cotrain.temperature": 1.0,
    "cotrain.label_smoothing": 0.0,
    "data.eval_image_size": 0,
    "data.num_frames": 0,
    "data.frame_stride": 1,
    "data.scale_range": (1.0, 1.0),
    "data.eval_clips": 1,
    "data.eval_crops": 1,
    "model.temporal.kernels": "rs",
    "model.temporal.stem_kernel": 5,
    "model.temporal.stem_stride": 2,
    "model.temporal.pool_stride": 2,
    "model.temporal.self_gating": True,
    "model.temporal.resnet_d_shortcut": False,
}


def with_added_keys(flat: Mapping[str, Any]) -> dict[str, Any]:
    """A flattened config with every `ADDED_KEYS` key it lacks at its neutral value."""
    return {**ADDED_KEYS, **flat}


def canonical(value: Any) -> Any:
    """JSON form used for hashing: tuples as lists, integral floats as ints (350.0 == 350)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list | tuple):
        return [canonical(v) for v in value]
    if isinstance(value, Mapping):
        return {k: canonical(v) for k, v in value.items()}
    return value


def content_id(payload: Any) -> str:
    """8 hex digits of sha256 over the canonical (sorted, compact) JSON of `payload`."""
    text = json.dumps(canonical(payload), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def run_id(config: ml_collections.ConfigDict | Mapping[str, Any]) -> str:
    """The run's id: `content_id` of its flattened config without identity, resumable or storage
    keys.

    Accepts a ConfigDict or the JSON dict of one (as result.json and config.json hold it).
    """
    return _id_without(config, IDENTITY_KEYS | RESUMABLE_KEYS | STORAGE_KEYS)


def replicate_id(config: ml_collections.ConfigDict | Mapping[str, Any]) -> str:
    """The id shared by the replicates of a run: its `run_id` computed without `seed`, so runs
    that differ only in their seed have one replicate id (and distinct run ids)."""
    return _id_without(config, IDENTITY_KEYS | RESUMABLE_KEYS | STORAGE_KEYS | {"seed"})


def _id_without(config: ml_collections.ConfigDict | Mapping[str, Any], ignored) -> str:
    tree = json.loads(config.to_json()) if hasattr(config, "to_json") else dict(config)
    flat = flatten_dict(tree, sep=".")
    return content_id(
        {
            k: v
            for k, v in flat.items()
            if k not in ignored
            and not (k in ADDED_KEYS and canonical(v) == canonical(ADDED_KEYS[k]))
        }
    )
