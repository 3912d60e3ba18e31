"""Table 1 of Bello et al. (2021): the additive study on ResNet-200 at 256 px (Section 5.1).

One run per cumulative step of Table 1 that the config can express. The regularization strengths
of steps 5-7 are Table 8's for ResNet-RS-200 at 256 px (`rsjax.sweep.rules.table8`).

Steps without a config knob (not faked):
  - Step 0, the baseline, used a stepwise learning-rate decay; rsjax only has warmup + cosine, so
    the baseline cannot be run and the sweep starts at step 1 ("+ Cosine LR Decay", 90 epochs).
  - Step 10, "+ ResNet-D": the model is always ResNet-D (deep stem, avg-pool shortcuts, no
    max-pool), so every run here already has it; step 10's config would equal step 9's, and the
    last run ("s09-squeeze-excitation") stands for steps 9 and 10 together.
"Without EMA" is `ema_decay = 0` (the evaluated average is then the raw weights and BN statistics);
"without SE" is `model.se_ratio = None`.
"""

from typing import Any

from rsjax.sweep import Run, rules

BASE = "imagenet:resnetrs200_i256"
DEPTH, RESOLUTION = 200, 256


def steps() -> list[tuple[int, str, dict[str, Any]]]:
    """(Table 1 step, slug, overrides that step adds) for the expressible steps, in order."""
    rs = rules.table8(DEPTH, RESOLUTION)
    return [
        (
            1,
            "cosine-lr",  # with everything below still off: the baseline's settings
            {
                "model.depth": DEPTH,
                "model.width_multiplier": 1.0,
                "model.se_ratio": None,
                "data.image_size": RESOLUTION,
                "data.flip": True,
                "num_epochs": 90.0,
                "ema_decay": 0.0,
                "label_smoothing": 0.0,
                "model.stochastic_depth_rate": 0.0,
                "data.randaugment_layers": 0,
                "data.randaugment_magnitude": 0.0,
                "model.dropout_rate": 0.0,
                "optim.weight_decay": 1e-4,
            },
        ),
        (2, "epochs-350", {"num_epochs": rs["num_epochs"]}),
        (3, "ema", {"ema_decay": rs["ema_decay"]}),
        (4, "label-smoothing", {"label_smoothing": rs["label_smoothing"]}),
        (5, "stochastic-depth", {"model.stochastic_depth_rate": rs["model.stochastic_depth_rate"]}),
        (
            6,
            "randaugment",
            {
                "data.randaugment_layers": rs["data.randaugment_layers"],
                "data.randaugment_magnitude": rs["data.randaugment_magnitude"],
            },
        ),
        (7, "dropout", {"model.dropout_rate": rs["model.dropout_rate"]}),
        (8, "weight-decay-4e-5", {"optim.weight_decay": rs["optim.weight_decay"]}),
        (9, "squeeze-excitation", {"model.se_ratio": 0.25}),
    ]


def get_sweep() -> list[Run]:
    runs, overrides = [], {}
    for step, slug, added in steps():
        overrides = {**overrides, **added}
        runs.append(Run(f"s{step:02d}-{slug}", overrides, BASE))
    return runs
