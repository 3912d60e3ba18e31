"""Appendix F's fine-tuning grid at Fashion-MNIST scale: learning rate x steps from one source.

The paper fine-tunes end to end (cosine schedule, weight decay 1e-4) over a grid of learning
rates 0.005 to 0.32 (doubling: 7 values) and 5,000 to 20,000 steps, and reports each model's
best point. Here, on `fashion_mnist:transfer_finetune` (classes 5-9's 500-image `train_100`
split, batch 100): the same 7 peak learning rates x 100 / 200 / 400 steps = 21 runs, each with
an EMA horizon of a quarter of its steps, every one initialised from the `transfer_pretrain`
run at PRETRAINED. Pick the point with `rsjax results select WORKDIR`: by the `validation`
split (2,500 training images held out of `train`), never by the test split.

PRETRAINED is `$RSJAX_PRETRAINED`, or runs/transfer/pretrained, resolved to an absolute path
when the sweep loads (the source is part of every run's config, so of its run id).

Presets: `full` (default): the 21 runs from PRETRAINED; `scratch`: the same grid from random
initialisation (the comparison).

Commands:
  rsjax train --config fashion_mnist:transfer_pretrain --workdir runs/transfer/pretrained
  rsjax sweep launch sweeps/fmnist_finetune.py --workdir runs/fmnist_finetune
  rsjax results select runs/fmnist_finetune
"""

import os
import pathlib

from rsjax.sweep import Run, product

BASE = "fashion_mnist:transfer_finetune"
BATCH = 100  # the preset's global batch
PEAK_LEARNING_RATES = (0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32)
STEPS = (100, 200, 400)
EMA_HORIZONS_PER_RUN = 4  # ema_decay = 1 - 4 / steps: warm by rsjax.results.ema_is_warm


def pretrained() -> str:
    """The source run's absolute path."""
    path = os.environ.get("RSJAX_PRETRAINED", "runs/transfer/pretrained")
    return str(pathlib.Path(path).resolve())


def get_sweep(preset: str = "full") -> list[Run]:
    if preset not in ("full", "scratch"):
        raise ValueError(f"Unknown fmnist_finetune preset {preset!r}; known: full, scratch.")
    source = pretrained() if preset == "full" else ""
    return [
        Run(
            f"lr{p['lr']:g}-s{p['steps']}",
            {
                "optim.base_learning_rate": p["lr"] * 256 / BATCH,
                "num_train_steps": p["steps"],
                "ema_decay": 1.0 - EMA_HORIZONS_PER_RUN / p["steps"],
                "init_from.path": source,
            },
            BASE,
        )
        for p in product(lr=list(PEAK_LEARNING_RATES), steps=list(STEPS))
    ]
