"""Device mesh, parameter partition rules (kept as data), and host batches -> global arrays.

The mesh has two axes, `data` and `model`. The batch is split over `data`. Parameters follow
`PARTITION_RULES`: regexes over a leaf's path ("params/c3_block0/conv2/kernel") mapped to a
PartitionSpec; the first matching rule wins, a spec whose axis does not divide the dimension falls
back to replication for that dimension. With `fsdp`, the largest still-unsharded dimension that the
`data` axis divides is sharded over `data` too (ZeRO-3 style), for every leaf of at least
`fsdp_min_size` elements. Optimiser traces and EMAs share their parameter's path suffix, so they
shard like it.
"""

import math
import re
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from rsjax.errors import UsageError

DATA, MODEL = "data", "model"

# Output channels of convolutions and dense layers over `model` (Megatron-style column split).
PARTITION_RULES: tuple[tuple[str, tuple[str | None, ...]], ...] = (
    (r".*conv\d*/kernel$", (None, None, None, MODEL)),
    (r".*(classifier|se/reduce|se/expand)/kernel$", (None, MODEL)),
    (r".*", ()),
)


def make_mesh(data: int = -1, model: int = 1, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A (data, model) mesh over the first data x model of `devices` (default: all devices);
    data=-1 means "all devices not used by the model axis".

    Axes are `AxisType.Auto` (GSPMD-style propagation): the train step is annotated only at its
    inputs and outputs.
    """
    devices = list(devices if devices is not None else jax.devices())
    if model < 1 or data == 0 or data < -1:
        raise ValueError(f"mesh sizes must be positive (data may be -1), got {data} x {model}.")
    if data == -1:
        if len(devices) % model:
            raise ValueError(f"{len(devices)} devices cannot form a mesh with model={model}.")
        data = len(devices) // model
    if data * model > len(devices):
        raise ValueError(
            f"mesh data={data} x model={model} needs {data * model} devices; {len(devices)} exist."
        )
    grid = np.asarray(devices[: data * model]).reshape(data, model)
    return Mesh(grid, (DATA, MODEL), axis_types=(AxisType.Auto, AxisType.Auto))


def config_mesh(config: Any, check_batches: bool = True) -> Mesh:
    """The mesh of a config (`mesh.data` x `mesh.model`), checked against its batch sizes (with
    `check_batches`); UsageError when the devices or the batches do not fit it."""
    try:
        mesh = make_mesh(config.mesh.data, config.mesh.model)
        if check_batches:
            check_batch_divisible(config.global_batch_size, mesh)
            check_batch_divisible(config.eval_batch_size, mesh, "eval batch")
    except ValueError as e:
        raise UsageError(str(e)) from None
    return mesh


def leaf_spec(
    path: str,
    shape: tuple[int, ...],
    mesh: Mesh,
    rules: Sequence[tuple[str, Sequence[str | None]]] = PARTITION_RULES,
    fsdp: bool = False,
    fsdp_min_size: int = 2**12,
) -> P:
    """The PartitionSpec of one leaf of shape `shape` at `path`."""
    spec: list[str | None] = [None] * len(shape)
    for pattern, rule in rules:
        if re.fullmatch(pattern, path):
            for dim, axis in enumerate(rule[: len(shape)]):
                if axis is not None and shape[dim] % mesh.shape[axis] == 0:
                    spec[dim] = axis
            break
    if fsdp and math.prod(shape) >= fsdp_min_size and mesh.shape[DATA] > 1:
        free = [
            d for d in range(len(shape)) if spec[d] is None and shape[d] % mesh.shape[DATA] == 0
        ]
        if free:
            spec[max(free, key=lambda d: shape[d])] = DATA
    return P(*spec)


def tree_shardings(tree: Any, mesh: Mesh, fsdp: bool = False) -> Any:
    """NamedShardings for every leaf of `tree` (arrays or ShapeDtypeStructs) by its path."""

    def sharding(path: tuple, leaf: Any) -> NamedSharding:
        name = "/".join(_key_name(k) for k in path)
        return NamedSharding(mesh, leaf_spec(name, tuple(leaf.shape), mesh, fsdp=fsdp))

    return jax.tree_util.tree_map_with_path(sharding, tree)


def _key_name(key: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) dimension over `data`, replicated over `model`."""
    return NamedSharding(mesh, P(DATA))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def global_batch(host_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Per-process batches -> global arrays sharded over `data` (the batch dim concatenates
    across processes in process order)."""
    sharding = batch_sharding(mesh)
    return {
        k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
        for k, v in host_batch.items()
    }


def check_batch_divisible(global_batch_size: int, mesh: Mesh, what: str = "global batch") -> None:
    """Raises ValueError unless the batch splits evenly over the data axis and the processes."""
    data, processes = mesh.shape[DATA], jax.process_count()
    if global_batch_size % data:
        raise ValueError(
            f"{what} {global_batch_size} is not divisible by the mesh's data axis ({data})."
        )
    if global_batch_size % processes:
        raise ValueError(f"{what} {global_batch_size} is not divisible by {processes} processes.")
