"""Figure 3 of Bello et al. (2021) scaled to Fashion-MNIST on a 2-core CPU.

The paper scales depth (101-400) and width (1.0-2.0) at 128-320 px for 10, 100 and 350 epochs.
Here, on the `fashion_mnist` base (28 px grayscale, resized per run, 60k training images):
  depth: ResNet-RS-26 and -50 block layouts ([2, 2, 2, 2], [3, 4, 6, 3]),
  width: 0.125 and 0.25,
  resolution: 24, 32 and 40 px (the paper's 128-320 px, scaled; 28 px is the source size),
  epochs: 0.1, 1 and 3.5 (the paper's 10 : 100 : 350 exactly, at 1/100).
2 x 2 x 3 x 3 = 36 runs. Warmup is 10% of each run (the base's 0.5 epochs would be longer than
the 0.1-epoch regime). Regularization: the paper adds RandAugment and dropout in its long regime
because 350 epochs overfit; these runs do not (a 9-epoch Fashion-MNIST run of this family at 40 px
still has train top-1 on augmented batches about equal to test top-1), so every regime uses
flips and mild crops (area 0.85-1) only, and the long regime adds label smoothing 0.1. Weight
decay is the paper's 4e-5 (Appendix E), as in the committed results.

Presets (`sweeps/fmnist_fig3.py:PRESET`):
  full (default): the 36 runs above (one seed each: what `analysis/data/` holds).
  demo: what `make demo` runs: 0.1 and 1 epochs, 24 and 32 px, the base (RS-26, width 0.125),
        one deeper (RS-50) and one wider (width 0.25) model: 12 runs.
  seeds: the study with replicates and a short regime that trains (`SEEDS_STUDY`): a bounded
        training subset (the first 10,000 training images, so the long regime can overfit, with
        train accuracy measured on it), 3 and 30 epochs of it (the paper's 10 : 100; 234 and
        2,343 steps at batch 128), an EMA whose horizon is a fifth of the run (warmed up by
        `rsjax.results.lifecycle.ema_is_warm`), depth 26 / 38 / 50 (blocks 2-2-2-2, 3-3-3-3,
        3-4-6-3) at width 0.125 and width 0.125 / 0.1875 / 0.25 at depth 26, 24 and 32 px, seeds
        0 and 1: 2 x 5 x 2 x 2 = 40 runs.
  seeds_demo: its short regime at 24 and 32 px for the base, RS-38 and width 0.1875, seeds 0
        and 1: 12 runs.

Cost: about 1 h 45 min for the 36 runs and 10 minutes for the demo's 12 on the 2-core CPU,
with `--parallel 1` (measurements: docs/fashion_mnist.md, "The Figure 3 sweep").

Commands:
  rsjax sweep plan sweeps/fmnist_fig3.py
  rsjax sweep launch sweeps/fmnist_fig3.py --workdir runs/fmnist_fig3 --launcher local
  rsjax sweep launch sweeps/fmnist_fig3.py:demo --workdir runs/demo --launcher local
"""

from rsjax.sweep import Run, product, run_name
from rsjax.sweep.rules import WEIGHT_DECAY

BASE = "fashion_mnist"
LAYOUTS = {26: (2, 2, 2, 2), 50: (3, 4, 6, 3)}
EPOCHS = (0.1, 1.0, 3.5)
LONG_EPOCHS = EPOCHS[-1]
WARMUP_FRACTION = 0.1
PRESETS = {
    "full": {"epochs": EPOCHS, "resolution": (24, 32, 40), "skip": ()},
    "demo": {"epochs": EPOCHS[:2], "resolution": (24, 32), "skip": ((50, 0.25),)},
}


def schedule_and_regularization(epochs: float) -> dict:
    """Warmup as a fraction of the run; label smoothing in the long regime only; the paper's
    weight decay (pinned: the `fashion_mnist` preset's own is tuned for its 28-epoch run)."""
    return {
        "optim.warmup_epochs": WARMUP_FRACTION * epochs,
        "optim.weight_decay": WEIGHT_DECAY,
        "data.area_range": [0.85, 1.0],
        "data.randaugment_magnitude": 0.0,
        "model.dropout_rate": 0.0,
        "label_smoothing": 0.1 if epochs == LONG_EPOCHS else 0.0,
    }


SEEDS_STUDY = {
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
SEEDS_PRESETS = {
    "seeds": {"epochs": SEEDS_STUDY["epochs"], "models": None},
    "seeds_demo": {"epochs": SEEDS_STUDY["epochs"][:1], "models": ((26, 0.125), (38, 0.125),
                                                                   (26, 0.1875))},
}  # fmt: skip


def seeds_schedule(epochs: float) -> dict:
    """The seeded study's recipe for a run of `epochs` over the training subset: warmup 10% of
    the run, an EMA horizon 1 / (1 - decay) of `ema_horizon_fraction` of its steps (rounded to a
    decay of 4 decimals), no label smoothing (train accuracy then reads as fit), the paper's
    weight decay, flips and mild crops."""
    study = SEEDS_STUDY
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


def _seeds_sweep(preset: str) -> list[Run]:
    study, grid = SEEDS_STUDY, SEEDS_PRESETS[preset]
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
                **seeds_schedule(p["epochs"]),
            },
            BASE,
        )
        for p in points
    ]


def get_sweep(preset: str = "full") -> list[Run]:
    if preset in SEEDS_PRESETS:
        return _seeds_sweep(preset)
    if preset not in PRESETS:
        known = sorted([*PRESETS, *SEEDS_PRESETS])
        raise ValueError(f"Unknown fmnist_fig3 preset {preset!r}; known: {known}.")
    grid = PRESETS[preset]
    points = product(
        epochs=list(grid["epochs"]),
        depth=list(LAYOUTS),
        width=[0.125, 0.25],
        resolution=list(grid["resolution"]),
    )
    return [
        Run(
            run_name(**p),
            {
                "model.depth": 0,
                "model.stage_sizes": list(LAYOUTS[p["depth"]]),
                "model.width_multiplier": p["width"],
                "data.image_size": p["resolution"],
                "num_epochs": p["epochs"],
                "eval_every_epochs": 0.0,
                "progress": False,
                **schedule_and_regularization(p["epochs"]),
            },
            BASE,
        )
        for p in points
        if (p["depth"], p["width"]) not in grid["skip"]
    ]
