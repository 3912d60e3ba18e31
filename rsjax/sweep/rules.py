"""Regularization by rule (Bello et al., 2021), so no sweep types a strength per run.

Appendix E, "Scaling Analysis Regularization and Model Details" (Figures 2 and 3):
  350 epochs: RandAugment with 2 layers, magnitude 10 for width multipliers in [0.25, 0.5] or
    resolutions in [64, 160], 15 for resolutions in [224, 320], 20 otherwise; stochastic depth
    0.2 at resolution >= 224, none at width 0.25 or below 224 px; head dropout by width (Table 12);
    label smoothing 0.1; weight decay 4e-5.
  10 and 100 epochs: no RandAugment, dropout, stochastic depth or label smoothing; flips and crops
    only; weight decay 4e-5.
Table 8 (Appendix B): per-model RandAugment magnitude, stochastic depth and dropout of the eleven
ResNet-RS Pareto models, with the same 2 RandAugment layers, label smoothing 0.1, weight decay
4e-5, EMA 0.9999 and 350 epochs.

Readings where the text leaves a gap (raised as errors rather than guessed):
  - Resolutions between 160 and 224 px (e.g. 192) or below 64 px: the magnitude rule's "otherwise"
    would give 20, yet Table 8 uses 15 at 192 px, so such resolutions are refused; use Table 8.
  - Epoch counts other than 10, 100 and 350 have no rule and are refused.
  - Widths outside Table 12 have no dropout rate and are refused.
Crops (`data.area_range`) come from the base config; flips are set on in every regime.
"""

from typing import Any

from rsjax import paper_tables
from rsjax.configs import imagenet

RANDAUGMENT_LAYERS = 2
LABEL_SMOOTHING = 0.1
WEIGHT_DECAY = 4e-5
EMA_DECAY = 0.9999  # Table 8
LONG_EPOCHS = 350.0  # the regime with full regularization
SHORT_EPOCHS = (10.0, 100.0)  # flips and crops only


def dropout_rate(width: float) -> float:
    """Head dropout for a width multiplier (Table 12; the same at every depth and resolution)."""
    rates = {
        row["width_multiplier"]: row["dropout_rate"]
        for row in paper_tables.load("table12_dropout_by_width")
    }
    for known, rate in rates.items():
        if abs(known - width) < 1e-9:
            return float(rate)
    raise ValueError(f"No Table 12 dropout rate for width {width}; known: {sorted(rates)}.")


def randaugment_magnitude(width: float, resolution: int) -> float:
    """Appendix E: 10 for width <= 0.5 or 64-160 px, 15 for 224-320 px, 20 above 320 px."""
    if width <= 0.5 or 64 <= resolution <= 160:
        return 10.0
    if 224 <= resolution <= 320:
        return 15.0
    if resolution > 320:
        return 20.0
    raise ValueError(
        f"Appendix E gives no RandAugment magnitude for {resolution} px at width {width} "
        "(rule covers 64-160, 224-320 and > 320 px); use Table 8's values for such models."
    )


def stochastic_depth_rate(width: float, resolution: int) -> float:
    """Appendix E: 0.2 at resolution >= 224 px, except at width 0.25 (where it is never used)."""
    return 0.2 if resolution >= 224 and width > 0.25 else 0.0


def regularization(width: float, resolution: int, epochs: float) -> dict[str, Any]:
    """Appendix E overrides for a scaling-study model (width multiplier, resolution px, epochs)."""
    if epochs in SHORT_EPOCHS:
        return {
            "data.flip": True,
            "data.randaugment_layers": 0,
            "data.randaugment_magnitude": 0.0,
            "model.stochastic_depth_rate": 0.0,
            "model.dropout_rate": 0.0,
            "label_smoothing": 0.0,
            "optim.weight_decay": WEIGHT_DECAY,
        }
    if epochs != LONG_EPOCHS:
        raise ValueError(
            f"Appendix E has regularization rules for 10, 100 and 350 epochs, not {epochs}."
        )
    return {
        "data.flip": True,
        "data.randaugment_layers": RANDAUGMENT_LAYERS,
        "data.randaugment_magnitude": randaugment_magnitude(width, resolution),
        "model.stochastic_depth_rate": stochastic_depth_rate(width, resolution),
        "model.dropout_rate": dropout_rate(width),
        "label_smoothing": LABEL_SMOOTHING,
        "optim.weight_decay": WEIGHT_DECAY,
    }


def scaling_overrides(depth: int, width: float, resolution: int, epochs: float) -> dict[str, Any]:
    """Model, resolution, duration and Appendix E regularization of one scaling-study point."""
    return {
        "model.depth": depth,
        "model.width_multiplier": float(width),
        "data.image_size": resolution,
        "num_epochs": float(epochs),
        **regularization(width, resolution, epochs),
    }


def table8(depth: int, resolution: int) -> dict[str, Any]:
    """Overrides of the ResNet-RS Pareto model `depth` at `resolution` px (Table 8)."""
    presets = imagenet.presets()
    row = presets.get(f"resnetrs{depth}_i{resolution}")
    if row is None:
        raise ValueError(
            f"No Table 8 row for depth {depth} at {resolution} px; known: {', '.join(presets)}."
        )
    return {
        "model.depth": depth,
        "model.width_multiplier": 1.0,
        "data.image_size": resolution,
        "num_epochs": LONG_EPOCHS,
        "data.flip": True,
        "data.randaugment_layers": RANDAUGMENT_LAYERS,
        "data.randaugment_magnitude": float(row["randaugment_magnitude"]),
        "model.stochastic_depth_rate": float(row["stochastic_depth_rate"]),
        "model.dropout_rate": float(row["dropout_rate"]),
        "label_smoothing": LABEL_SMOOTHING,
        "optim.weight_decay": WEIGHT_DECAY,
        "ema_decay": EMA_DECAY,
    }
