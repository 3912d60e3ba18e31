"""Figures 4 and 5 of Bello et al. (2021): both families of the speed-accuracy comparison.

- the eleven ResNet-RS Pareto models of Table 7, with Table 8's settings (as `paper_table7.py`);
- EfficientNet-B0 ... B7 at their own resolutions, with their recipe (Table 10);
- EfficientNet-RS (Section 7.2, Figure 5): B2-B7's width and depth at every Table 8 resolution
  below their own (`rsjax.configs.imagenet.efficientnet_presets`; the paper gives no list).

Its first use is the speed axis on your hardware before any training:
  rsjax sweep launch sweeps/paper_fig4.py --workdir runs/fig4 --profile_only
  rsjax plot fig4 runs/fig4 --out figures   # measured latency; the paper's top-1 as quality
"""

from rsjax import paper_tables
from rsjax.configs import imagenet
from rsjax.sweep import Run, table8


def get_sweep() -> list[Run]:
    runs = []
    for row in paper_tables.resnet_rs_rows():
        name = f"resnetrs{row['depth']}_i{row['image_resolution']}"
        runs.append(Run(name, table8(row["depth"], row["image_resolution"]), f"imagenet:{name}"))
    for name, (_, _, recipe) in imagenet.efficientnet_presets().items():
        if recipe == "efficientnet":  # B0-B7 and EfficientNet-RS, each with its own recipe
            runs.append(Run(name, {}, f"imagenet:{name}"))
    return runs
