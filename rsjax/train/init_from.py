"""A run's first state from pretrained weights: `config.init_from` (fine-tuning, Appendix F).

`init_from.path` names the source:
  - an rsjax run directory (its `checkpoints/`): the checkpoint at `init_from.step` (0: the
    newest), its EMA weights (`init_from.weights="ema"`, what the source evaluated) or its raw
    ones ("raw");
  - a timm `resnetrs*` / `tf_efficientnet_*` state dict file: `.npz` (name -> array) or
    `.safetensors` (needs the `safetensors` package), converted by
    `rsjax.models.from_timm_state_dict`.
Every backbone leaf (params and BatchNorm statistics: everything but the `classifier` head) is
copied bit for bit; the head keeps the new run's fresh initialisation for its own class count.
Step, optimiser state and EMAs start fresh (the EMAs at the copied weights). A source whose
backbone does not match the new model is one UsageError naming the first offending key. The
source is read only when the run starts from nothing: a resumed run continues its checkpoint.
"""

import functools
import json
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from flax.traverse_util import flatten_dict, unflatten_dict

from rsjax.errors import UsageError
from rsjax.models import from_timm_state_dict
from rsjax.train.state import TrainState, averaged_variables, ravel

HEAD = "classifier"  # the top-level params module re-initialised for the new classes
STATE_DICT_SUFFIXES = (".npz", ".safetensors")
Variables = dict[str, Any]  # {"params": tree, "batch_stats": tree} of numpy arrays


def check(init: ml_collections.ConfigDict) -> None:
    """UsageError for an `init_from.path` that is not a run directory or a state dict file (its
    values are checked by `rsjax.configs.validate`)."""
    if not init.path:
        return
    path = epath.Path(init.path)
    if not path.exists():
        raise UsageError(f"init_from.path {init.path}: no such file or run directory")
    if path.is_dir():
        if not (path / "checkpoints").is_dir():
            raise UsageError(f"init_from.path {init.path} is not an rsjax run (no checkpoints/)")
    elif path.suffix not in STATE_DICT_SUFFIXES:
        raise UsageError(
            f"init_from.path {init.path}: a run directory or a timm state dict "
            f"({' or '.join(STATE_DICT_SUFFIXES)}) is needed"
        )


def source_variables(init: ml_collections.ConfigDict, model: Any) -> Variables:
    """The source's {"params", "batch_stats"} as numpy trees (in the source's own structure)."""
    path = epath.Path(init.path)
    if path.is_dir():
        return run_variables(path, init.step, init.weights)
    state_dict = load_state_dict(path)
    head_rows = _timm_head_rows(state_dict)
    source_model = model.clone(num_classes=head_rows) if head_rows else model
    try:
        variables = from_timm_state_dict(source_model, state_dict)
    except ValueError as e:
        raise UsageError(f"init_from.path {init.path}: {e}") from None
    return jax.tree.map(np.asarray, variables)


def run_variables(run_dir: epath.Path, step: int = 0, weights: str = "ema") -> Variables:
    """A run's checkpointed weights at `step` (0: newest), restored on this host."""
    manager = ocp.CheckpointManager(
        run_dir / "checkpoints", item_handlers=ocp.StandardCheckpointHandler()
    )
    steps = manager.all_steps()
    if not steps or (step and step not in steps):
        raise UsageError(
            f"init_from: {run_dir} has no checkpoint {step or '(none at all)'}; it has {steps}"
        )
    step = step or max(steps)
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
        manager.item_metadata(step),
    )
    state = TrainState(**manager.restore(step, args=ocp.args.StandardRestore(target)))
    manager.close()
    if weights == "raw":
        return _host({"params": state.params, "batch_stats": state.batch_stats})
    return _host(averaged_variables(state))


def load_state_dict(path: epath.Path) -> dict[str, np.ndarray]:
    """A timm state dict file as name -> numpy array."""
    if path.suffix == ".npz":
        with np.load(path) as archive:
            return {name: archive[name] for name in archive.files}
    try:
        from safetensors.numpy import load_file
    except ImportError:
        raise UsageError(
            f"init_from.path {path}: reading .safetensors needs `pip install safetensors` "
            "(or save the state dict as .npz)"
        ) from None
    return load_file(str(path))


def transfer(target: Variables, source: Variables, where: str = "init_from") -> Variables:
    """`target` with every non-head leaf replaced by `source`'s (same key, same shape and dtype).

    Raises UsageError naming the first key the two backbones do not share or whose shapes
    differ.
    """
    flat_target, flat_source = flatten_dict(target), flatten_dict(source)
    merged = {}
    for key, value in flat_target.items():
        if _is_head(key):
            merged[key] = value
            continue
        if key not in flat_source:
            raise UsageError(f"{where}: the source has no {'/'.join(key)} (shape {value.shape})")
        copied = flat_source[key]
        if copied.shape != value.shape:
            raise UsageError(
                f"{where}: {'/'.join(key)} is {copied.shape} in the source but {value.shape} here"
            )
        merged[key] = np.asarray(copied, dtype=value.dtype)
    extra = sorted(k for k in flat_source if k not in flat_target and not _is_head(k))
    if extra:
        raise UsageError(f"{where}: the source has {'/'.join(extra[0])}, which this model lacks")
    return unflatten_dict(merged)


def initial_state(fresh: TrainState, source: Variables) -> TrainState:
    """`fresh` (a new run's state, on its shardings) with the source's backbone copied in and its
    EMAs set to the resulting weights; step and optimiser state stay fresh."""
    variables = transfer(
        {"params": _host(fresh.params), "batch_stats": _host(fresh.batch_stats)}, source
    )
    params, stats = variables["params"], variables["batch_stats"]
    ema = (params, stats) if fresh.layout == "tree" else (ravel(params), ravel(stats))
    place = functools.partial(jax.tree.map, _on_sharding_of)
    return fresh.replace(
        params=place(fresh.params, params),
        batch_stats=place(fresh.batch_stats, stats),
        ema_params=place(fresh.ema_params, ema[0]),
        ema_batch_stats=place(fresh.ema_batch_stats, ema[1]),
    )


def source_summary(init: ml_collections.ConfigDict) -> dict[str, Any]:
    """What the record says of the source: path, weights and step (for a run directory)."""
    summary = {"path": str(init.path)}
    path = epath.Path(init.path)
    if path.is_dir():
        summary.update(weights=init.weights, step=init.step or None)
        config = path / "config.json"
        if config.exists():
            summary["source_name"] = json.loads(config.read_text()).get("name")
    return summary


def _on_sharding_of(fresh: jax.Array, value: Any) -> jax.Array:
    """`value` (host numpy) placed like `fresh` (works when the mesh spans several processes)."""
    value = np.asarray(value, dtype=fresh.dtype)
    if value.shape != fresh.shape:
        raise ValueError(f"shape {value.shape} != {fresh.shape}")
    return jax.make_array_from_callback(fresh.shape, fresh.sharding, lambda index: value[index])


def _host(tree: Any) -> Any:
    """A tree of arrays (possibly sharded over several processes) as host numpy arrays."""
    from jax.experimental import multihost_utils

    if jax.process_count() > 1:
        return jax.tree.map(np.asarray, multihost_utils.process_allgather(tree, tiled=True))
    return jax.tree.map(np.asarray, tree)


def _is_head(key: tuple[str, ...]) -> bool:
    return len(key) > 1 and key[0] == "params" and key[1] == HEAD


def _timm_head_rows(state_dict: dict[str, np.ndarray]) -> int | None:
    """The class count of a timm state dict's classifier (`fc` or `classifier`), if it has one."""
    for name in ("fc.weight", "classifier.weight"):
        if name in state_dict:
            return int(np.shape(state_dict[name])[0])
    return None
