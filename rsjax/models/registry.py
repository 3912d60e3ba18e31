"""Named model presets, ResNet-RS and EfficientNet, all built by one function (`create_model`).

Depth presets `resnetrs{depth}` exist for every layout in `BLOCK_LAYOUTS` (the seven Table 11 depths
of the released models plus the scaling-study depths 26, 300 and 400). Width-scaled variants of the
scaling study (Section 6, widths 0.25-2.0) are named `resnetrs{depth}_w{width}` with the multiplier
written without a trailing zero and "p" for the decimal point: `resnetrs101_w1p5`,
`resnetrs26_w0p25`.

Each preset records the training resolution and regularisation of the paper's Table 8 where the
paper trains it (`default_resolution`, `dropout_rate`, `stochastic_depth_rate`), so that the zoo can
print FLOPs at the preset's resolution.

EfficientNet presets `efficientnet_b0` ... `efficientnet_b7` (the paper's comparison family) carry
tensorflow/tpu's (width, depth, resolution, dropout) and the eval preprocessing their weights
expect: a central crop of r / (r + 32) and bicubic resizing.

Video presets `resnet3d50` and `resnet3d_rs50` (`rsjax.models.resnet3d.NAMED`, Table 6's first and
last networks) take clips of `frames` (32) frames at 224 px (Appendix G).
"""

import dataclasses
from typing import Any

import flax.linen as nn

from rsjax import paper_tables
from rsjax.models import efficientnet, resnet3d
from rsjax.models.efficientnet import EfficientNet
from rsjax.models.layouts import BLOCK_LAYOUTS
from rsjax.models.resnet3d import ResNet3D
from rsjax.models.resnet_rs import ResNetRS

SCALING_WIDTHS = (0.25, 0.5, 1.0, 1.5, 2.0)  # Section 6 / Figure 2.


@dataclasses.dataclass(frozen=True)
class Preset:
    """A named model: constructor arguments plus the resolution (and, for video, the clip
    length) it is trained at."""

    name: str
    kwargs: dict[str, Any]
    default_resolution: int
    description: str
    family: str = "resnet_rs"  # a key of FAMILIES
    eval_crop_fraction: float | None = None  # what its weights expect (None: the config's)
    resize_method: str | None = None
    frames: int = 0  # a video model's clip length (0: an image model)


FAMILIES: dict[str, type[nn.Module]] = {
    "resnet_rs": ResNetRS,
    "efficientnet": EfficientNet,
    "resnet3d": ResNet3D,
}


def _table8_defaults() -> dict[int, tuple[int, float, float]]:
    """depth -> (resolution, stochastic depth, dropout) of the last (highest-resolution) row of
    each depth in the bundled Table 8 (`rsjax/paper_tables/table8_hparams.csv`), the one source
    of these numbers."""
    return {
        row["depth"]: (
            row["image_resolution"],
            float(row["stochastic_depth_rate"]),
            float(row["dropout_rate"]),
        )
        for row in paper_tables.load("table8_hparams")  # later rows of a depth win
    }


_TABLE8_DEFAULTS = _table8_defaults()
_SCALING_STUDY_RESOLUTION = 224


def width_name(width_multiplier: float) -> str:
    """0.25 -> '0p25', 1.5 -> '1p5', 2.0 -> '2'."""
    return f"{width_multiplier:g}".replace(".", "p")


def _build_registry() -> dict[str, Preset]:
    registry: dict[str, Preset] = {}
    for depth in BLOCK_LAYOUTS:
        resolution, sd_rate, dropout = _TABLE8_DEFAULTS.get(
            depth, (_SCALING_STUDY_RESOLUTION, 0.0, 0.25)
        )
        source = "Table 8" if depth in _TABLE8_DEFAULTS else "scaling study (Sec. 6)"
        name = f"resnetrs{depth}"
        registry[name] = Preset(
            name,
            dict(depth=depth, dropout_rate=dropout, stochastic_depth_rate=sd_rate),
            resolution,
            f"ResNet-RS-{depth} ({source})",
        )
        for width in SCALING_WIDTHS:
            if width == 1.0:
                continue
            wname = f"{name}_w{width_name(width)}"
            registry[wname] = Preset(
                wname,
                dict(
                    depth=depth,
                    width_multiplier=width,
                    dropout_rate=dropout,
                    stochastic_depth_rate=sd_rate,
                ),
                resolution,
                f"ResNet-RS-{depth}, width x{width:g} (scaling study)",
            )
    for variant, (width, depth, resolution, dropout) in efficientnet.SCALING.items():
        name = f"efficientnet_{variant}"
        registry[name] = Preset(
            name,
            dict(width=width, depth=depth, dropout_rate=dropout),
            resolution,
            f"EfficientNet-{variant.upper()} (Tan & Le, 2019; tensorflow/tpu)",
            family="efficientnet",
            eval_crop_fraction=resolution / (resolution + 32),
            resize_method="bicubic",
        )
    for name, kwargs in resnet3d.NAMED.items():
        registry[name] = Preset(
            name,
            kwargs,
            224,
            f"3D {'ResNet-RS' if 'rs' in name else 'ResNet'}-50 for video (Table 6, Appendix G)",
            family="resnet3d",
            frames=32,
        )
    return registry


PRESETS: dict[str, Preset] = _build_registry()


def list_models(include_widths: bool = True, family: str | None = None) -> list[str]:
    """Names of the registered presets (ResNet-RS by depth then width, EfficientNet, then the
    video networks), of one `family` when given."""
    return [
        name
        for name, preset in PRESETS.items()
        if (include_widths or "_w" not in name) and family in (None, preset.family)
    ]


def get_preset(name: str) -> Preset:
    """The preset called `name`; raises ValueError listing the known names otherwise."""
    if name not in PRESETS:
        raise ValueError(
            f"Unknown model {name!r}; known models: {', '.join(list_models(False))} "
            "(and the ResNet-RS _w{0p25,0p5,1p5,2} width variants)."
        )
    return PRESETS[name]


def create_model(name: str, **overrides: Any) -> nn.Module:
    """Builds the preset `name` (a `ResNetRS`, an `EfficientNet` or a `ResNet3D`), with any
    field of its module overridden (e.g. num_classes=10)."""
    preset = get_preset(name)
    return FAMILIES[preset.family](**{**preset.kwargs, **overrides})
