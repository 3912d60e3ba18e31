"""Table 6 of Bello et al. (2021): the additive study of the RS recipe on a 3D ResNet-50 for
Kinetics-400 video classification (Section 7.5, Appendix G).

One run per row of Table 6, each adding its improvement to the previous run, from the baseline
(`video:kinetics_baseline`: 200 epochs, cosine decay, weight decay 1e-4, 32-frame clips at
stride 2, 224 px crops of frames with a 256 px shorter side) to every step on (which equals
`video:kinetics_rs`). Values from Appendix G: dropout 0.5, label smoothing 0.1, stochastic depth
0.2 (0.1 once scale jittering is on), EMA 0.9999, weight decay 4e-5, 350 epochs, scale jittering
of the shorter side in [256, 320] px, SE 0.25, the ResNet-D stem with [5, 1, 1] temporal kernels.

Which row switches the blocks' temporal kernels from the baseline's to Model Garden's RS pattern
(`model.temporal.kernels`) the paper does not say; here the last row ("+ ResNet-D") switches
them with the stem, as Model Garden's ResNet3DRS has both.

Table 6 averages 2 runs per row, so every row runs with seeds 0 and 1 (replicates: one
`replicate_id`), 20 runs. Kinetics-400 must be prepared as a tfds dataset first
(`rsjax.data.kinetics`); nothing here downloads it.
"""

from typing import Any

from rsjax.sweep import Run

BASE = "video:kinetics_baseline"
SEEDS = (0, 1)


def steps() -> list[tuple[int, str, dict[str, Any]]]:
    """(Table 6 row, slug, overrides that row adds) in order; row 0 is the baseline."""
    return [
        (0, "baseline", {}),
        (1, "dropout", {"model.dropout_rate": 0.5}),
        (2, "label-smoothing", {"label_smoothing": 0.1}),
        (3, "stochastic-depth", {"model.stochastic_depth_rate": 0.2}),
        (4, "ema", {"ema_decay": 0.9999}),
        (5, "weight-decay-4e-5", {"optim.weight_decay": 4e-5}),
        (6, "epochs-350", {"num_epochs": 350.0}),
        (
            7,
            "scale-jittering",  # with stochastic depth lowered to 0.1 (Appendix G)
            {"data.scale_range": (256 / 224, 320 / 224), "model.stochastic_depth_rate": 0.1},
        ),
        (8, "squeeze-excitation", {"model.se_ratio": 0.25}),
        (9, "resnet-d", {"model.resnet_d": True, "model.temporal.kernels": "rs"}),
    ]


def get_sweep() -> list[Run]:
    runs, overrides = [], {}
    for step, slug, added in steps():
        overrides = {**overrides, **added}
        for seed in SEEDS:
            runs.append(Run(f"s{step:02d}-{slug}-s{seed}", {**overrides, "seed": seed}, BASE))
    return runs
