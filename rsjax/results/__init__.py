"""Run records (`workdir/result.json`): the contract between trainer, sweeps and analysis.

`collect` (and the rest of `rsjax.results.collection`) imports pandas, so it is loaded on first use:
the trainer writes records without importing it.
"""

from rsjax.results.lifecycle import EMA_WARM_HORIZONS, ERROR_LOG, RunRecord, ema_is_warm
from rsjax.results.schema import (
    SCHEMA_VERSION,
    STATUSES,
    existing_result,
    read_result,
    validate,
    write_result,
)

__all__ = [
    "EMA_WARM_HORIZONS",
    "ERROR_LOG",
    "SCHEMA_VERSION",
    "STATUSES",
    "CollectSummary",
    "RunRecord",
    "collect",
    "ema_is_warm",
    "existing_result",
    "load",
    "read_result",
    "validate",
    "write_result",
    "write_table",
]
_LAZY = ("CollectSummary", "collect", "load", "write_table")


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module("rsjax.results.collection"), name)
    raise AttributeError(f"module 'rsjax.results' has no attribute {name!r}")
