"""Fashion-MNIST at CPU scale (28x28 grayscale, 10 classes), read from the Debian package.

Presets (`--config rsjax/configs/fashion_mnist.py:PRESET`):
  default: blocks 1-1-2-1 at width 0.25 on the native 28 px images, mild crops (area 0.85-1),
           weight decay 5e-4, 28 epochs. Measured on the 2-core CPU (2026-11-24, alone):
           93.33% test top-1 (EMA 93.21%) in 12 min 42 s wall-clock, ~2330 images/s.
  long:    the stem's first conv at stride 1 (14x14 features in c2 instead of 7x7), width 0.5
           (3.1 M params, ~4x the FLOPs of width 0.25), no RandAugment or dropout, cutout of
           10x10 px squares (`data.cutout_pad=5`), 80 epochs, evaluated every 10 epochs.
           Measured, 80 epochs, seed 0 (2026-11-25): 95.13% test top-1 (EMA 95.15%) in 195 min
           wall-clock in two resumed pieces (194 min of train steps, median ~421 images/s);
           EMA top-1 every 10 epochs 92.4 / 93.2 / 93.7 / 94.1 / 94.5 / 94.9 / 95.3 / 95.2,
           train top-1 under augmentation 97.3% at the end. One seed: expect ~95.1 +- 0.2.
           The same config for 60 epochs gave 94.99% and 95.00% EMA (two seeds), for 40
           epochs 94.68%; README ("Measured on this project's 2-core CPU") has every run that
           led here and why RandAugment and dropout were dropped.
  tiny:    the smallest network for smoke tests (200 steps).
Other measurements (2-core CPU, 2026-11-24; batch 128, peak LR 0.1, EMA 0.999; since the
huge-page malloc and the one-pipeline input of 2026-11-24, unless marked "before"):
  blocks 1-1-1-1, 30 epochs: 92.86% (EMA 92.99%) in 13 min 38 s, ~2290 images/s;
  width 0.5, blocks 1-1-2-1, 24 epochs: 93.30% (EMA 93.25%) in 28 min, ~870 images/s: twice
  the width buys nothing at 7x7 features in c2 (the stem's 4x downsampling is the likelier limit);
  before: blocks 1-1-1-1, 25 epochs: 92.97% (EMA 92.96%) in 17 min 6 s (~2 min of it input
  stalls at epoch starts); with a 10k shuffle buffer 26 epochs 92.79% (92.81%) in 17 min 2 s,
  24 epochs 92.41% (92.34%) in 16 min 46 s; 32 px, 20 epochs: 92.70% (92.64%);
  40 px, weight decay 4e-5, 9 epochs: 91.27% EMA in 11 min 33 s.
Earlier: RS-26 at width 0.25 on 28 px with crops of 35-100% area, 8 epochs: 87.9% (15.6 min).
`model.stem_stride=1` (the long preset) ran at ~400 images/s before huge-page malloc, ~650 since
(without RandAugment; ~450-600 with it, which also makes the input wait ~10% of the time).

Command:
  rsjax train --config rsjax/configs/fashion_mnist.py --workdir /tmp/fmnist
"""

import ml_collections

from rsjax.configs.base import get_base_config

FMNIST_MEAN = (0.2860 * 255,)
FMNIST_STD = (0.3530 * 255,)


def get_config(preset: str = "default") -> ml_collections.ConfigDict:
    c = get_base_config()
    c.name = f"fmnist_{preset or 'default'}"
    c.data.name = "fashion_mnist"
    c.data.eval_split = "test"
    c.data.num_classes = 10
    c.data.channels = 1
    # Native resolution: the stem leaves 7x7 features in c2; upsampling to 32 or 40 px adds
    # compute, not information (32 px, 20 epochs: 92.7%; 28 px, 25 epochs: 92.97%).
    c.data.image_size = 28
    # Mild crops: 0.08 of a small image leaves too little to classify, and short runs underfit
    # (at 6 epochs, area 0.64-1 gave 89.5% and 0.85-1 gave 90.7%).
    c.data.area_range = (0.85, 1.0)
    c.data.randaugment_magnitude = 0.0
    c.data.resize_method = "bilinear"
    c.data.eval_crop_fraction = 1.0
    c.data.mean = FMNIST_MEAN
    c.data.std = FMNIST_STD
    c.data.shuffle_buffer = 60_000  # the whole split (a 10k buffer cost 0.2-0.5 pts)

    c.model.depth = 0
    # A second c4 block (2x2 features) adds capacity for ~7% more step time: with 28 epochs it
    # beat 30 epochs of 1-1-1-1 (93.33% against 92.86%) in less time.
    c.model.stage_sizes = (1, 1, 2, 1)
    c.model.width_multiplier = 0.25
    c.model.dropout_rate = 0.0
    c.model.stochastic_depth_rate = 0.0

    c.global_batch_size = 128
    c.eval_batch_size = 500
    c.optim.base_learning_rate = 0.2
    c.optim.warmup_epochs = 0.5
    c.optim.weight_decay = 5e-4  # small nets, short runs: the paper's 4e-5 gave 91.3% at 40 px
    c.ema_decay = 0.999  # short runs need a short EMA horizon (the paper's 0.9999 spans 10k steps)
    c.log_every_steps = 50
    c.checkpoint_every_steps = 500

    preset = preset or "default"
    if preset == "default":
        c.num_epochs = 28.0
    elif preset == "long":
        # Width is not the limit at 7x7 features (width 0.5: 93.30%); resolution in c2 is.
        c.model.stem_stride = 1
        # At 14x14 in c2, width 0.5 fits the training set (RandAugment 5 and dropout 0.1 held
        # train top-1 at 92%, below test); cutout is the one regulariser kept.
        c.model.width_multiplier = 0.5
        c.data.cutout_pad = 5
        # 60 epochs gave 94.995% EMA over two seeds, still rising; 80 epochs gave 95.15%.
        c.num_epochs = 80.0
        c.eval_every_epochs = 10.0
    elif preset == "tiny":
        c.data.image_size = 28
        c.model.width_multiplier = 0.125
        c.model.stage_sizes = (1, 1, 1, 1)
        c.num_epochs = 0.0
        c.num_train_steps = 200
        c.log_every_steps = 20
        c.checkpoint_every_steps = 100
    else:
        raise ValueError(f"Unknown fashion_mnist preset {preset!r}; known: default, long, tiny.")
    c.lock()
    return c
