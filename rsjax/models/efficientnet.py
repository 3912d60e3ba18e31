"""EfficientNet B0-B7 (Tan & Le, 2019) as Flax linen modules: the paper's comparison family.

Faithful to tensorflow/tpu `efficientnet_builder.py` / `efficientnet_model.py` (the code behind
the checkpoints timm ports as `tf_efficientnet_b*`): the seven MBConv block strings of B0, scaled
by (width, depth) per model with `round_filters` (multiples of 8, never more than 10% down) and
`round_repeats` (ceil); depthwise convolutions; Squeeze-and-Excitation reducing from the block's
*input* channels at 0.25, with biases and swish; swish everywhere; BatchNorm momentum 0.99 and
epsilon 1e-3; TF 'SAME' padding (asymmetric, (0, 1) for a 3x3 stride-2 conv on an even size,
unlike ResNet-RS's symmetric padding); drop connect growing linearly with the block index, only on
identity skips; dropout before the classifier. Initialisers as TF's: convolutions N(0, 2 / fan_out)
with fan_out = k * k * C_out (k * k for depthwise kernels), the classifier U(+-1 / sqrt(C_out)).

Images are expected normalised, `[B, H, W, C]`; logits are float32 `[B, num_classes]`.
"""

import dataclasses
import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from rsjax.models import conv as conv_lib
from rsjax.models.batch_norm import BatchNorm
from rsjax.models.layers import StochasticDepth

Dtype = Any

BN_MOMENTUM = 0.99
BN_EPSILON = 1e-3
DEPTH_DIVISOR = 8
STEM_FILTERS = 32
HEAD_FILTERS = 1280


@dataclasses.dataclass(frozen=True)
class BlockArgs:
    """One stage of B0 (tensorflow/tpu's block string "r1_k3_s11_e1_i32_o16_se0.25")."""

    repeats: int
    kernel_size: int
    stride: int
    expand_ratio: int
    input_filters: int
    output_filters: int
    se_ratio: float = 0.25


# efficientnet_builder.py `efficientnet()`: the B0 stages before any scaling.
B0_BLOCKS = (
    BlockArgs(1, 3, 1, 1, 32, 16),
    BlockArgs(2, 3, 2, 6, 16, 24),
    BlockArgs(2, 5, 2, 6, 24, 40),
    BlockArgs(3, 3, 2, 6, 40, 80),
    BlockArgs(3, 5, 1, 6, 80, 112),
    BlockArgs(4, 5, 2, 6, 112, 192),
    BlockArgs(1, 3, 1, 6, 192, 320),
)

# efficientnet_params: name -> (width, depth, resolution, dropout).
SCALING = {
    "b0": (1.0, 1.0, 224, 0.2),
    "b1": (1.0, 1.1, 240, 0.2),
    "b2": (1.1, 1.2, 260, 0.3),
    "b3": (1.2, 1.4, 300, 0.3),
    "b4": (1.4, 1.8, 380, 0.4),
    "b5": (1.6, 2.2, 456, 0.4),
    "b6": (1.8, 2.6, 528, 0.5),
    "b7": (2.0, 3.1, 600, 0.5),
}


def round_filters(filters: int, width: float, divisor: int = DEPTH_DIVISOR) -> int:
    """Channels after width scaling: the nearest multiple of `divisor` (at least `divisor`),
    one more step up when rounding would lose more than 10%."""
    scaled = filters * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return rounded


def round_repeats(repeats: int, depth: float) -> int:
    """Blocks of a stage after depth scaling (ceil)."""
    return math.ceil(depth * repeats)


def _conv_init(depthwise: bool = False):
    """TF's conv_kernel_initializer: N(0, 2 / fan_out), fan_out = k*k*C_out (k*k depthwise)."""

    def init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
        k_h, k_w, _, out = shape
        fan_out = k_h * k_w * (1 if depthwise else out)
        return jax.random.normal(key, shape, dtype) * jnp.sqrt(2.0 / fan_out).astype(dtype)

    return init


def _dense_init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
    """TF's dense_kernel_initializer: U(-1 / sqrt(C_out), +1 / sqrt(C_out))."""
    limit = 1.0 / math.sqrt(shape[1])
    return jax.random.uniform(key, shape, dtype, -limit, limit)


def conv_padding(kernel: int, stride: int) -> str:
    """Every convolution's padding (`rsjax.models.conv.PADDINGS`): TF 'SAME' (total k - 1 at
    stride 1; at stride 2 on an even size one row less, taken from the start: (0, 1) for k = 3,
    (1, 2) for k = 5)."""
    del kernel, stride
    return "same"


class Conv(nn.Module):
    """A bias-free k x k convolution ('SAME' padding, TF's initialiser), regular or depthwise.

    [B, H, W, C_in] -> [B, ceil(H / stride), ceil(W / stride), features]; the parameter is
    "kernel" [k, k, C_in, features], or [k, k, 1, C_in] when `depthwise` (features == C_in), as
    in `nn.Conv`. `impl` picks the computation (`rsjax.models.conv`); all give the same values.
    """

    features: int
    kernel_size: int
    stride: int = 1
    depthwise: bool = False
    impl: str = "auto"
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k = self.kernel_size
        shape = (k, k, 1 if self.depthwise else x.shape[-1], self.features)
        kernel = self.param("kernel", _conv_init(self.depthwise), shape, jnp.float32)
        x, kernel = jnp.asarray(x, self.dtype), jnp.asarray(kernel, self.dtype)
        padding = conv_padding(k, self.stride)
        if self.depthwise:
            return conv_lib.depthwise_conv2d(x, kernel, self.stride, self.impl, padding)
        return conv_lib.conv2d(x, kernel, self.stride, self.impl, padding)


def _bn(train: bool, name: str, momentum: float = BN_MOMENTUM) -> BatchNorm:
    return BatchNorm(
        use_running_average=not train, momentum=momentum, epsilon=BN_EPSILON, name=name
    )


class MBConv(nn.Module):
    """Mobile inverted bottleneck: [expand 1x1 -> BN -> swish] -> depthwise kxk -> BN -> swish
    -> SE -> project 1x1 -> BN, plus the input when stride 1 and C_in == C_out (drop connect).

    [B, H, W, C_in] -> [B, ceil(H / stride), ceil(W / stride), output_filters].
    """

    input_filters: int
    output_filters: int
    kernel_size: int
    stride: int
    expand_ratio: int
    se_ratio: float
    drop_rate: float
    bn_momentum: float = BN_MOMENTUM
    conv_impl: str = "auto"
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        inputs = x
        bn = functools.partial(_bn, train, momentum=self.bn_momentum)
        conv = functools.partial(Conv, impl=self.conv_impl, dtype=self.dtype)
        kw = dict(dtype=self.dtype, param_dtype=jnp.float32)
        expanded = self.input_filters * self.expand_ratio
        if self.expand_ratio != 1:
            x = conv(expanded, 1, name="expand_conv")(x)
            x = nn.swish(bn("expand_bn")(x))
        x = conv(expanded, self.kernel_size, self.stride, depthwise=True, name="depthwise_conv")(x)
        x = nn.swish(bn("depthwise_bn")(x))
        if 0 < self.se_ratio <= 1:
            reduced = max(1, int(self.input_filters * self.se_ratio))
            squeezed = jnp.mean(x, axis=(1, 2), keepdims=True)
            squeezed = nn.Conv(reduced, (1, 1), kernel_init=_conv_init(), name="se_reduce", **kw)(
                squeezed
            )
            squeezed = nn.Conv(expanded, (1, 1), kernel_init=_conv_init(), name="se_expand", **kw)(
                nn.swish(squeezed)
            )
            x = x * nn.sigmoid(squeezed)
        x = conv(self.output_filters, 1, name="project_conv")(x)
        x = bn("project_bn")(x)
        if self.stride == 1 and self.input_filters == self.output_filters:
            x = StochasticDepth(self.drop_rate)(x, deterministic=not train) + inputs
        return x


class EfficientNet(nn.Module):
    """EfficientNet scaled by (width, depth) from B0; `efficientnet_b0` ... `b7` in the registry.

    Attributes:
      width: channel multiplier (B0 1.0 ... B7 2.0).
      depth: block-count multiplier (B0 1.0 ... B7 3.1).
      dropout_rate: before the classifier (B0 0.2 ... B7 0.5).
      drop_connect_rate: of the last block; block i of N drops with rate * i / N.
      num_classes: classifier outputs.
      se_ratio: SE bottleneck as a fraction of each block's input channels (0: no SE).
      stem_stride: of the stem conv (2; 1 keeps twice the resolution for small images).
      bn_momentum: of the BatchNorm running statistics (TF's 0.99).
      blocks: the unscaled stages (B0's by default; small ones for tests).
      stem_filters, head_filters: unscaled channels of the stem and the 1x1 head conv.
      conv_impl: how convolutions are computed (`rsjax.models.conv`; "auto": the matmul and
        shifted-slice forms on CPU, XLA convolutions elsewhere).
      dtype: computation dtype; parameters and BN statistics stay float32.
    """

    width: float = 1.0
    depth: float = 1.0
    dropout_rate: float = 0.2
    drop_connect_rate: float = 0.2
    num_classes: int = 1000
    se_ratio: float = 0.25
    stem_stride: int = 2
    bn_momentum: float = BN_MOMENTUM
    blocks: tuple[BlockArgs, ...] = B0_BLOCKS
    stem_filters: int = STEM_FILTERS
    head_filters: int = HEAD_FILTERS
    conv_impl: str = "auto"
    dtype: Dtype = jnp.float32

    def stages(self) -> list[BlockArgs]:
        """The scaled stages: filters rounded by width, repeats by depth."""
        return [
            dataclasses.replace(
                b,
                input_filters=round_filters(b.input_filters, self.width),
                output_filters=round_filters(b.output_filters, self.width),
                repeats=round_repeats(b.repeats, self.depth),
                se_ratio=self.se_ratio,
            )
            for b in self.blocks
        ]

    def block_drop_rates(self) -> list[float]:
        """Drop-connect rate of every block in order: rate * i / N for block i of N."""
        total = sum(stage.repeats for stage in self.stages())
        return [self.drop_connect_rate * i / total for i in range(total)]

    @nn.compact
    def __call__(self, images: jax.Array, train: bool) -> jax.Array:
        """Maps images [B, H, W, C] to float32 logits [B, num_classes]."""
        kw = dict(dtype=self.dtype, param_dtype=jnp.float32)
        x = jnp.asarray(images, self.dtype)
        bn = functools.partial(_bn, train, momentum=self.bn_momentum)
        conv = functools.partial(Conv, impl=self.conv_impl, dtype=self.dtype)
        stem = round_filters(self.stem_filters, self.width)
        x = conv(stem, 3, self.stem_stride, name="stem_conv")(x)
        x = nn.swish(bn("stem_bn")(x))
        drop_rates = iter(self.block_drop_rates())
        for stage_index, stage in enumerate(self.stages()):
            for repeat in range(stage.repeats):
                x = MBConv(
                    input_filters=stage.input_filters if repeat == 0 else stage.output_filters,
                    output_filters=stage.output_filters,
                    kernel_size=stage.kernel_size,
                    stride=stage.stride if repeat == 0 else 1,
                    expand_ratio=stage.expand_ratio,
                    se_ratio=stage.se_ratio,
                    drop_rate=next(drop_rates),
                    bn_momentum=self.bn_momentum,
                    conv_impl=self.conv_impl,
                    dtype=self.dtype,
                    name=f"stage{stage_index}_block{repeat}",
                )(x, train)
        x = conv(round_filters(self.head_filters, self.width), 1, name="head_conv")(x)
        x = nn.swish(bn("head_bn")(x))
        x = jnp.mean(x, axis=(1, 2))
        x = nn.Dropout(self.dropout_rate, name="head_dropout")(x, deterministic=not train)
        logits = nn.Dense(self.num_classes, kernel_init=_dense_init, name="classifier", **kw)(x)
        return jnp.asarray(logits, jnp.float32)

    @property
    def blocks_per_stage(self) -> tuple[int, ...]:
        return tuple(stage.repeats for stage in self.stages())

    def num_downsamplings(self) -> int:
        """Stride-2 layers: the stem (unless `stem_stride` 1) and the first block of each
        stride-2 stage."""
        return (self.stem_stride == 2) + sum(stage.stride == 2 for stage in self.blocks)

    def min_image_size(self) -> int:
        """The smallest input size (px) whose last stride-2 layer still sees two rows of real
        input ('SAME' padding rounds every size up, so smaller ones would run on padding)."""
        return 2 ** (self.num_downsamplings() - 1) + 1
