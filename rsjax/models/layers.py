"""Building blocks of ResNet-RS: convolution, batch norm, squeeze-excitation, stochastic depth.

The convolution lives behind one function (`conv`) so that a block says "3x3, stride 2" and this
module decides how it is computed.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any

# tensorflow/tpu resnet_model.py: `tf.variance_scaling_initializer()`
# (scale 1, fan_in, truncated normal).
CONV_INIT = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal")
# tensorflow/tpu resnet_model.py: classifier kernel ~ N(0, 0.01), zero bias.
DENSE_INIT = nn.initializers.normal(stddev=0.01)
BN_EPSILON = 1e-5


def conv(
    features: int,
    kernel_size: int,
    stride: int = 1,
    *,
    dtype: Dtype = jnp.float32,
    name: str | None = None,
) -> nn.Conv:
    """A bias-free square convolution with explicit symmetric padding (k - 1) // 2.

    Symmetric padding for strided convs matches tensorflow/tpu's `conv2d_fixed_padding` and timm
    (not TF 'SAME', which pads (0, 1) on even inputs). Kernel layout: [k, k, C_in, C_out].
    """
    pad = (kernel_size - 1) // 2
    return nn.Conv(
        features,
        (kernel_size, kernel_size),
        strides=(stride, stride),
        padding=((pad, pad), (pad, pad)),
        use_bias=False,
        kernel_init=CONV_INIT,
        dtype=dtype,
        param_dtype=jnp.float32,
        name=name,
    )


def batch_norm(
    train: bool,
    *,
    momentum: float,
    zero_init: bool = False,
    dtype: Dtype = jnp.float32,
    name: str | None = None,
) -> nn.BatchNorm:
    """BatchNorm over the (global) batch, epsilon 1e-5; `zero_init` starts gamma at 0.

    `momentum` follows the TF/Flax convention:
    running = momentum * running + (1 - momentum) * batch.
    """
    return nn.BatchNorm(
        use_running_average=not train,
        momentum=momentum,
        epsilon=BN_EPSILON,
        scale_init=nn.initializers.zeros if zero_init else nn.initializers.ones,
        dtype=dtype,
        param_dtype=jnp.float32,
        name=name,
    )


class SqueezeExcite(nn.Module):
    """Squeeze-and-Excitation on a [B, H, W, C] feature map.

    Spatial mean -> dense(C -> reduced, bias) -> ReLU -> dense(reduced -> C, bias) -> sigmoid,
    which scales the input per channel.
    The reference computes these as 1x1 convs on the pooled map; a dense layer is the same math.
    """

    reduced_features: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        channels = x.shape[-1]
        squeezed = jnp.mean(x, axis=(1, 2), keepdims=True)
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
