"""ImageNet presets: one per row of the paper's Table 8 (`resnetrs{depth}_i{resolution}`).

All: 350 epochs, batch 4096, peak LR 0.1 x 4096 / 256, 5 warmup epochs, cosine to 0, momentum 0.9
(Nesterov, as tensorflow/tpu), weight decay 4e-5, label smoothing 0.1, EMA 0.9999 of weights and BN
statistics, RandAugment with 2 layers.

Command (a v4-32 pod slice; see README):
  rsjax train --config rsjax/configs/imagenet.py:resnetrs50_i160 --workdir gs://BUCKET/rs50
"""

import ml_collections

from rsjax import paper_tables
from rsjax.configs.base import get_base_config


def presets() -> dict[str, dict]:
    """Table 8 rows by preset name (depth, resolution, RandAugment, stochastic depth, dropout)."""
    return {
        f"resnetrs{row['depth']}_i{row['image_resolution']}": row
        for row in paper_tables.load("table8_hparams")
    }


def get_config(preset: str = "resnetrs50_i160") -> ml_collections.ConfigDict:
    table = presets()
    if preset not in table:
        raise ValueError(f"Unknown imagenet preset {preset!r}; known: {', '.join(table)}.")
    row = table[preset]
    c = get_base_config()
    c.name = preset
    c.model.depth = row["depth"]
    c.model.dropout_rate = float(row["dropout_rate"])
    c.model.stochastic_depth_rate = float(row["stochastic_depth_rate"])
    c.model.dtype = "bfloat16"
    c.data.image_size = row["image_resolution"]
    c.data.randaugment_magnitude = float(row["randaugment_magnitude"])
    c.lock()
    return c
