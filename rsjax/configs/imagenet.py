"""ImageNet presets: one per row of the paper's Table 8 (`resnetrs{depth}_i{resolution}`), and
the EfficientNets of its comparison.

ResNet-RS (Table 8): 350 epochs, batch 4096, peak LR 0.1 x 4096 / 256, 5 warmup epochs, cosine to
0, momentum 0.9 (Nesterov, as tensorflow/tpu), weight decay 4e-5, label smoothing 0.1, EMA 0.9999
of weights and BN statistics, RandAugment with 2 layers.

EfficientNet (`efficientnet_b{0..7}`, the recipe of Table 10 / tensorflow/tpu): TF1 RMSProp
(decay 0.9, momentum 0.9, epsilon 1e-3), peak LR 0.016 x B / 256 after 5 warmup epochs, x0.97
every 2.4 epochs, weight decay 1e-5, BN momentum 0.99, drop connect 0.2, each model's dropout and
resolution, evaluated on a central crop r / (r + 32) with bicubic resizing; label smoothing, EMA
and epochs as ResNet-RS. RandAugment (2 layers; rsjax has no AutoAugment) with Section 7.2's
magnitudes: 10 up to 224 px, 15 up to 320, 20 above.
  `efficientnet_b{i}_rs_recipe`: the same network with the ResNet-RS recipe (momentum SGD, LR
  0.1 x B / 256, cosine, weight decay 4e-5, BN momentum 0.9).
  `efficientnet_rs_b{i}_i{r}` (EfficientNet-RS, Section 7.2): B{i}'s width and depth at a
  reduced resolution r, every Table 8 resolution (160-320 px, the slow resolution scaling of
  ResNet-RS) below B{i}'s own, for B2-B7 (the paper shows these models only in Figure 5
  and gives no list); everything else as `efficientnet_b{i}`.

Command (a v4-32 pod slice; see README):
  rsjax train --config rsjax/configs/imagenet.py:resnetrs50_i160 --workdir gs://BUCKET/rs50
"""

import ml_collections

from rsjax import paper_tables
from rsjax.configs.base import get_base_config
from rsjax.models import efficientnet

EFFICIENTNET_RS_VARIANTS = ("b2", "b3", "b4", "b5", "b6", "b7")


def randaugment_magnitude_7_2(resolution: int) -> float:
    """Section 7.2's RandAugment magnitude for an EfficientNet at `resolution` px."""
    return 10.0 if resolution <= 224 else 15.0 if resolution <= 320 else 20.0


def efficientnet_presets() -> dict[str, tuple[str, int, str]]:
    """EfficientNet preset name -> (variant, resolution, recipe "efficientnet" or "resnet_rs")."""
    table = {}
    for variant, (_, _, resolution, _) in efficientnet.SCALING.items():
        table[f"efficientnet_{variant}"] = (variant, resolution, "efficientnet")
        table[f"efficientnet_{variant}_rs_recipe"] = (variant, resolution, "resnet_rs")
    resolutions = sorted({row["image_resolution"] for row in paper_tables.load("table8_hparams")})
    for variant in EFFICIENTNET_RS_VARIANTS:
        own = efficientnet.SCALING[variant][2]
        for r in resolutions:
            if r < own:
                table[f"efficientnet_rs_{variant}_i{r}"] = (variant, r, "efficientnet")
    return table


def presets() -> dict[str, dict]:
    """Table 8 rows by preset name (depth, resolution, RandAugment, stochastic depth, dropout)."""
    return {
        f"resnetrs{row['depth']}_i{row['image_resolution']}": row
        for row in paper_tables.load("table8_hparams")
    }


def efficientnet_config(variant: str, resolution: int, recipe: str) -> ml_collections.ConfigDict:
    """EfficientNet-B{variant} at `resolution` px, with its own recipe or ResNet-RS's."""
    width, depth, own_resolution, dropout = efficientnet.SCALING[variant]
    c = get_base_config()
    c.model.family = "efficientnet"
    c.model.depth = 0
    c.model.width_multiplier = width
    c.model.depth_multiplier = depth
    c.model.dropout_rate = dropout
    c.model.stochastic_depth_rate = 0.2  # drop connect of the last block
    c.model.dtype = "bfloat16"
    c.data.image_size = resolution
    c.data.eval_crop_fraction = own_resolution / (own_resolution + 32)
    c.data.resize_method = "bicubic"
    c.data.randaugment_magnitude = randaugment_magnitude_7_2(resolution)
    if recipe == "efficientnet":
        c.model.bn_momentum = 0.99
        c.optim.name = "rmsprop"
        c.optim.base_learning_rate = 0.016
        c.optim.momentum = 0.9
        c.optim.rmsprop_decay = 0.9
        c.optim.rmsprop_epsilon = 1e-3
        c.optim.schedule = "exponential"
        c.optim.decay_rate = 0.97
        c.optim.decay_epochs = 2.4
        c.optim.weight_decay = 1e-5
    return c


def get_config(preset: str = "resnetrs50_i160") -> ml_collections.ConfigDict:
    table = presets()
    others = efficientnet_presets()
    if preset in others:
        c = efficientnet_config(*others[preset])
        c.name = preset
        c.lock()
        return c
    if preset not in table:
        raise ValueError(
            f"Unknown imagenet preset {preset!r}; known: {', '.join(table)}, "
            "efficientnet_b{0..7}[_rs_recipe], efficientnet_rs_b{2..7}_i{160..320}."
        )
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
