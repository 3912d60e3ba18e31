"""Sweeps: runs as config overrides (`grid`), regularization by the paper's rules (`rules`), and
sweep files (`sweeps/*.py` with `get_sweep()`) loaded and validated before launch (`loader`)."""

from rsjax.sweep.grid import Run, build_config, product, run_name
from rsjax.sweep.loader import load_sweep, validate
from rsjax.sweep.rules import regularization, scaling_overrides, table8

__all__ = [
    "Run",
    "build_config",
    "load_sweep",
    "product",
    "regularization",
    "run_name",
    "scaling_overrides",
    "table8",
    "validate",
]
