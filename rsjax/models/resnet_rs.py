"""ResNet-RS (Bello et al., 2021) as pure-functional Flax linen modules.

The architecture is the one of the released checkpoints (tensorflow/tpu `resnet_model.py`,
ported by timm as `resnetrs*`): a ResNet-D deep stem (3x3 convs 32(s2)-32-64, then a stride-2 3x3
conv in place of the max-pool), bottleneck blocks with the stride on the 3x3 conv, ResNet-D
average-pool shortcuts, Squeeze-and-Excitation on the block output, stochastic depth per stage, and
dropout before the classifier. README "Model choices" lists every place where sources disagree.

Images are expected already normalised (for ImageNet: mean/std per channel), as `[B, H, W, C]` with
any number of channels C.
"""

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from rsjax.models import layers
from rsjax.models.conv import CONV_IMPLS
from rsjax.models.layouts import resolve_stage_sizes

Dtype = Any

STEM_DOWNSAMPLE_MODES = ("conv", "none")
BASE_STAGE_FILTERS = 64  # bottleneck width of stage c2; doubled per stage, x4 at the block output.
STEM_FILTERS = (32, 32, 64)


def scale_filters(filters: int, width_multiplier: float) -> int:
    """Channels of a layer after width scaling (rounded to the nearest integer, at least 1)."""
    return max(1, round(filters * width_multiplier))


def stage_drop_rates(stochastic_depth_rate: float, num_stages: int) -> tuple[float, ...]:
    """Stochastic-depth rate of each stage: `rate * (i + 2) / (num_stages + 1)` for stage i.

    This is tensorflow/tpu's per-group rule: with 4 stages and rate 0.1 it gives
    0.04 / 0.06 / 0.08 / 0.10; every block of a stage shares its stage's rate.
    """
    return tuple(stochastic_depth_rate * (i + 2) / (num_stages + 1) for i in range(num_stages))


class Stem(nn.Module):
    """ResNet-D deep stem: three 3x3 convs (32s2-32-64, scaled), each with BN + ReLU.

    `downsample="conv"` adds the released models' stride-2 3x3 conv + BN + ReLU where ResNet had a
    max-pool (output stride 4); `"none"` omits it (output stride 2, the paper text's variant).
    `stride` is the first conv's stride: 2 in every released model, 1 for small images
    (CIFAR-style, e.g. 28 px Fashion-MNIST), which halves the output stride.
    """

    width_multiplier: float
    downsample: str
    bn_momentum: float
    stride: int = 2
    bn_group_size: int = 0
    conv_impl: str = "auto"
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        widths = [scale_filters(f, self.width_multiplier) for f in STEM_FILTERS]
        strides = [self.stride, 1, 1]
        if self.downsample == "conv":
            widths.append(widths[-1])
            strides.append(2)
        for i, (width, stride) in enumerate(zip(widths, strides, strict=True), start=1):
            x = layers.conv(
                width, 3, stride, impl=self.conv_impl, dtype=self.dtype, name=f"conv{i}"
            )(x)
            x = layers.batch_norm(
                train,
                momentum=self.bn_momentum,
                group_size=self.bn_group_size,
                dtype=self.dtype,
                name=f"bn{i}",
            )(x)
            x = nn.relu(x)
        return x


class VanillaStem(Stem):
    """The original ResNet stem (He et al., 2016): a 7x7 conv (64, scaled; stride `stride`) +
    BN + ReLU, then, with `downsample="conv"`, a 3x3 stride-2 max-pool (padding 1, as timm and
    torchvision) for the same output stride as ResNet-D's stem. Fields as `Stem`'s."""

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        width = scale_filters(BASE_STAGE_FILTERS, self.width_multiplier)
        x = layers.conv(width, 7, self.stride, impl=self.conv_impl, dtype=self.dtype, name="conv1")(
            x
        )
        x = layers.batch_norm(
            train, momentum=self.bn_momentum, group_size=self.bn_group_size, dtype=self.dtype,
            name="bn1",
        )(x)  # fmt: skip
        x = nn.relu(x)
        if self.downsample == "conv":
            x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        return x


class BottleneckBlock(nn.Module):
    """Bottleneck residual block: [B, H, W, C_in] -> [B, H/s, W/s, 4 * filters].

    Branch: 1x1(f) BN ReLU -> 3x3(f, stride) BN ReLU -> 1x1(4f) BN(gamma=0) -> SE -> stochastic
    depth.
    Shortcut: identity, or (projection) [2x2 avg-pool if stride 2] -> 1x1(4f) -> BN (ResNet-D);
    with `resnet_d=False`, the original 1x1(4f, stride) -> BN.
    Output: ReLU(branch + shortcut).
    """

    filters: int
    stride: int
    projection: bool
    se_ratio: float | None
    drop_rate: float
    bn_momentum: float
    resnet_d: bool = True
    bn_group_size: int = 0
    conv_impl: str = "auto"
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        out_features = 4 * self.filters

        def conv(features: int, kernel_size: int, name: str, stride: int = 1) -> layers.Conv:
            return layers.conv(
                features, kernel_size, stride, impl=self.conv_impl, dtype=self.dtype, name=name
            )

        def bn(name: str, zero_init: bool = False) -> nn.BatchNorm:
            return layers.batch_norm(
                train,
                momentum=self.bn_momentum,
                zero_init=zero_init,
                group_size=self.bn_group_size,
                dtype=self.dtype,
                name=name,
            )

        shortcut = x
        if self.projection:
            conv_stride = self.stride
            if self.resnet_d and self.stride > 1:  # ResNet-D: pool, then a stride-1 conv
                shortcut = nn.avg_pool(
                    shortcut,
                    (self.stride, self.stride),
                    strides=(self.stride, self.stride),
                    padding="SAME",
                    count_include_pad=False,
                )
                conv_stride = 1
            shortcut = conv(out_features, 1, "shortcut_conv", conv_stride)(shortcut)
            shortcut = bn("shortcut_bn")(shortcut)

        y = conv(self.filters, 1, "conv1")(x)
        y = nn.relu(bn("bn1")(y))
        y = conv(self.filters, 3, "conv2", self.stride)(y)
        y = nn.relu(bn("bn2")(y))
        y = conv(out_features, 1, "conv3")(y)
        y = bn("bn3", zero_init=True)(y)
        y = layers.excite_and_drop(y, self.se_ratio, self.drop_rate, train, self.dtype)
        return nn.relu(y + shortcut)


# remat policy name -> what a checkpointed block saves for the backward pass (None: no remat).
REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def remat_block(policy: str) -> type[BottleneckBlock]:
    """BottleneckBlock, or its `nn.remat` version with `policy` (see REMAT_POLICIES)."""
    if REMAT_POLICIES[policy] is None:
        return BottleneckBlock
    # static_argnums counts self: `train` (argument 2) selects the BN mode at trace time.
    return nn.remat(BottleneckBlock, policy=REMAT_POLICIES[policy], static_argnums=(2,))


class ResNetRS(nn.Module):
    """ResNet-RS image classifier.

    Attributes:
      depth: a key of `BLOCK_LAYOUTS` (26, 50, 101, 152, 200, 270, 300, 350, 400, 420); ignored
        for the layout when `stage_sizes` is given.
      width_multiplier: scales the channels of every conv, stem included (> 0).
      num_classes: classifier outputs.
      se_ratio: SE bottleneck = se_ratio x block output channels (0 < ratio <= 1); None disables SE.
      dropout_rate: dropout on the pooled features before the classifier, in [0, 1).
      stochastic_depth_rate: base drop rate in [0, 1); stage i uses rate * (i + 2) / (stages + 1).
      stage_sizes: blocks per stage, overriding the depth's layout (any number of stages).
      stem_downsample: "conv" (released checkpoints) or "none" (paper text: c2's first block
        downsamples instead).
      stem_stride: stride of the stem's first conv: 2 (every released model) or 1 (small images
        such as 28 px Fashion-MNIST; halves the output stride, 4x the activations).
      resnet_d: ResNet-D's deep 3x3 stem and average-pool shortcuts (True, ResNet-RS); False
        gives the original ResNet's 7x7 stem with max-pool and strided 1x1 shortcuts. With
        `se_ratio=None` that is the vanilla ResNet of the paper's Table 5 (the stride stays on
        the 3x3 conv, as in timm's and torchvision's ResNets).
      bn_momentum: BatchNorm running-average momentum (running = m * running + (1 - m) * batch).
      bn_group_size: 0 for training statistics over the global batch; N > 0 for statistics per
        group of N consecutive examples (the batch must be a multiple of N).
      conv_impl: how convolutions are computed: "auto" (matmul form on CPU, XLA's convolution
        elsewhere), "xla" or "matmul" (`rsjax.models.conv`); the values do not depend on it.
      scan_blocks: run blocks 1..n-1 of each stage (identical shapes) with `nn.scan`: one traced
        body per stage, so deep nets compile fast. Their variables are stacked under
        "c{stage}_blocks" (`rsjax.models.scanned` converts to and from the unrolled layout).
      remat: rematerialise each block in the backward pass (`jax.checkpoint`): "none", "full"
        (keep only block inputs) or "dots" (also keep matmul outputs). Same values, less memory.
      dtype: computation dtype (parameters stay float32; logits are returned as float32).

    Call: `model.apply(variables, images, train=False)` with images `[B, H, W, C]` returns logits
    `[B, num_classes]`. Variables are {"params", "batch_stats"}; in train mode pass
    `mutable=["batch_stats"]` and, when dropout or stochastic depth is on, `rngs={"dropout": key}`.
    """

    depth: int = 50
    width_multiplier: float = 1.0
    num_classes: int = 1000
    se_ratio: float | None = 0.25
    dropout_rate: float = 0.25
    stochastic_depth_rate: float = 0.0
    stage_sizes: Sequence[int] | None = None
    stem_downsample: str = "conv"
    stem_stride: int = 2
    resnet_d: bool = True
    bn_momentum: float = 0.9
    bn_group_size: int = 0
    conv_impl: str = "auto"
    scan_blocks: bool = False
    remat: str = "none"
    dtype: Dtype = jnp.float32

    def __post_init__(self) -> None:
        self._validate()
        super().__post_init__()

    def _validate(self) -> None:
        resolve_stage_sizes(self.depth, self.stage_sizes)
        if not self.width_multiplier > 0:
            raise ValueError(f"width_multiplier must be > 0, got {self.width_multiplier!r}.")
        if self.se_ratio is not None and not 0 < self.se_ratio <= 1:
            raise ValueError(f"se_ratio must be in (0, 1] or None, got {self.se_ratio!r}.")
        for field in ("dropout_rate", "stochastic_depth_rate"):
            value = getattr(self, field)
            if not 0 <= value < 1:
                raise ValueError(f"{field} must be in [0, 1), got {value!r}.")
        if not 0 <= self.bn_momentum <= 1:
            raise ValueError(f"bn_momentum must be in [0, 1], got {self.bn_momentum!r}.")
        if not (isinstance(self.bn_group_size, int) and self.bn_group_size >= 0):
            raise ValueError(f"bn_group_size must be an int >= 0, got {self.bn_group_size!r}.")
        if not (isinstance(self.num_classes, int) and self.num_classes >= 1):
            raise ValueError(f"num_classes must be a positive int, got {self.num_classes!r}.")
        if self.stem_downsample not in STEM_DOWNSAMPLE_MODES:
            raise ValueError(
                f"stem_downsample must be one of {STEM_DOWNSAMPLE_MODES}, "
                f"got {self.stem_downsample!r}."
            )
        if self.conv_impl not in CONV_IMPLS:
            raise ValueError(f"conv_impl must be one of {CONV_IMPLS}, got {self.conv_impl!r}.")
        if self.remat not in REMAT_POLICIES:
            raise ValueError(f"remat must be one of {tuple(REMAT_POLICIES)}, got {self.remat!r}.")
        if self.stem_stride not in (1, 2):
            raise ValueError(f"stem_stride must be 1 or 2, got {self.stem_stride!r}.")

    @property
    def blocks_per_stage(self) -> tuple[int, ...]:
        return resolve_stage_sizes(self.depth, self.stage_sizes)

    def stage_strides(self) -> tuple[int, ...]:
        """Stride of each stage's first block (c2 strides only when the stem does not)."""
        first = 1 if self.stem_downsample == "conv" else 2
        return (first,) + (2,) * (len(self.blocks_per_stage) - 1)

    def num_downsamplings(self) -> int:
        """Number of stride-2 layers between the image and the last stage (5 for ResNet-RS)."""
        stem = (self.stem_stride == 2) + (self.stem_downsample == "conv")
        return stem + sum(stride == 2 for stride in self.stage_strides())

    def min_image_size(self) -> int:
        """Smallest H (and W) for which every stride-2 layer still sees at least 2 pixels."""
        return 2 ** (self.num_downsamplings() - 1) + 1

    def check_images(self, images: jax.Array) -> None:
        """Raises ValueError for images that are not [B, H, W, C] or are too small."""
        if images.ndim != 4:
            raise ValueError(
                f"images must have rank 4 [B, H, W, C], got shape {tuple(images.shape)}."
            )
        height, width = images.shape[1:3]
        min_size = self.min_image_size()
        if min(height, width) < min_size:
            raise ValueError(
                f"images of {height}x{width} are too small for this network: its "
                f"{self.num_downsamplings()} stride-2 layers need at least "
                f"{min_size}x{min_size} pixels."
            )

    @nn.compact
    def __call__(self, images: jax.Array, train: bool) -> jax.Array:
        """Maps images [B, H, W, C] to float32 logits [B, num_classes]."""
        self.check_images(images)
        x = jnp.asarray(images, self.dtype)
        x = (Stem if self.resnet_d else VanillaStem)(
            self.width_multiplier,
            self.stem_downsample,
            self.bn_momentum,
            stride=self.stem_stride,
            bn_group_size=self.bn_group_size,
            conv_impl=self.conv_impl,
            dtype=self.dtype,
            name="stem",
        )(x, train)
        sizes = self.blocks_per_stage
        drop_rates = stage_drop_rates(self.stochastic_depth_rate, len(sizes))
        block_cls = remat_block(self.remat)
        for stage, (num_blocks, stride, drop_rate) in enumerate(
            zip(sizes, self.stage_strides(), drop_rates, strict=True)
        ):
            block = functools.partial(
                block_cls,
                filters=scale_filters(BASE_STAGE_FILTERS * 2**stage, self.width_multiplier),
                se_ratio=self.se_ratio,
                drop_rate=drop_rate,
                bn_momentum=self.bn_momentum,
                resnet_d=self.resnet_d,
                bn_group_size=self.bn_group_size,
                conv_impl=self.conv_impl,
                dtype=self.dtype,
            )
            x = block(stride=stride, projection=True, name=f"c{stage + 2}_block0")(x, train)
            repeats = num_blocks - 1
            if self.scan_blocks and repeats > 1:
                # The identical blocks 1..n-1 as one scanned body: params and batch_stats
                # stacked on a leading axis, a fresh dropout key per block.
                repeated = block(stride=1, projection=False, name=f"c{stage + 2}_blocks")
                x, _ = nn.scan(
                    lambda module, carry, _: (module(carry, train), None),
                    variable_axes={"params": 0, "batch_stats": 0},
                    split_rngs={"params": True, "dropout": True},
                    length=repeats,
                )(repeated, x, None)
            else:
                for index in range(1, num_blocks):
                    name = f"c{stage + 2}_block{index}"
                    x = block(stride=1, projection=False, name=name)(x, train)
        x = jnp.mean(x, axis=(1, 2))
        x = nn.Dropout(self.dropout_rate, name="head_dropout")(x, deterministic=not train)
        logits = nn.Dense(
            self.num_classes,
            kernel_init=layers.DENSE_INIT,
            dtype=self.dtype,
            param_dtype=jnp.float32,
            name="classifier",
        )(x)
        return jnp.asarray(logits, jnp.float32)


def abstract_variables(model: nn.Module, channels: int = 3) -> Any:
    """Shapes and dtypes of `model`'s variables as ShapeDtypeStructs (nothing is allocated).

    ResNet-RS variables do not depend on the image size, so the smallest valid one is traced
    (and for a video model, whose `input_rank` is 5, a one-frame clip: nor on the clip length).
    """
    size = model.min_image_size() if hasattr(model, "min_image_size") else 32
    frames = (1,) * (getattr(model, "input_rank", 4) - 4)
    images = jax.ShapeDtypeStruct((1, *frames, size, size, channels), jnp.float32)
    return jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), images)
