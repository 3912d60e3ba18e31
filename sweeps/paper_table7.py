"""Table 7 of Bello et al. (2021): the eleven ResNet-RS Pareto models (Figure 4), 350 epochs each.

Each run starts from its `imagenet` preset and states Table 8's settings (RandAugment magnitude,
stochastic depth, dropout) and the shared recipe (label smoothing 0.1, weight decay 4e-5, EMA
0.9999) as explicit overrides, so every result record carries them.
"""

from rsjax import paper_tables
from rsjax.sweep import Run, table8


def get_sweep() -> list[Run]:
    runs = []
    for row in paper_tables.resnet_rs_rows():
        name = f"resnetrs{row['depth']}_i{row['image_resolution']}"
        runs.append(Run(name, table8(row["depth"], row["image_resolution"]), f"imagenet:{name}"))
    return runs
