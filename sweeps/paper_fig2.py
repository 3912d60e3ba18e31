"""Figure 2 of Bello et al. (2021): the scaling study at 350 epochs (Section 6).

Widths x depths x resolutions = 5 x 7 x 5 = 175 ImageNet runs, regularized by the Appendix E rules
(`rsjax.sweep.rules`). Command: `rsjax sweep plan sweeps/paper_fig2.py`.
"""

from rsjax.sweep import Run, product, run_name, scaling_overrides

BASE = "imagenet:resnetrs50_i160"  # the Table 8 recipe; every model field is overridden


def get_sweep() -> list[Run]:
    points = product(
        width=[0.25, 0.5, 1.0, 1.5, 2.0],
        depth=[26, 50, 101, 200, 300, 350, 400],
        resolution=[128, 160, 224, 320, 448],
        epochs=[350.0],
    )
    return [Run(run_name(**p), scaling_overrides(**p), BASE) for p in points]
