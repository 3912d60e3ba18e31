"""3D ResNet and 3D ResNet-RS for video clips (the paper's Section 7.5 and Appendix G).

The network follows TF Model Garden's `ResNet3D` (`official/vision/modeling/backbones/
resnet_3d.py` and `layers/nn_blocks_3d.py`, tf-models-official 2.20), which the paper's video
experiments use:

- stem "vanilla" (Model Garden's v0): conv [kt, 7, 7] 64, stride [st, 2, 2]; stem "resnet_d"
  (v1, Appendix G): convs [kt, 3, 3] 32 (stride [st, 2, 2]), [1, 3, 3] 32, [1, 3, 3] 64. Each
  with BN + ReLU; then a max-pool [3 or 1, 3, 3] with stride [pool_st, 2, 2]. The paper's "temporal
  kernel sizes of [5, 1, 1] for the three layers" is kt = 5 here.
- bottleneck blocks: conv [k_t, 1, 1] (temporal stride) -> conv [1, 3, 3] (spatial stride) ->
  conv [1, 1, 1] 4f, each with BN (ReLU after the first two); then self-gating (last block of a
  stage, where enabled), squeeze-excitation, stochastic depth; ReLU(branch + shortcut). The
  shortcut is a strided 1x1x1 conv + BN where the channels change, else the identity
  (subsampled where strided). `resnet_d_shortcut` swaps the projection for ResNet-D's
  average-pool + stride-1 conv (not in Model Garden's 3D network).
- head: mean over time and space, dropout, dense.

Padding is TF's "SAME" throughout (Model Garden's), unlike the 2D ResNet-RS, which pads
symmetrically as tensorflow/tpu and timm do. Per-block temporal kernel sizes come from
`temporal_kernels`: "baseline" is Model Garden's `ResNet3D50` (3 3 3 | 3 1 3 1 | 3 1 3 1 3 1 |
1 3 1), "rs" its `ResNet3DRS` (1 per block in c2 and c3, 3 in c4 and c5). Model Garden's RS preset
also sets se_ratio 0.2 and stochastic depth 0.1, where the paper's RS recipe uses SE 0.25 and
stochastic depth 0.2 (0.1 with scale jittering); the presets here take the paper's values and say
so (docs/video.md).

Clips are `[B, T, H, W, C]` float32, normalised like images.
"""

from collections.abc import Sequence
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from rsjax.models import layers
from rsjax.models.layouts import resolve_stage_sizes
from rsjax.models.resnet_rs import BASE_STAGE_FILTERS, scale_filters, stage_drop_rates

Dtype = Any

STEMS = ("vanilla", "resnet_d")
TEMPORAL_KERNEL_PATTERNS = ("baseline", "rs", "none")


def temporal_kernels(pattern: str, stage_sizes: Sequence[int]) -> tuple[tuple[int, ...], ...]:
    """Temporal kernel size of every block, per stage, for a named pattern.

    "baseline": Model Garden's ResNet3D50 rule, 3 for every block of c2, alternating 3, 1 in c3
    and c4, alternating 1, 3 in c5 (exactly its 50-layer lists; other depths extend the rule).
    "rs": Model Garden's ResNet3DRS, 1 in c2 and c3, 3 in c4 and c5 (for four stages).
    "none": 1 everywhere: a network that cannot see temporal order (a control).
    """
    sizes = tuple(stage_sizes)
    if pattern == "none":
        return tuple((1,) * n for n in sizes)
    if pattern == "rs":
        if len(sizes) != 4:
            raise ValueError(f"the 'rs' temporal kernels are defined for 4 stages, got {sizes}")
        return tuple((k,) * n for k, n in zip((1, 1, 3, 3), sizes, strict=True))
    if pattern == "baseline":
        rows = []
        for stage, n in enumerate(sizes):
            if stage == 0:
                rows.append((3,) * n)
            elif stage == len(sizes) - 1:
                rows.append(tuple(3 if i % 2 else 1 for i in range(n)))
            else:
                rows.append(tuple(1 if i % 2 else 3 for i in range(n)))
        return tuple(rows)
    raise ValueError(
        f"temporal kernel pattern must be one of {TEMPORAL_KERNEL_PATTERNS}, got {pattern!r}"
    )


def conv3d(features: int, kernel: tuple, stride: tuple, *, dtype: Dtype, name: str) -> nn.Conv:
    """A bias-free 3D conv [B, T, H, W, C] with TF "SAME" padding (Model Garden's Conv3D); the
    kernel is [kt, kh, kw, C_in, features], Keras's layout."""
    return nn.Conv(
        features, kernel, stride, padding="SAME", use_bias=False,
        kernel_init=layers.CONV_INIT, dtype=dtype, name=name,
    )  # fmt: skip


class SelfGating(nn.Module):
    """S3D-G feature gating: x * sigmoid(dense(mean over T, H, W of x)), per channel."""

    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        pooled = jnp.mean(x, axis=(1, 2, 3), keepdims=True)
        gate = nn.Dense(
            x.shape[-1], kernel_init=nn.initializers.truncated_normal(0.01), dtype=self.dtype,
            name="transform",
        )(pooled)  # fmt: skip
        return x * nn.sigmoid(gate)


class Bottleneck3D(nn.Module):
    """3D bottleneck block: [B, T, H, W, C_in] -> [B, T / ts, H / s, W / s, 4 * filters]."""

    filters: int
    temporal_kernel: int
    temporal_stride: int
    spatial_stride: int
    se_ratio: float | None
    drop_rate: float
    self_gating: bool
    bn_momentum: float
    bn_epsilon: float
    resnet_d_shortcut: bool = False
    zero_init_last_bn: bool = True
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        out_features = 4 * self.filters
        strides = (self.temporal_stride, self.spatial_stride, self.spatial_stride)

        def conv(features: int, kernel: tuple, stride: tuple, name: str) -> nn.Conv:
            return conv3d(features, kernel, stride, dtype=self.dtype, name=name)

        def bn(name: str, zero_init: bool = False) -> nn.Module:
            return layers.batch_norm(
                train, momentum=self.bn_momentum, zero_init=zero_init,
                epsilon=self.bn_epsilon, dtype=self.dtype, name=name,
            )  # fmt: skip

        if x.shape[-1] != out_features:
            shortcut = x
            if self.resnet_d_shortcut and strides != (1, 1, 1):
                shortcut = nn.avg_pool(
                    shortcut, strides, strides, padding="SAME", count_include_pad=False
                )
                strides_1x1 = (1, 1, 1)
            else:
                strides_1x1 = strides
            shortcut = conv(out_features, (1, 1, 1), strides_1x1, "shortcut_conv")(shortcut)
            shortcut = bn("shortcut_bn")(shortcut)
        else:
            shortcut = x[:, :: strides[0], :: strides[1], :: strides[2]]

        y = conv(self.filters, (self.temporal_kernel, 1, 1), (self.temporal_stride, 1, 1),
                 "temporal_conv")(x)  # fmt: skip
        y = nn.relu(bn("bn1")(y))
        y = conv(self.filters, (1, 3, 3), (1, self.spatial_stride, self.spatial_stride),
                 "spatial_conv")(y)  # fmt: skip
        y = nn.relu(bn("bn2")(y))
        y = conv(out_features, (1, 1, 1), (1, 1, 1), "expand_conv")(y)
        y = bn("bn3", zero_init=self.zero_init_last_bn)(y)
        if self.self_gating:
            y = SelfGating(dtype=self.dtype, name="self_gating")(y)
        y = layers.excite_and_drop(y, self.se_ratio, self.drop_rate, train, self.dtype)
        return nn.relu(y + shortcut)


class ResNet3D(nn.Module):
    """3D ResNet(-RS) video classifier: clips [B, T, H, W, C] -> float32 logits [B, classes].

    Attributes:
      depth: a key of `BLOCK_LAYOUTS` (50 for the paper's networks); `stage_sizes` overrides it.
      temporal_kernel_sizes: per stage, the temporal kernel of each block (`temporal_kernels`).
      temporal_strides: temporal stride of each stage's first block.
      stem: "resnet_d" (Appendix G's 3D ResNet-D stem) or "vanilla" (the 7x7 stem).
      stem_temporal_kernel / stem_temporal_stride: the stem's first conv in time (5 / 2).
      stem_pool_temporal_stride: the stem max-pool's temporal stride (its kernel is 3 in time
        when this is > 1, else 1).
      self_gating: per stage, gate the output of its last block (S3D-G); () for none.
      se_ratio: SE bottleneck = ratio x block output channels; None disables SE.
      stochastic_depth_rate: stage i drops at rate * (i + 2) / (stages + 1), as the 2D model
        and Model Garden.
      resnet_d_shortcut: ResNet-D's average-pool shortcut in downsampling blocks.
      zero_init_last_bn: start each branch's last BN gamma at 0 (only initialisation).
      stage_filters: bottleneck width of each stage, overriding 64 x 2^i x width_multiplier
        (the stem keeps its widths; small test networks, as Model Garden's specs allow).
      bn_momentum, bn_epsilon: BatchNorm (Model Garden's defaults: 0.99 and 1e-3).
    Variables: {"params", "batch_stats"}; train mode as the 2D models (`mutable=["batch_stats"]`,
    `rngs={"dropout": key}`).
    """

    depth: int = 50
    temporal_kernel_sizes: Sequence[Sequence[int]] = ()
    temporal_strides: Sequence[int] = (1, 1, 1, 1)
    width_multiplier: float = 1.0
    num_classes: int = 400
    stem: str = "resnet_d"
    stem_temporal_kernel: int = 5
    stem_temporal_stride: int = 2
    stem_pool_temporal_stride: int = 2
    self_gating: Sequence[bool] = ()
    se_ratio: float | None = 0.25
    dropout_rate: float = 0.5
    stochastic_depth_rate: float = 0.0
    resnet_d_shortcut: bool = False
    zero_init_last_bn: bool = True
    stage_sizes: Sequence[int] | None = None
    stage_filters: Sequence[int] = ()
    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-5
    dtype: Dtype = jnp.float32
    input_rank: ClassVar[int] = 5  # clips [B, T, H, W, C]

    def __post_init__(self) -> None:
        self._validate()
        super().__post_init__()

    @property
    def blocks_per_stage(self) -> tuple[int, ...]:
        return resolve_stage_sizes(self.depth, self.stage_sizes)

    def kernels(self) -> tuple[tuple[int, ...], ...]:
        """The temporal kernel of every block, per stage ("baseline" when none are given)."""
        if not self.temporal_kernel_sizes:
            return temporal_kernels("baseline", self.blocks_per_stage)
        return tuple(tuple(k) for k in self.temporal_kernel_sizes)

    def _validate(self) -> None:
        sizes = self.blocks_per_stage
        kernels = self.kernels()
        if tuple(len(k) for k in kernels) != sizes:
            raise ValueError(
                f"temporal_kernel_sizes must give one kernel per block ({sizes}), got {kernels}"
            )
        if any(k < 1 for stage in kernels for k in stage):
            raise ValueError(f"temporal kernel sizes must be >= 1, got {kernels}")
        if len(self.temporal_strides) != len(sizes) or min(self.temporal_strides) < 1:
            raise ValueError(
                f"temporal_strides must be {len(sizes)} values >= 1, got {self.temporal_strides}"
            )
        if self.self_gating and len(self.self_gating) != len(sizes):
            raise ValueError(
                f"self_gating must be () or {len(sizes)} flags, got {self.self_gating}"
            )
        if self.stem not in STEMS:
            raise ValueError(f"stem must be one of {STEMS}, got {self.stem!r}")
        if min(self.stem_temporal_kernel, self.stem_temporal_stride,
               self.stem_pool_temporal_stride) < 1:  # fmt: skip
            raise ValueError("the stem's temporal kernel and strides must be >= 1")
        if self.se_ratio is not None and not 0 < self.se_ratio <= 1:
            raise ValueError(f"se_ratio must be in (0, 1] or None, got {self.se_ratio!r}")
        for field in ("dropout_rate", "stochastic_depth_rate"):
            if not 0 <= getattr(self, field) < 1:
                raise ValueError(f"{field} must be in [0, 1), got {getattr(self, field)!r}")
        if self.stage_filters and (
            len(self.stage_filters) != len(sizes) or min(self.stage_filters) < 1
        ):
            raise ValueError(
                f"stage_filters must be () or {len(sizes)} values >= 1, got {self.stage_filters}"
            )
        if not self.width_multiplier > 0:
            raise ValueError(f"width_multiplier must be > 0, got {self.width_multiplier!r}")

    def filters(self, stage: int) -> int:
        """Bottleneck width of `stage` (0 for c2); its blocks output 4x as many channels."""
        if self.stage_filters:
            return self.stage_filters[stage]
        return scale_filters(BASE_STAGE_FILTERS * 2**stage, self.width_multiplier)

    def num_downsamplings(self) -> int:
        """Spatial stride-2 layers between the frames and the last stage (5)."""
        return 5

    def min_image_size(self) -> int:
        """Smallest frame side for which every stride-2 layer still sees at least 2 pixels."""
        return 2 ** (self.num_downsamplings() - 1) + 1

    def check_clips(self, clips: jax.Array) -> None:
        """ValueError for clips that are not [B, T, H, W, C] or too small for the strides."""
        if clips.ndim != 5:
            raise ValueError(f"clips must have rank 5 [B, T, H, W, C], got {tuple(clips.shape)}")
        if min(clips.shape[2:4]) < self.min_image_size():
            raise ValueError(
                f"frames of {clips.shape[2]}x{clips.shape[3]} are too small: the network's five "
                "spatial stride-2 layers need at least 17x17 pixels"
            )

    @nn.compact
    def __call__(self, clips: jax.Array, train: bool) -> jax.Array:
        """Maps clips [B, T, H, W, C] to float32 logits [B, num_classes]."""
        self.check_clips(clips)
        x = jnp.asarray(clips, self.dtype)
        x = self._stem(x, train)
        pool_t = 3 if self.stem_pool_temporal_stride > 1 else 1
        x = nn.max_pool(
            x, (pool_t, 3, 3), strides=(self.stem_pool_temporal_stride, 2, 2), padding="SAME"
        )
        sizes = self.blocks_per_stage
        drop_rates = stage_drop_rates(self.stochastic_depth_rate, len(sizes))
        gating = self.self_gating or (False,) * len(sizes)
        for stage, (kernels, t_stride, rate) in enumerate(
            zip(self.kernels(), self.temporal_strides, drop_rates, strict=True)
        ):
            for index, kernel in enumerate(kernels):
                first = index == 0
                x = Bottleneck3D(
                    filters=self.filters(stage),
                    temporal_kernel=kernel,
                    temporal_stride=t_stride if first else 1,
                    spatial_stride=2 if first and stage > 0 else 1,
                    se_ratio=self.se_ratio,
                    drop_rate=rate,
                    self_gating=gating[stage] and index == len(kernels) - 1,
                    bn_momentum=self.bn_momentum,
                    bn_epsilon=self.bn_epsilon,
                    resnet_d_shortcut=self.resnet_d_shortcut,
                    zero_init_last_bn=self.zero_init_last_bn,
                    dtype=self.dtype,
                    name=f"c{stage + 2}_block{index}",
                )(x, train)
        x = jnp.mean(x, axis=(1, 2, 3))
        x = nn.Dropout(self.dropout_rate, name="head_dropout")(x, deterministic=not train)
        logits = nn.Dense(
            self.num_classes, kernel_init=layers.DENSE_INIT, dtype=self.dtype,
            param_dtype=jnp.float32, name="classifier",
        )(x)  # fmt: skip
        return jnp.asarray(logits, jnp.float32)

    def _stem(self, x: jax.Array, train: bool) -> jax.Array:
        kt, st = self.stem_temporal_kernel, self.stem_temporal_stride
        if self.stem == "vanilla":
            specs = [(64, (kt, 7, 7), (st, 2, 2))]
        else:
            specs = [(32, (kt, 3, 3), (st, 2, 2)), (32, (1, 3, 3), (1, 1, 1)),
                     (64, (1, 3, 3), (1, 1, 1))]  # fmt: skip
        for i, (features, kernel, stride) in enumerate(specs, start=1):
            width = scale_filters(features, self.width_multiplier)
            x = conv3d(width, kernel, stride, dtype=self.dtype, name=f"stem_conv{i}")(x)
            x = layers.batch_norm(
                train, momentum=self.bn_momentum, epsilon=self.bn_epsilon, dtype=self.dtype,
                name=f"stem_bn{i}",
            )(x)  # fmt: skip
            x = nn.relu(x)
        return x


# The paper's two 50-layer video networks (Table 6's first and last rows), as Model Garden
# builds them, with the paper's SE ratio and stochastic depth in the RS one (docs/video.md);
# registered as presets (`rsjax.models.create_model("resnet3d_rs50")`).
NAMED: dict[str, dict[str, Any]] = {
    "resnet3d50": dict(
        depth=50, temporal_kernel_sizes=temporal_kernels("baseline", (3, 4, 6, 3)),
        stem="vanilla", self_gating=(True,) * 4, se_ratio=None, dropout_rate=0.0,
    ),
    "resnet3d_rs50": dict(
        depth=50, temporal_kernel_sizes=temporal_kernels("rs", (3, 4, 6, 3)),
        stem="resnet_d", self_gating=(True,) * 4, se_ratio=0.25, dropout_rate=0.5,
        stochastic_depth_rate=0.1,
    ),
}  # fmt: skip
