"""Figure 3 of Bello et al. (2021) scaled to Fashion-MNIST on a 2-core CPU.

The paper scales depth (101-400) and width (1.0-2.0) at 128-320 px for 10, 100 and 350 epochs.
Here, on the `fashion_mnist` base (28 px grayscale upsampled, 60k training images):
  depth: ResNet-RS-26 and -50 block layouts ([2, 2, 2, 2], [3, 4, 6, 3]),
  width: 0.125 and 0.25,
  resolution: 24, 32 and 40 px (the paper's 128-320 px, scaled; 28 px is the source size),
  epochs: 0.2, 2 and 7 (the paper's 10 : 100 : 350 is 1 : 10 : 35).
2 x 2 x 3 x 3 = 36 runs. Regularization follows the paper's regimes at this scale: the two short
regimes use flips and crops only; the long one adds RandAugment (magnitude 5: Fashion-MNIST's
small images) and width-dependent dropout as in Table 12 (0.25 at width <= 0.5 in the paper,
here 0.1). Mild crops (area 0.85-1) throughout, as in the `fashion_mnist` preset.

Size: 3.3 million training images in total (9.2 epochs per model x 4 models x 3 resolutions x
60k). An estimate, not a measurement: at the 400-800 images/s measured for single small runs this
is 1.2-2.3 hours of training plus ~40 s of start-up per run on this CPU with `--parallel 1`.

Commands:
  rsjax sweep plan sweeps/fmnist_fig3.py
  rsjax sweep launch sweeps/fmnist_fig3.py --workdir runs/fmnist_fig3 --launcher local
"""

from rsjax.sweep import Run, product, run_name

BASE = "fashion_mnist"
LAYOUTS = {26: (2, 2, 2, 2), 50: (3, 4, 6, 3)}
SHORT_EPOCHS = (0.2, 2.0)
LONG_EPOCHS = 7.0


def regularization(epochs: float) -> dict:
    """Flips and crops only for the short regimes; RandAugment and dropout for the long one."""
    long = epochs == LONG_EPOCHS
    return {
        "data.area_range": [0.85, 1.0],
        "data.randaugment_magnitude": 5.0 if long else 0.0,
        "model.dropout_rate": 0.1 if long else 0.0,
        "label_smoothing": 0.1 if long else 0.0,
    }


def get_sweep() -> list[Run]:
    points = product(
        epochs=[*SHORT_EPOCHS, LONG_EPOCHS],
        depth=list(LAYOUTS),
        width=[0.125, 0.25],
        resolution=[24, 32, 40],
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
                **regularization(p["epochs"]),
            },
            BASE,
        )
        for p in points
    ]
