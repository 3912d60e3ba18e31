"""Video classification with the 3D ResNet(-RS) (Section 7.5, Appendix G; docs/video.md).

Presets (`--config video:PRESET`):
  kinetics_baseline: Table 6's first row, the baseline 3D ResNet-50 (Model Garden's ResNet3D50:
           7x7 stem, no SE), 32-frame clips at temporal stride 2, random 224 crops and flips of
           frames whose shorter side is 256 px, batch 1024, peak LR 0.8 with cosine decay, weight
           decay 1e-4, no dropout, label smoothing, stochastic depth or EMA, 200 epochs;
           evaluated at 256 px over 30 views (10 clips x 3 crops).
  kinetics_rs: Table 6's last row, every step added: dropout 0.5, label smoothing 0.1, EMA,
           weight decay 4e-5, 350 epochs, scale jittering of the shorter side in [256, 320] px
           (with stochastic depth 0.1), SE 0.25 and the ResNet-D stem ([5, 1, 1] temporal
           kernels). `sweeps/paper_table6.py` builds the rows between the two.
  motion:  the 3D ResNet-RS recipe at CPU scale on `fashion_mnist_motion` (garments moving up or
           down; 20 classes = 10 garments x 2 directions): 8-frame clips at stride 2, blocks
           1-1-1-1 at width 0.25, the [5, 1, 1] stem, "rs" temporal kernels; a mechanism test
           of the temporal path, not a Kinetics result.
  motion_control: `motion` with every temporal kernel and stride 1 (stem, max-pool and blocks):
           a function of the set of a clip's frames, blind to their order (docs/video.md: a
           control that keeps every other frame is not blind to the direction).
  motion_tiny: `motion` for 60 steps (tests).

Kinetics-400 is read through tfds (`data.name`, default "kinetics400"): a dataset with a
"video" feature [L, H, W, 3] and a 400-class "label", prepared by the user from decoded clips
(nothing here downloads).
"""

import ml_collections

from rsjax.configs.base import get_base_config
from rsjax.configs.fashion_mnist import FMNIST_MEAN, FMNIST_STD

KINETICS_PRESETS = ("kinetics_baseline", "kinetics_rs")
MOTION_PRESETS = ("motion", "motion_control", "motion_tiny")


def _kinetics(c: ml_collections.ConfigDict, rs: bool) -> None:
    c.data.name = "kinetics400"
    c.data.train_split = "train"
    c.data.eval_split = "validation"
    c.data.num_classes = 400
    c.data.image_size = 224
    c.data.eval_image_size = 256
    c.data.num_frames = 32
    c.data.frame_stride = 2
    c.data.scale_range = (256 / 224, 320 / 224) if rs else (256 / 224, 256 / 224)
    c.data.eval_clips = 10
    c.data.eval_crops = 3
    c.data.randaugment_magnitude = 0.0
    c.data.shuffle_buffer = 1024
    c.model.depth = 50
    c.model.resnet_d = rs
    c.model.se_ratio = 0.25 if rs else None
    c.model.temporal.kernels = "rs" if rs else "baseline"
    c.model.temporal.stem_kernel = 5
    c.model.dropout_rate = 0.5 if rs else 0.0
    c.model.stochastic_depth_rate = 0.1 if rs else 0.0
    c.global_batch_size = 1024
    c.eval_batch_size = 64
    c.optim.base_learning_rate = 0.8 * 256 / 1024  # peak 0.8 at batch 1024
    c.optim.weight_decay = 4e-5 if rs else 1e-4
    c.label_smoothing = 0.1 if rs else 0.0
    c.ema_decay = 0.9999 if rs else 0.0
    c.num_epochs = 350.0 if rs else 200.0


def _motion(c: ml_collections.ConfigDict, preset: str) -> None:
    c.data.name = "fashion_mnist_motion"
    c.data.eval_split = "test"
    c.data.num_classes = 20
    c.data.channels = 1
    c.data.image_size = 32
    c.data.num_frames = 8
    c.data.frame_stride = 2  # a clip spans 15 of a video's 16 frames
    c.data.scale_range = (1.0, 1.25)
    c.data.eval_clips = 2
    c.data.randaugment_magnitude = 0.0
    c.data.resize_method = "bilinear"
    c.data.mean = FMNIST_MEAN
    c.data.std = FMNIST_STD
    c.data.shuffle_buffer = 10_000  # the whole split
    c.data.decoded_cache = True  # 164 MB: the train split decoded once
    c.model.depth = 0
    c.model.stage_sizes = (1, 1, 1, 1)
    c.model.width_multiplier = 0.25
    c.model.resnet_d = True
    c.model.dropout_rate = 0.0
    c.model.temporal.kernels = "rs"
    if preset == "motion_control":
        c.model.temporal.kernels = "none"
        c.model.temporal.stem_kernel = 1
        c.model.temporal.stem_stride = 1
        c.model.temporal.pool_stride = 1
    c.global_batch_size = 64
    c.eval_batch_size = 100
    c.optim.base_learning_rate = 0.4  # peak 0.1 at batch 64
    c.optim.warmup_epochs = 1.0
    c.optim.weight_decay = 5e-4
    c.ema_decay = 0.999
    c.num_epochs = 8.0
    c.log_every_steps = 50
    c.checkpoint_every_steps = 500
    if preset == "motion_tiny":
        c.model.width_multiplier = 0.125
        c.num_epochs = 0.0
        c.num_train_steps = 60
        c.log_every_steps = 20
        c.checkpoint_every_steps = 30


def get_config(preset: str = "motion") -> ml_collections.ConfigDict:
    c = get_base_config()
    preset = preset or "motion"
    c.name = f"video_{preset}"
    c.model.family = "resnet3d"
    if preset in KINETICS_PRESETS:
        _kinetics(c, rs=preset == "kinetics_rs")
    elif preset in MOTION_PRESETS:
        _motion(c, preset)
    else:
        known = ", ".join(KINETICS_PRESETS + MOTION_PRESETS)
        raise ValueError(f"Unknown video preset {preset!r}; known: {known}.")
    c.lock()
    return c
