"""The `result.json` record: one JSON object per run, versioned, validated in one place.

Fields (schema 1): schema, run_id, name, sweep, status ("running" | "complete" | "failed" |
"preempted" | "profiled"), error (first line of the message) and error_type (for "failed"),
checkpoint_step (for "preempted"), config, model {depth, width_multiplier, image_resolution,
params, flops_per_image}, train {epochs, steps, global_batch, wall_s, core_hours, step_s}, metrics
{top1, top5, ema_top1, ema_top5, loss, ...}, profile {...}, versions, started, finished.
`rsjax.results.lifecycle` writes it through a run's life.
"""

import json
import os
from typing import Any

from etils import epath

from rsjax.fileio import atomic_write_text

SCHEMA_VERSION = 1
STATUSES = ("running", "complete", "failed", "preempted", "profiled")
REQUIRED = {
    "schema": int,
    "status": str,
    "config": dict,
    "model": dict,
    "metrics": dict,
    "versions": dict,
}
RESULT_FILE = "result.json"


def validate(record: Any) -> dict:
    """Returns `record` if it is a valid schema-1 result; raises ValueError naming the problem."""
    if not isinstance(record, dict):
        raise ValueError(f"result must be a JSON object, got {type(record).__name__}")
    for key, kind in REQUIRED.items():
        if key not in record:
            raise ValueError(f"result lacks required field {key!r}")
        if not isinstance(record[key], kind):
            raise ValueError(f"result field {key!r} must be {kind.__name__}")
    if record["schema"] != SCHEMA_VERSION:
        raise ValueError(
            f"unsupported result schema {record['schema']} (expected {SCHEMA_VERSION})"
        )
    if record["status"] not in STATUSES:
        raise ValueError(f"unknown status {record['status']!r}; expected one of {STATUSES}")
    if record["status"] == "failed" and not record.get("error"):
        raise ValueError("a failed result must say why in 'error'")
    if record["status"] == "preempted" and not isinstance(record.get("checkpoint_step"), int):
        raise ValueError("a preempted result must name its 'checkpoint_step'")
    return record


def write_result(workdir: str | os.PathLike, record: dict) -> epath.Path:
    """Validates and writes `workdir/result.json` atomically (temp file, then rename)."""
    validate(record)
    # Overwrites: a rerun or a sweep worker rewrites the record.
    return atomic_write_text(
        epath.Path(workdir) / RESULT_FILE,
        json.dumps(record, indent=2, sort_keys=True, default=_jsonable),
    )


def read_result(path: str | os.PathLike) -> dict:
    """Reads and validates one result file (ValueError if corrupt or invalid)."""
    text = epath.Path(path).read_text()
    try:
        record = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    return validate(record)


def existing_result(workdir: str | os.PathLike) -> dict | None:
    """`workdir/result.json` if it exists and is valid; None if it is absent, unreadable or
    corrupt (callers then redo the work that writes it)."""
    path = epath.Path(workdir) / RESULT_FILE
    try:
        return read_result(path) if path.exists() else None
    except (ValueError, OSError):
        return None


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)
