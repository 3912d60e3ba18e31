"""Sharded train steps on 8 simulated CPU devices equal the single-device step; grouped BN."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree
from jax.sharding import PartitionSpec as P

from rsjax.models import ResNetRS
from rsjax.models.layers import GroupedBatchNorm
from rsjax.train import sharding
from rsjax.train.state import averaged_variables
from tests.conftest import TINY_KWARGS, train_program

STEPS = 3
# fp32 tolerances, relative L2 over each part of the state after STEPS steps of the trainer's
# program (Nesterov SGD with masked weight decay, label smoothing, EMA) at LR 0.1, against one
# device. Measured on every mesh of the test (8x1, 4x2, with and without FSDP, and the flat
# layout on 4x2 FSDP), worst case: params 7.7e-8, their EMA 7.0e-8, BN statistics and their EMA
# 6.9e-8, momentum traces 2.2e-6 (the raw gradients of convolutions followed by BatchNorm cancel
# almost exactly, so another summation order shows there first). The bounds leave ~10x margin;
# LEAF_ATOL bounds every entry.
LOSS_RTOL = 1e-6
RTOL = {"params": 1e-6, "ema_params": 1e-6, "batch_stats": 1e-6, "ema_batch_stats": 1e-6}
MOMENTUM_RTOL = 2e-5
LEAF_ATOL = 1e-3


def relative_l2(tree, ref_tree) -> float:
    """||tree - ref_tree|| / ||ref_tree|| over all leaves, in float64."""
    leaves = [np.asarray(x, np.float64) for x in jax.tree.leaves(tree)]
    ref_leaves = [np.asarray(x, np.float64) for x in jax.tree.leaves(ref_tree)]
    diff = np.sqrt(sum(np.sum((a - b) ** 2) for a, b in zip(leaves, ref_leaves, strict=True)))
    return float(diff / np.sqrt(sum(np.sum(b**2) for b in ref_leaves)))


def run(mesh, fsdp=False, group_size=0, layout="tree"):
    """(losses, state) after STEPS steps of the trainer's program at LR 0.1 on `mesh`."""
    model = ResNetRS(
        **TINY_KWARGS, dropout_rate=0.2, stochastic_depth_rate=0.2, bn_group_size=group_size
    )
    program, schedule = train_program(
        model, 16, 0.1, mesh=mesh, fsdp=fsdp, state_layout=layout, ema_decay=0.9
    )
    state = program.init(jax.random.key(0))
    rng = np.random.default_rng(0)
    losses = []
    for _ in range(STEPS):
        host = {
            "images": rng.normal(size=(16, 32, 32, 3)).astype(np.float32),
            "labels": rng.integers(0, 7, 16).astype(np.int32),
        }
        batch = sharding.global_batch(host, mesh)
        for shard in batch["images"].addressable_shards:  # the batch is split over `data`
            assert shard.data.shape == (16 // mesh.shape["data"], 32, 32, 3)
        state, metrics = program.train_step(state, batch, schedule)
        losses.append(float(metrics["loss"]))
    sums = program.eval_step(state, {**batch, "mask": jnp.ones(16).at[-3:].set(0.0)})
    return losses, state, jax.device_get(sums)


@pytest.fixture(scope="module")
def single_device():
    return run(sharding.make_mesh(1, 1))


def as_tree_layout(state):
    """The state on the host, its EMAs and momentum trace as trees (the "flat" layout's vectors
    unraveled).

    The state is fetched first: unraveling a sharded vector eagerly would dispatch one small
    multi-device program per leaf, each with collectives, and a burst of those can exhaust
    XLA:CPU's execution threads (by default one per simulated device, shared by every launch;
    see PJRT_NPROC in conftest.py); CI aborted twice in this test while it still did that.
    """
    state = jax.device_get(state)
    if state.layout == "tree":
        return state
    unravel = ravel_pytree(state.params)[1]
    size = sum(leaf.size for leaf in jax.tree.leaves(state.params))
    averaged = averaged_variables(state)
    return state.replace(
        # The momentum trace is the one parameter-sized vector (the schedule's count is not).
        opt_state=jax.tree.map(
            lambda x: unravel(x) if x.ndim == 1 and x.size == size else x, state.opt_state
        ),
        ema_params=averaged["params"],
        ema_batch_stats=averaged["batch_stats"],
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "data, model, fsdp, layout",
    [
        (8, 1, False, "tree"),
        (4, 2, False, "tree"),
        (8, 1, True, "tree"),
        (4, 2, True, "tree"),
        (4, 2, True, "flat"),  # what the trainer runs on CPU; compared with the tree reference
    ],
)
def test_sharded_steps_match_one_device(single_device, data, model, fsdp, layout):
    assert jax.device_count() == 8
    mesh = sharding.make_mesh(data, model)
    losses, device_state, sums = run(mesh, fsdp=fsdp, layout=layout)
    state = as_tree_layout(device_state)
    ref_losses, ref_state, ref_sums = single_device
    np.testing.assert_allclose(losses, ref_losses, rtol=LOSS_RTOL)
    # The trainer's eval step on the mesh: the same counts and loss sums as on one device.
    assert sums["count"] == ref_sums["count"] == 13
    for key in ("top1", "top5", "ema_top1", "ema_top5"):
        assert sums[key] == ref_sums[key], key
    for key in ("loss", "ema_loss"):
        np.testing.assert_allclose(sums[key], ref_sums[key], rtol=1e-5)
    errors = {part: relative_l2(getattr(state, part), getattr(ref_state, part)) for part in RTOL}
    errors["opt_state"] = relative_l2(state.opt_state, ref_state.opt_state)
    print(f"mesh {data}x{model} fsdp={fsdp} {layout}: relative L2 {errors}")
    for part, rtol in RTOL.items():
        assert errors[part] < rtol, (part, errors[part])
    assert errors["opt_state"] < MOMENTUM_RTOL
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(ref_state), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=LEAF_ATOL)
    kernel = device_state.params["c5_block0"]["conv3"]["kernel"]  # [1, 1, 8, 32]
    if model > 1:
        assert kernel.sharding.spec[-1] == "model"
    if fsdp:
        assert "data" in tuple(kernel.sharding.spec)


def test_partition_rules():
    mesh = sharding.make_mesh(4, 2)
    assert sharding.leaf_spec("params/c2_block0/conv2/kernel", (3, 3, 8, 8), mesh) == P(
        None, None, None, "model"
    )
    assert sharding.leaf_spec("params/classifier/kernel", (64, 7), mesh) == P(None, None)  # 7 % 2
    assert sharding.leaf_spec("params/stem/bn1/scale", (4,), mesh) == P(None)
    fsdp = sharding.leaf_spec("params/c5_block0/conv3/kernel", (1, 1, 512, 2048), mesh, fsdp=True)
    assert fsdp == P(None, None, "data", "model")


def test_batch_not_divisible_by_data_axis():
    with pytest.raises(ValueError, match="not divisible by the mesh's data axis"):
        sharding.check_batch_divisible(12, sharding.make_mesh(8, 1))


def test_bad_mesh():
    with pytest.raises(ValueError, match="needs 16 devices"):
        sharding.make_mesh(8, 2)
    with pytest.raises(ValueError, match="positive"):
        sharding.make_mesh(0, 1)


def test_grouped_batch_norm_equals_per_group_batch_norm():
    x = jax.random.normal(jax.random.key(0), (8, 4, 4, 3)) * 2 + 1
    bn = nn.BatchNorm(use_running_average=False, momentum=0.9, epsilon=1e-5)
    grouped = GroupedBatchNorm(group_size=4, use_running_average=False, momentum=0.9)
    variables = bn.init(jax.random.key(1), x)
    y_grouped, state = grouped.apply(variables, x, mutable=["batch_stats"])
    halves = [bn.apply(variables, x[i : i + 4], mutable=["batch_stats"]) for i in (0, 4)]
    np.testing.assert_allclose(y_grouped, jnp.concatenate([h[0] for h in halves]), atol=1e-5)
    mean = np.mean([h[1]["batch_stats"]["mean"] for h in halves], axis=0)
    np.testing.assert_allclose(state["batch_stats"]["mean"], mean, atol=1e-6)
    whole = GroupedBatchNorm(group_size=8, use_running_average=False, momentum=0.9)
    np.testing.assert_allclose(
        whole.apply(variables, x, mutable=["batch_stats"])[0],
        bn.apply(variables, x, mutable=["batch_stats"])[0],
        atol=1e-5,
    )
    with pytest.raises(ValueError, match="not a multiple of the BatchNorm group size"):
        GroupedBatchNorm(group_size=3, use_running_average=False, momentum=0.9).apply(
            variables, x, mutable=["batch_stats"]
        )


@pytest.mark.slow
def test_grouped_bn_model_trains_sharded(single_device):
    """BatchNorm over groups of 8 of the 16 examples: on 8 devices (a group spans 4 of them) the
    same losses as on one device, and not those of global statistics."""
    losses, _, _ = run(sharding.make_mesh(8, 1), group_size=8)
    one_device, _, _ = run(sharding.make_mesh(1, 1), group_size=8)
    np.testing.assert_allclose(losses, one_device, rtol=LOSS_RTOL)
    assert not np.allclose(losses, single_device[0], rtol=1e-4)  # per-group != global statistics


@pytest.mark.parametrize("data, model", [(8, 1), (4, 2), (2, 4)])
def test_global_batch_is_split_over_the_data_axis(data, model):
    """Every device holds 1/data of the batch (replicated over `model`): data parallelism."""
    mesh = sharding.make_mesh(data, model)
    host = {"images": np.zeros((16, 4, 4, 3), np.float32), "labels": np.arange(16, dtype=np.int32)}
    batch = sharding.global_batch(host, mesh)
    for shard in batch["images"].addressable_shards:
        assert shard.data.shape == (16 // data, 4, 4, 3)
    rows = {tuple(np.asarray(s.data).tolist()) for s in batch["labels"].addressable_shards}
    assert len(rows) == data  # `data` distinct slices, each on `model` devices
    assert sorted(x for row in rows for x in row) == list(range(16))
