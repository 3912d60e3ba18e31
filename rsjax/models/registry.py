"""Named ResNet-RS presets, all built by one function.

Depth presets `resnetrs{depth}` exist for every layout in `BLOCK_LAYOUTS` (the seven Table 11 depths
of the released models plus the scaling-study depths 26, 300 and 400). Width-scaled variants of the
scaling study (Section 6, widths 0.25-2.0) are named `resnetrs{depth}_w{width}` with the multiplier
written without a trailing zero and "p" for the decimal point: `resnetrs101_w1p5`,
`resnetrs26_w0p25`.

Each preset records the training resolution and regularisation of the paper's Table 8 where the
paper trains it (`default_resolution`, `dropout_rate`, `stochastic_depth_rate`), so that the zoo can
print FLOPs at the preset's resolution.
"""

import dataclasses
from typing import Any

from rsjax import paper_tables
from rsjax.models.layouts import BLOCK_LAYOUTS
from rsjax.models.resnet_rs import ResNetRS

SCALING_WIDTHS = (0.25, 0.5, 1.0, 1.5, 2.0)  # Section 6 / Figure 2.


@dataclasses.dataclass(frozen=True)
class Preset:
    """A named model: constructor arguments plus the resolution it is trained at."""

    name: str
    kwargs: dict[str, Any]
    default_resolution: int
    description: str


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
    return registry


PRESETS: dict[str, Preset] = _build_registry()


def list_models(include_widths: bool = True) -> list[str]:
    """Names of the registered presets, by depth then width."""
    names = PRESETS.keys() if include_widths else (n for n in PRESETS if "_w" not in n)
    return list(names)


def get_preset(name: str) -> Preset:
    """The preset called `name`; raises ValueError listing the known names otherwise."""
    if name not in PRESETS:
        raise ValueError(
            f"Unknown model {name!r}; known models: {', '.join(list_models(False))} "
            "(and their _w{0p25,0p5,1p5,2} width variants)."
        )
    return PRESETS[name]


def create_model(name: str, **overrides: Any) -> ResNetRS:
    """Builds the preset `name`, with any `ResNetRS` field overridden (e.g. num_classes=10)."""
    preset = get_preset(name)
    return ResNetRS(**{**preset.kwargs, **overrides})
