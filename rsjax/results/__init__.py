"""Run records (`workdir/result.json`): the contract between trainer, sweeps and analysis."""

from rsjax.results.schema import SCHEMA_VERSION, STATUSES, read_result, validate, write_result

__all__ = ["SCHEMA_VERSION", "STATUSES", "read_result", "validate", "write_result"]
