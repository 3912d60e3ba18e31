"""Figure 3 of Bello et al. (2021): depth vs width scaling at 10, 100 and 350 epochs (Section 6).

Depths x widths x resolutions x epochs = 4 x 3 x 4 x 3 = 144 ImageNet runs, regularized by the
Appendix E rules (`rsjax.sweep.rules`): full regularization at 350 epochs, flips and crops only at
10 and 100. The figure's curves scale depth at width 1.0 and width at depth 101 (72 of these runs);
the full product also covers the mixed points. Command: `rsjax sweep plan sweeps/paper_fig3.py`.
"""

from rsjax.sweep import Run, product, run_name, scaling_overrides

BASE = "imagenet:resnetrs50_i160"  # the Table 8 recipe; every model field is overridden


def get_sweep() -> list[Run]:
    points = product(
        epochs=[10.0, 100.0, 350.0],
        depth=[101, 200, 300, 400],
        width=[1.0, 1.5, 2.0],
        resolution=[128, 160, 224, 320],
    )
    return [Run(run_name(**p), scaling_overrides(**p), BASE) for p in points]
