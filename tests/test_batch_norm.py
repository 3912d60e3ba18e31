"""The fused-pass BatchNorm equals flax's nn.BatchNorm: values, running statistics, gradients."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rsjax.models.batch_norm import BatchNorm

# fp32: both compute E[x^2] - E[x]^2 from sums over 2 x 6 x 6 = 72 entries in another order.
RTOL, ATOL = 2e-5, 2e-6


def reference_and_fused(train: bool, dtype=jnp.float32):
    kwargs = dict(use_running_average=not train, momentum=0.8, epsilon=1e-5, dtype=dtype)
    return nn.BatchNorm(**kwargs, param_dtype=jnp.float32), BatchNorm(**kwargs)


def random_inputs(shape=(2, 6, 6, 5), offset=3.0):
    x = jax.random.normal(jax.random.key(0), shape) * 2.0 + offset  # a mean far from 0
    scale = jax.random.uniform(jax.random.key(1), shape[-1:], minval=0.5, maxval=1.5)
    bias = jax.random.normal(jax.random.key(2), shape[-1:])
    stats = {"mean": jnp.linspace(-1, 1, shape[-1]), "var": jnp.linspace(0.5, 2, shape[-1])}
    return x, {"params": {"scale": scale, "bias": bias}, "batch_stats": stats}


@pytest.mark.parametrize("train", [True, False])
def test_values_and_running_statistics_match_flax(train):
    x, variables = random_inputs()
    outputs = []
    for module in reference_and_fused(train):
        y, updates = module.apply(variables, x, mutable=["batch_stats"])
        outputs.append((y, updates.get("batch_stats", variables["batch_stats"])))
    (y_ref, stats_ref), (y, stats) = outputs
    np.testing.assert_allclose(y, y_ref, rtol=RTOL, atol=ATOL)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL), stats, stats_ref
    )
    if train:  # the running statistics moved
        assert not np.allclose(stats["mean"], variables["batch_stats"]["mean"])


def test_training_gradients_match_flax():
    x, variables = random_inputs()
    target = jax.random.normal(jax.random.key(3), x.shape)
    grads = []
    for module in reference_and_fused(train=True):

        def loss(params, x, module=module):
            y, _ = module.apply({**variables, "params": params}, x, mutable=["batch_stats"])
            return jnp.sum(jnp.sin(y) * target)  # a non-trivial cotangent

        grads.append(jax.jit(jax.grad(loss, argnums=(0, 1)))(variables["params"], x))
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), grads[1], grads[0]
    )


def test_initialisation_matches_flax_variables():
    x, _ = random_inputs()
    shapes = [
        jax.tree.map(jnp.shape, module.init(jax.random.key(0), x))
        for module in reference_and_fused(train=True)
    ]
    assert shapes[0] == shapes[1]


def test_bfloat16_inputs_give_bfloat16_outputs_and_float32_statistics():
    x, variables = random_inputs()
    ref, fused = reference_and_fused(train=True, dtype=jnp.bfloat16)
    y_ref, _ = ref.apply(variables, x.astype(jnp.bfloat16), mutable=["batch_stats"])
    y, updates = fused.apply(variables, x.astype(jnp.bfloat16), mutable=["batch_stats"])
    assert y.dtype == jnp.bfloat16
    assert all(v.dtype == jnp.float32 for v in jax.tree.leaves(updates))
    np.testing.assert_allclose(
        np.asarray(y, np.float32), np.asarray(y_ref, np.float32), rtol=2e-2, atol=2e-2
    )
    dx = jax.grad(
        lambda x: jnp.sum(fused.apply(variables, x, mutable=["batch_stats"])[0].astype(jnp.float32))
    )(x.astype(jnp.bfloat16))
    assert dx.dtype == jnp.bfloat16
