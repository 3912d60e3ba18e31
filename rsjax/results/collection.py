"""Collects `result.json` records (local or gs:// run directories) into one pandas table.

`collect(paths_or_globs)` reads every result file in or up to three levels below the given
directories (or the given files, or glob patterns), validates each against the schema, and flattens
it into one row: the analysis columns (`ANALYSIS_COLUMNS`: depth, width_multiplier,
image_resolution, epochs, params, flops, latency, memory, top1, ...) followed by every metric
(`metrics.*`) and config value (`config.*`). Rows are de-duplicated by run id (the newest record
wins). Records that are corrupt, failed, partial (interrupted: status "running") or only profiled
are not rows; they are listed in the summary attached as `df.attrs["summary"]` (a `CollectSummary`),
whose counts add up to the files read.

Replicates: runs whose configs differ only in `seed` share a `replicate_id` (the analysis averages
them and derives its intervals from their spread). `ema_warm` says whether the run's EMA (which
`top1` is, where recorded) was warmed up (`rsjax.results.lifecycle.ema_is_warm`).

Units: top1/top5 in percent (as the paper reports), error = 100 - top1; latency in seconds per
train step at `batch` images; flops per image (multiply-adds x 2); memory in bytes.

Latency is a property of the model, not of the run: every run of the same architecture,
resolution, batch, device and compute settings (`MODEL_KEY`) gets the median of the step times
measured by those runs (`latency`; each run's own median step time is kept in `run_latency`). Runs
that recorded no step time (records written before the trainer timed from the end of the first
step had none for runs shorter than two log intervals) thereby get their model's latency.
"""

import dataclasses
import json
import os
from collections.abc import Iterable

import pandas as pd
from etils import epath

from rsjax.configs import replicate_id as config_replicate_id
from rsjax.configs import run_id as config_run_id
from rsjax.models.layouts import layer_count
from rsjax.results.lifecycle import ema_is_warm
from rsjax.results.schema import RESULT_FILE, read_result

ROW_STATUSES = ("complete",)
SEARCH_DEPTH = 3
TABLE_SUFFIXES = (".csv", ".parquet")
GLOB_CHARS = "*?["
# Columns every collected table has, in this order (None/NaN where a record lacks the value).
ANALYSIS_COLUMNS = (
    "run_id",
    "replicate_id",
    "seed",
    "name",
    "sweep",
    "status",
    "family",
    "depth",
    "layers",
    "stage_sizes",
    "width_multiplier",
    "image_resolution",
    "epochs",
    "params",
    "flops",
    "latency",
    "run_latency",
    "batch",
    "memory",
    "top1",
    "top5",
    "error",
    "raw_top1",
    "raw_top5",
    "train_top1",
    "train_raw_top1",
    "val_top1",
    "val_raw_top1",
    "weights",
    "ema_warm",
    "wall_s",
    "core_hours",
    "device_kind",
    "num_devices",
    "started",
    "finished",
    "path",
)
# What a train step's speed depends on: runs equal in all of these share one `latency`.
MODEL_KEY = (
    "stage_sizes",
    "width_multiplier",
    "image_resolution",
    "batch",
    "device_kind",
    "num_devices",
    "config.model.se_ratio",
    "config.model.stem_stride",
    "config.model.stem_downsample",
    "config.model.conv_impl",
    "config.model.scan_blocks",
    "config.model.remat",
    "config.model.dtype",
    "config.mesh.model",
    "config.fsdp",
)


@dataclasses.dataclass
class CollectSummary:
    """What `collect` did with each result file: `files == rows + duplicates + skipped + corrupt`.

    duplicates: paths superseded by a newer record of the same run.
    skipped: status ("failed", "partial", "profiled") -> paths of valid records that are not rows.
    corrupt: (path, reason) for files that are not valid JSON or not valid results.
    """

    files: int = 0
    rows: int = 0
    duplicates: list[str] = dataclasses.field(default_factory=list)
    skipped: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    corrupt: list[tuple[str, str]] = dataclasses.field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {
            "files": self.files,
            "rows": self.rows,
            "duplicates": len(self.duplicates),
            **{status: len(paths) for status, paths in sorted(self.skipped.items())},
            "corrupt": len(self.corrupt),
        }

    def adds_up(self) -> bool:
        skipped = sum(len(paths) for paths in self.skipped.values())
        return self.files == self.rows + len(self.duplicates) + skipped + len(self.corrupt)

    def __str__(self) -> str:
        counts = self.counts()
        files = counts.pop("files")
        text = f"{files} result files: " + ", ".join(f"{n} {k}" for k, n in counts.items())
        for path, reason in self.corrupt:
            text += f"\n  corrupt: {path}: {reason}"
        return text


def find_result_files(paths_or_globs: str | os.PathLike | Iterable) -> list[epath.Path]:
    """Every result.json under the given directories, files or glob patterns (sorted, unique).

    Raises:
      ValueError: a path that does not exist or a pattern that matches nothing.
    """
    if isinstance(paths_or_globs, str | os.PathLike):
        paths_or_globs = [paths_or_globs]
    found: dict[str, epath.Path] = {}
    for item in paths_or_globs:
        text = os.fspath(item)
        if any(c in text for c in GLOB_CHARS):
            root, pattern = _split_glob(text)
            matches = sorted(epath.Path(root).glob(pattern))
            if not matches:
                raise ValueError(f"{text}: the pattern matches nothing.")
        else:
            matches = [epath.Path(text)]
            if not matches[0].exists():
                raise ValueError(f"{text}: no such file or directory.")
        for match in matches:
            for path in _results_under(match):
                found.setdefault(os.fspath(path), path)
    return [found[key] for key in sorted(found)]


def collect(
    paths_or_globs: str | os.PathLike | Iterable, statuses: Iterable[str] = ROW_STATUSES
) -> pd.DataFrame:
    """One row per run (newest record per run id) from every result.json under the inputs.

    Args:
      paths_or_globs: run directories, sweep directories, result files or glob patterns
        (local or gs://), one or a list.
      statuses: record statuses that become rows ("complete"; add "profiled" for cost-only
        tables). Others are counted in the summary.

    Returns:
      A DataFrame with `ANALYSIS_COLUMNS` then `metrics.*` and `config.*` columns, sorted by
      (sweep, name); `df.attrs["summary"]` is the `CollectSummary`.
    """
    statuses = tuple(statuses)
    summary = CollectSummary()
    newest: dict[str, tuple[tuple, dict]] = {}
    for path in find_result_files(paths_or_globs):
        summary.files += 1
        try:
            record = read_result(path)
            row = flatten(record, path)
        except (ValueError, TypeError, AttributeError, OSError, UnicodeDecodeError) as e:
            summary.corrupt.append((os.fspath(path), str(e)))
            continue
        status = record["status"]
        if status not in statuses:
            kind = "partial" if status == "running" else status  # running: no live process here
            summary.skipped.setdefault(kind, []).append(os.fspath(path))
            continue
        age = (row["finished"] or "", row["started"] or "", _mtime(path))
        previous = newest.get(row["run_id"])
        if previous is None or age > previous[0]:
            if previous is not None:
                summary.duplicates.append(previous[1]["path"])
            newest[row["run_id"]] = (age, row)
        else:
            summary.duplicates.append(row["path"])
    rows = [row for _, row in newest.values()]
    summary.rows = len(rows)
    df = pd.DataFrame(rows, columns=_columns(rows))
    if not df.empty:
        df = _model_latency(df).sort_values(["sweep", "name", "run_id"], na_position="last")
        df = df.reset_index(drop=True)
    assert summary.adds_up(), summary.counts()
    df.attrs["summary"] = summary
    return df


def flatten(record: dict, path: str | os.PathLike = "") -> dict:
    """One validated result record as a flat row (see the module docstring for units)."""
    model = record["model"]
    metrics = record["metrics"]
    config = record["config"]
    train = record.get("train") or {}
    profile = record.get("profile") or {}
    stage_sizes = model.get("stage_sizes") or []
    family = model.get("family", "resnet_rs")  # records before the field: ResNet-RS
    resnet = family == "resnet_rs"  # layer_count is ResNet's rule (3 per bottleneck block + 2)
    layers = model.get("layers") or (layer_count(stage_sizes) if stage_sizes and resnet else None)
    ema = metrics.get("ema_top1") is not None
    top1 = _percent(metrics.get("ema_top1" if ema else "top1"))
    num_epochs = config.get("num_epochs") or 0
    ema_warm = train.get("ema_warm")
    if ema_warm is None and train.get("steps") and config.get("ema_decay") is not None:
        ema_warm = ema_is_warm(config["ema_decay"], train["steps"])  # records before the field
    row = {
        "run_id": record.get("run_id") or config_run_id(config),
        "replicate_id": config_replicate_id(config),
        "seed": config.get("seed"),
        "name": record.get("name") or config.get("name"),
        "sweep": record.get("sweep"),
        "status": record["status"],
        "family": family,
        "depth": model.get("depth") or layers,
        "layers": layers,
        "stage_sizes": "-".join(str(n) for n in stage_sizes) or None,
        "width_multiplier": model.get("width_multiplier"),
        "image_resolution": model.get("image_resolution"),
        "epochs": num_epochs if num_epochs > 0 else train.get("epochs"),
        "params": model.get("params"),
        "flops": model.get("flops_per_image"),
        "latency": None,  # filled per model by `_model_latency`
        # A profile that halved its batch is timed at the batch it started from (Appendix H).
        "run_latency": profile.get("normalized_step_s") or profile.get("step_s"),
        "batch": profile.get("normalized_batch")
        or profile.get("batch")
        or train.get("global_batch"),
        "memory": profile.get("compiled_peak_bytes"),
        "top1": top1,
        "top5": _percent(metrics.get("ema_top5" if ema else "top5")),
        "error": None if top1 is None else round(100.0 - top1, 6),
        "raw_top1": _percent(metrics.get("top1")),
        "raw_top5": _percent(metrics.get("top5")),
        "train_top1": _percent(metrics.get("train_ema_top1" if ema else "train_top1")),
        "train_raw_top1": _percent(metrics.get("train_top1")),
        "val_top1": _percent(metrics.get("val_ema_top1" if ema else "val_top1")),
        "val_raw_top1": _percent(metrics.get("val_top1")),
        "weights": "ema" if ema else "raw",
        "ema_warm": ema_warm if ema else None,
        "wall_s": train.get("wall_s"),
        "core_hours": train.get("core_hours"),
        "device_kind": profile.get("device_kind"),
        "num_devices": profile.get("num_devices"),
        "started": record.get("started"),
        "finished": record.get("finished"),
        "path": os.fspath(epath.Path(path).parent) if path else None,
    }
    row.update({f"metrics.{k}": v for k, v in sorted(metrics.items())})
    row.update(_flatten_dict(config, "config."))
    return row


def write_table(df: pd.DataFrame, path: str | os.PathLike) -> epath.Path:
    """Writes `df` as CSV or Parquet, chosen by the suffix (.csv | .parquet)."""
    path = epath.Path(path)
    if path.suffix not in TABLE_SUFFIXES:
        raise ValueError(f"{path}: the output must end in .csv or .parquet.")
    path.parent.mkdir(parents=True, exist_ok=True)
    df = df.copy()
    df.attrs = {}  # the collect summary is a report, not table metadata
    if path.suffix == ".csv":
        path.write_text(df.to_csv(index=False))
    else:
        with path.open("wb") as f:
            df.to_parquet(f, index=False)
    return path


def load(
    source: str | os.PathLike | Iterable, statuses: Iterable[str] = ROW_STATUSES
) -> pd.DataFrame:
    """Results tables (.csv/.parquet written by `write_table`; several are concatenated), or
    `collect(source, statuses)` for run directories, result files and globs."""
    sources = [source] if isinstance(source, str | os.PathLike) else list(source)
    tables = [epath.Path(s) for s in sources if epath.Path(s).suffix in TABLE_SUFFIXES]
    if not tables:
        return collect(sources, statuses)
    if len(tables) != len(sources):
        raise ValueError("pass either results tables (.csv/.parquet) or run directories, not both.")
    frames = []
    for path in tables:
        if not path.exists():
            raise ValueError(f"{path}: no such results table.")
        with path.open("rb") as f:
            frames.append(pd.read_csv(f) if path.suffix == ".csv" else pd.read_parquet(f))
    df = pd.concat(frames, ignore_index=True)
    df.attrs["summary"] = None
    return df


def _model_latency(df: pd.DataFrame) -> pd.DataFrame:
    """Sets `latency` to the median `run_latency` of all runs of the same model and device."""
    key = [k for k in MODEL_KEY if k in df.columns and df[k].notna().any()]
    df = df.copy()
    if not key:
        df["latency"] = df["run_latency"]
        return df
    filled = df[key].astype(str).agg("|".join, axis=1)
    df["latency"] = df.groupby(filled)["run_latency"].transform("median")
    return df


def _columns(rows: list[dict]) -> list[str]:
    extra = sorted({k for row in rows for k in row} - set(ANALYSIS_COLUMNS))
    metrics = [k for k in extra if k.startswith("metrics.")]
    return [*ANALYSIS_COLUMNS, *metrics, *(k for k in extra if k not in metrics)]


def _flatten_dict(tree: dict, prefix: str) -> dict:
    flat = {}
    for key, value in sorted(tree.items()):
        if isinstance(value, dict):
            flat.update(_flatten_dict(value, f"{prefix}{key}."))
        elif isinstance(value, list):
            flat[f"{prefix}{key}"] = json.dumps(value)
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _percent(fraction: float | None) -> float | None:
    return None if fraction is None else round(100.0 * float(fraction), 6)  # no 87.8399999


def _split_glob(text: str) -> tuple[str, str]:
    """'gs://b/runs/*/result.json' -> ('gs://b/runs', '*/result.json')."""
    parts = text.split("/")
    first = next(i for i, part in enumerate(parts) if any(c in part for c in GLOB_CHARS))
    root = "/".join(parts[:first]) or ("/" if text.startswith("/") else ".")
    return root, "/".join(parts[first:])


def _results_under(path: epath.Path) -> list[epath.Path]:
    """`path` itself if a file, else result files at most `SEARCH_DEPTH` directories below it
    (run dir, sweep dir, a dir of sweeps; `**` globs are refused on GCS)."""
    if not path.is_dir():
        return [path]
    found = []
    for depth in range(SEARCH_DEPTH + 1):
        found += [p for p in path.glob("/".join(["*"] * depth + [RESULT_FILE])) if p.is_file()]
    return sorted(found)


def _mtime(path: epath.Path) -> float:
    try:
        return path.stat().mtime
    except (OSError, AttributeError):
        return 0.0
