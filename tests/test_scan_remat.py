"""scan_blocks and remat change how the network is traced, never what it computes."""

import functools

import jax
import numpy as np
import pytest

from rsjax.models import ResNetRS, abstract_variables
from rsjax.models.scanned import stack_blocks, unstack_blocks
from tests.conftest import assert_trees_close, random_variables, train_mode_loss_and_grads

# Stage c2 has two repeated blocks (scanned), c3 one (never scanned).
KWARGS = dict(depth=0, stage_sizes=(3, 2), width_multiplier=0.125, num_classes=5, dropout_rate=0.0)


@functools.cache
def plain_results(scan: bool) -> tuple:
    """Loss, grads and BN statistics of the plain model (unrolled or scanned), computed once."""
    variables = random_variables(ResNetRS(**KWARGS))
    if scan:
        variables = stack_blocks(variables)
    return variables, loss_grads_and_stats(ResNetRS(**KWARGS, scan_blocks=scan), variables, IMAGES)


def loss_grads_and_stats(model, variables, images):
    (value, (_, stats)), grads = train_mode_loss_and_grads(model, variables, images)
    return value, grads, stats


IMAGES = np.random.default_rng(0).standard_normal((2, 24, 24, 3)).astype(np.float32)


def test_stacked_layout_matches_the_scanned_model():
    unrolled, scanned = ResNetRS(**KWARGS), ResNetRS(**KWARGS, scan_blocks=True)
    abstract = abstract_variables(scanned)
    assert "c2_blocks" in abstract["params"] and "c2_block1" not in abstract["params"]
    assert "c3_block1" in abstract["params"]  # one repeated block: unrolled
    assert abstract["params"]["c2_blocks"]["conv2"]["kernel"].shape[0] == 2
    converted = jax.eval_shape(stack_blocks, random_variables(unrolled))
    assert jax.tree.structure(converted) == jax.tree.structure(abstract)
    assert jax.tree.map(lambda a: a.shape, converted) == jax.tree.map(lambda a: a.shape, abstract)


def test_stack_unstack_round_trip():
    variables = random_variables(ResNetRS(**KWARGS))
    back = unstack_blocks(stack_blocks(variables))
    assert jax.tree.structure(back) == jax.tree.structure(variables)
    for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(variables), strict=True):
        np.testing.assert_array_equal(a, b)


def test_scanned_equals_unrolled():
    unrolled, scanned = ResNetRS(**KWARGS), ResNetRS(**KWARGS, scan_blocks=True)
    variables = random_variables(unrolled)
    eval_unrolled = jax.jit(functools.partial(unrolled.apply, train=False))(variables, IMAGES)
    eval_scanned = jax.jit(functools.partial(scanned.apply, train=False))(
        stack_blocks(variables), IMAGES
    )
    np.testing.assert_allclose(eval_scanned, eval_unrolled, rtol=1e-5, atol=1e-5)

    _, (loss_u, grads_u, stats_u) = plain_results(scan=False)
    _, (loss_s, grads_s, stats_s) = plain_results(scan=True)
    np.testing.assert_allclose(loss_s, loss_u, rtol=1e-5)
    assert_trees_close(unstack_blocks(grads_s), grads_u, 1e-4)
    assert_trees_close(unstack_blocks(stats_s), stats_u, 1e-5)


def test_scanned_stochastic_depth_draws_per_block():
    """Each scanned block gets its own dropout key: outputs differ from one shared draw."""
    model = ResNetRS(**{**KWARGS, "stochastic_depth_rate": 0.9}, scan_blocks=True)
    variables = stack_blocks(random_variables(ResNetRS(**KWARGS)))
    outs = [
        model.apply(variables, IMAGES, train=True, mutable=["batch_stats"], rngs={"dropout": key})[
            0
        ]
        for key in jax.random.split(jax.random.key(1), 2)
    ]
    assert not np.allclose(outs[0], outs[1])


@pytest.mark.parametrize("policy", ["full", "dots"])
@pytest.mark.parametrize("scan", [False, True])
def test_remat_equals_plain(policy, scan):
    variables, (loss_p, grads_p, _) = plain_results(scan)
    remat = ResNetRS(**KWARGS, scan_blocks=scan, remat=policy)
    loss_r, grads_r, _ = loss_grads_and_stats(remat, variables, IMAGES)
    np.testing.assert_allclose(loss_r, loss_p, rtol=1e-6)
    assert_trees_close(grads_r, grads_p, 1e-4)


def test_unknown_remat_policy_is_rejected():
    with pytest.raises(ValueError, match="remat"):
        ResNetRS(**KWARGS, remat="everything")
