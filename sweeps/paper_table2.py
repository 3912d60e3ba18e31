"""Table 2 of Bello et al. (2021): weight decay 1e-4 vs 4e-5 as regularization grows (Sec. 5.2).

Rows (model, resolution, regularization) and the two weight decays come from the bundled Table 2;
6 rows x 2 weight decays = 12 runs at 350 epochs with EMA (the Section 4.2 recipe). Regularization
names: RA = RandAugment, LS = label smoothing, SD = stochastic depth, DO = dropout; "None" turns all
four off. The paper does not give their strengths here; they are Table 8's where it has the model
(ResNet-RS-200 at 256 px) and the Appendix E rules otherwise (ResNet-50 at 224 px, width 1.0).
The caption does not mark these as SE-less ResNets (Section 4.1), so the ResNet-RS architecture is
kept.
"""

from typing import Any

from rsjax import paper_tables
from rsjax.sweep import Run, rules

BASE = "imagenet:resnetrs50_i160"  # every field that differs is overridden
_WD_PREFIX = "top1_wd_"
_OFF = {
    "RA": {"data.randaugment_layers": 0, "data.randaugment_magnitude": 0.0},
    "LS": {"label_smoothing": 0.0},
    "SD": {"model.stochastic_depth_rate": 0.0},
    "DO": {"model.dropout_rate": 0.0},
}


def _strengths(depth: int, resolution: int) -> dict[str, Any]:
    try:
        return rules.table8(depth, resolution)
    except ValueError:
        return {
            "model.depth": depth,
            "model.width_multiplier": 1.0,
            "data.image_size": resolution,
            "num_epochs": rules.LONG_EPOCHS,
            "ema_decay": rules.EMA_DECAY,
            **rules.regularization(1.0, resolution, rules.LONG_EPOCHS),
        }


def get_sweep() -> list[Run]:
    runs = []
    for row in paper_tables.load("table2_weight_decay"):
        depth = int(row["model"].removeprefix("ResNet-"))
        used = set() if row["regularization"] == "None" else set(row["regularization"].split("-"))
        if unknown := used - set(_OFF):
            raise ValueError(f"Unknown regularization {sorted(unknown)} in Table 2 row {row}.")
        overrides = _strengths(depth, row["resolution"])
        for method, off in _OFF.items():
            if method not in used:
                overrides.update(off)
        for column in row:
            if column.startswith(_WD_PREFIX):
                wd = column.removeprefix(_WD_PREFIX)
                name = f"d{depth}-r{row['resolution']}-{row['regularization'].lower()}-wd{wd}"
                runs.append(Run(name, {**overrides, "optim.weight_decay": float(wd)}, BASE))
    return runs
