"""Building blocks of ResNet-RS: convolution, batch norm, squeeze-excitation, stochastic depth.

The convolution lives behind one function (`conv`) so that a block says "3x3, stride 2";
`rsjax.models.conv` decides how it is computed.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from rsjax.models import conv as conv_lib
from rsjax.models.batch_norm import BatchNorm

Dtype = Any

# tensorflow/tpu resnet_model.py: `tf.variance_scaling_initializer()`
# (scale 1, fan_in, truncated normal).
CONV_INIT = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal")
# tensorflow/tpu resnet_model.py: classifier kernel ~ N(0, 0.01), zero bias.
DENSE_INIT = nn.initializers.normal(stddev=0.01)
BN_EPSILON = 1e-5


class Conv(nn.Module):
    """A bias-free square convolution with symmetric padding (k - 1) // 2.

    [B, H, W, C_in] -> [B, ceil(H / stride), ceil(W / stride), features]. The parameter is
    "kernel" [k, k, C_in, features], as in `nn.Conv`. Symmetric padding for strided convs matches
    tensorflow/tpu's `conv2d_fixed_padding` and timm (not TF 'SAME', which pads (0, 1) on even
    inputs). `impl` picks the computation (`rsjax.models.conv`); all give the same values.
    """

    features: int
    kernel_size: int
    stride: int = 1
    impl: str = "auto"
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k = self.kernel_size
        kernel = self.param("kernel", CONV_INIT, (k, k, x.shape[-1], self.features), jnp.float32)
        x, kernel = jnp.asarray(x, self.dtype), jnp.asarray(kernel, self.dtype)
        return conv_lib.conv2d(x, kernel, self.stride, self.impl)


def conv(
    features: int,
    kernel_size: int,
    stride: int = 1,
    *,
    impl: str = "auto",
    dtype: Dtype = jnp.float32,
    name: str | None = None,
) -> Conv:
    """`Conv(features, kernel_size, stride)`: how a block says "conv 3x3, stride 2"."""
    return Conv(features, kernel_size, stride, impl=impl, dtype=dtype, name=name)


def batch_norm(
    train: bool,
    *,
    momentum: float,
    zero_init: bool = False,
    group_size: int = 0,
    epsilon: float = BN_EPSILON,
    dtype: Dtype = jnp.float32,
    name: str | None = None,
) -> nn.Module:
    """BatchNorm (epsilon 1e-5 unless given); `zero_init` starts gamma at 0.

    Statistics come from the whole (global) batch, or with `group_size` > 0 from each group of
    that many consecutive examples (like per-replica BN with that per-core batch). `momentum`
    follows the TF/Flax convention: running = momentum * running + (1 - momentum) * batch.
    """
    if group_size > 0:
        return GroupedBatchNorm(
            group_size=group_size,
            use_running_average=not train,
            momentum=momentum,
            zero_init=zero_init,
            epsilon=epsilon,
            dtype=dtype,
            name=name,
        )
    return BatchNorm(
        use_running_average=not train,
        momentum=momentum,
        epsilon=epsilon,
        scale_init=nn.initializers.zeros if zero_init else nn.initializers.ones,
        dtype=dtype,
        name=name,
    )


class GroupedBatchNorm(nn.Module):
    """BatchNorm whose training statistics are computed per group of `group_size` examples.

    x: [B, ..., C] with B a multiple of `group_size`. Variables match `nn.BatchNorm`
    (params scale/bias, batch_stats mean/var); the running statistics move towards the mean of
    the groups' statistics.
    """

    group_size: int
    use_running_average: bool
    momentum: float
    zero_init: bool = False
    epsilon: float = BN_EPSILON
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        features = x.shape[-1]
        scale_init = nn.initializers.zeros if self.zero_init else nn.initializers.ones
        scale = self.param("scale", scale_init, (features,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (features,), jnp.float32)
        ra_mean = self.variable("batch_stats", "mean", jnp.zeros, (features,), jnp.float32)
        ra_var = self.variable("batch_stats", "var", jnp.ones, (features,), jnp.float32)
        if self.use_running_average:
            mean, var = ra_mean.value, ra_var.value
            y = (x.astype(jnp.float32) - mean) * jax.lax.rsqrt(var + self.epsilon)
            return (y * scale + bias).astype(self.dtype)
        batch = x.shape[0]
        if batch % self.group_size:
            raise ValueError(
                f"batch {batch} is not a multiple of the BatchNorm group size {self.group_size}."
            )
        groups = x.astype(jnp.float32).reshape(
            batch // self.group_size, self.group_size, *x.shape[1:]
        )
        axes = tuple(range(1, groups.ndim - 1))
        mean = jnp.mean(groups, axis=axes, keepdims=True)
        var = jnp.mean(jnp.square(groups - mean), axis=axes, keepdims=True)
        y = ((groups - mean) * jax.lax.rsqrt(var + self.epsilon)).reshape(x.shape)
        if not self.is_initializing():
            m = self.momentum
            ra_mean.value = m * ra_mean.value + (1 - m) * jnp.mean(mean, axis=(0, *axes))
            ra_var.value = m * ra_var.value + (1 - m) * jnp.mean(var, axis=(0, *axes))
        return (y * scale + bias).astype(self.dtype)


class SqueezeExcite(nn.Module):
    """Squeeze-and-Excitation on a [B, H, W, C] (or [B, T, H, W, C]) feature map.

    Mean over all but the batch and channel axes -> dense(C -> reduced, bias) -> ReLU ->
    dense(reduced -> C, bias) -> sigmoid, which scales the input per channel.
    The reference computes these as 1x1 convs on the pooled map; a dense layer is the same math.
    """

    reduced_features: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        channels = x.shape[-1]
        squeezed = jnp.mean(x, axis=tuple(range(1, x.ndim - 1)), keepdims=True)
        squeezed = nn.Dense(
            self.reduced_features, kernel_init=CONV_INIT, dtype=self.dtype, name="reduce"
        )(squeezed)
        squeezed = nn.relu(squeezed)
        squeezed = nn.Dense(channels, kernel_init=CONV_INIT, dtype=self.dtype, name="expand")(
            squeezed
        )
        return x * nn.sigmoid(squeezed)


class StochasticDepth(nn.Module):
    """Drops the whole residual branch of a sample with probability `rate` (train only).

    One Bernoulli draw per sample ([B, 1, 1, 1]); kept branches are scaled by 1 / (1 - rate), as in
    tensorflow/tpu's `drop_connect`. Draws from the 'dropout' RNG stream.
    """

    rate: float

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
        if deterministic or self.rate == 0.0:
            return x
        keep_prob = 1.0 - self.rate
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        keep = jax.random.bernoulli(self.make_rng("dropout"), keep_prob, shape)
        return jnp.where(keep, x / keep_prob, jnp.zeros_like(x))


def excite_and_drop(
    y: jax.Array, se_ratio: float | None, drop_rate: float, train: bool, dtype: Dtype
) -> jax.Array:
    """The end of a residual branch: SE with int(C x se_ratio) hidden units (None: none), then
    stochastic depth. Call inside a block's compact `__call__`: the submodules are the block's
    "se" and "stochastic_depth"."""
    if se_ratio is not None:
        y = SqueezeExcite(max(1, int(y.shape[-1] * se_ratio)), dtype=dtype, name="se")(y)
    return StochasticDepth(drop_rate, name="stochastic_depth")(y, deterministic=not train)
