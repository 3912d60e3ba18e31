"""Figure 3 of Bello et al. (2021) scaled to Fashion-MNIST on a 2-core CPU, with replicates.

The paper scales depth (101-400) and width (1.0-2.0) at 128-320 px for 10, 100 and 350 epochs.
Here, on the `fashion_mnist` base (28 px grayscale, resized per run):
  training set: the first 10,000 training images (`STUDY`), so the long regime can overfit;
        train accuracy is measured on that subset after training, test accuracy on the 10,000
        test images,
  depth: 26 / 38 / 50 (blocks 2-2-2-2, 3-3-3-3, 3-4-6-3) at width 0.125,
  width: 0.125 / 0.1875 / 0.25 at depth 26 (three points per depth and per width curve),
  resolution: 24 and 32 px (the paper's 128-320 px, scaled; 28 px is the source size),
  epochs: 3 and 30 of the subset (the paper's 10 : 100; 234 and 2,343 steps at batch 128),
  seeds: 0 and 1 (replicates: same run but for the seed, one `replicate_id`).
2 regimes x 5 models x 2 resolutions x 2 seeds = 40 runs.

Recipe (`schedule`): warmup 10% of the run; an EMA whose horizon 1 / (1 - decay) is a fifth of
the run's steps, so even the short regime's EMA is warmed up by
`rsjax.results.lifecycle.ema_is_warm` (decays 0.9786 and 0.9979); no label smoothing (train
accuracy then reads as fit); the paper's weight decay 4e-5 (Appendix E); flips and mild crops
(area 0.85-1), no RandAugment, no dropout.

Presets (`sweeps/fmnist_fig3.py:PRESET`):
  full (default): the 40 runs above; `analysis/data/fmnist_fig3_results.csv` holds them.
  demo: what `make demo` runs: the short regime at 24 and 32 px for the base (RS-26, width
        0.125), RS-38 and width 0.1875, seeds 0 and 1: 12 runs, a subset of `full`.

Cost on the 2-core CPU with `--parallel 1`: about 83 minutes of runs for `full` (3-epoch runs
0.5-1.5 min, 30-epoch runs 2-4 min) and under 10 minutes for `demo` (docs/fashion_mnist.md,
"The Figure 3 sweep").

Commands:
  rsjax sweep plan sweeps/fmnist_fig3.py
  rsjax sweep launch sweeps/fmnist_fig3.py --workdir runs/fmnist_fig3 --launcher local
  rsjax sweep launch sweeps/fmnist_fig3.py:demo --workdir runs/demo --launcher local
"""

from rsjax.sweep import Run, product, run_name
from rsjax.sweep.rules import WEIGHT_DECAY

BASE = "fashion_mnist"
WARMUP_FRACTION = 0.1

STUDY = {
    "train_split": "train[:10000]",
    "train_examples": 10_000,
    "epochs": (3.0, 30.0),
    "depths": {26: (2, 2, 2, 2), 38: (3, 3, 3, 3), 50: (3, 4, 6, 3)},
    "widths": (0.125, 0.1875, 0.25),
    "resolution": (24, 32),
    "seeds": (0, 1),
    "batch": 128,
    "ema_horizon_fraction": 0.2,
}
PRESETS = {
    "full": {"epochs": STUDY["epochs"], "models": None},
    "demo": {"epochs": STUDY["epochs"][:1], "models": ((26, 0.125), (38, 0.125), (26, 0.1875))},
}


def schedule(epochs: float) -> dict:
    """The study's recipe for a run of `epochs` over the training subset: warmup 10% of
    the run, an EMA horizon 1 / (1 - decay) of `ema_horizon_fraction` of its steps (rounded to a
    decay of 4 decimals), no label smoothing (train accuracy then reads as fit), the paper's
    weight decay, flips and mild crops."""
    study = STUDY
    steps = int(epochs * study["train_examples"]) // study["batch"]
    decay = round(1.0 - 1.0 / (study["ema_horizon_fraction"] * steps), 4)
    return {
        "data.train_split": study["train_split"],
        "data.train_examples": study["train_examples"],
        "data.train_eval_split": study["train_split"],
        "optim.warmup_epochs": WARMUP_FRACTION * epochs,
        "optim.weight_decay": WEIGHT_DECAY,
        "ema_decay": decay,
        "data.area_range": [0.85, 1.0],
        "data.randaugment_magnitude": 0.0,
        "model.dropout_rate": 0.0,
        "label_smoothing": 0.0,
    }


def get_sweep(preset: str = "full") -> list[Run]:
    if preset not in PRESETS:
        raise ValueError(f"Unknown fmnist_fig3 preset {preset!r}; known: {sorted(PRESETS)}.")
    study, grid = STUDY, PRESETS[preset]
    base_depth, base_width = min(study["depths"]), min(study["widths"])
    models = grid["models"] or [(d, base_width) for d in study["depths"]] + [
        (base_depth, w) for w in study["widths"] if w != base_width
    ]
    points = product(
        epochs=list(grid["epochs"]),
        model=models,
        resolution=list(study["resolution"]),
        seed=list(study["seeds"]),
    )
    return [
        Run(
            run_name(*p["model"], p["resolution"], p["epochs"], seed=p["seed"]),
            {
                "model.depth": 0,
                "model.stage_sizes": list(study["depths"][p["model"][0]]),
                "model.width_multiplier": p["model"][1],
                "data.image_size": p["resolution"],
                "num_epochs": p["epochs"],
                "global_batch_size": study["batch"],
                "seed": p["seed"],
                "eval_every_epochs": 0.0,
                "progress": False,
                **schedule(p["epochs"]),
            },
            BASE,
        )
        for p in points
    ]
