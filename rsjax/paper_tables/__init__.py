"""The paper's tables (Bello et al., 2021) as bundled CSV files: reference data for tests and plots.

`load("table7_pareto")` returns the rows as dicts with numbers parsed (int where integral, float
otherwise, None where empty). Files: table1_additive_study, table2_weight_decay,
table3_rs_vs_efficientnet, table6_video_additive, table7_pareto, table8_hparams,
table11_block_layouts, table12_dropout_by_width, scaling_grid.
"""

import csv
import functools
import pathlib

_DIR = pathlib.Path(__file__).parent

# Appendix H: latency is timed from a batch of 128 per device, halved until it fits.
PROFILE_BATCH_PER_DEVICE = 128


def _parse(value: str) -> int | float | str | None:
    if value == "":
        return None
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


@functools.cache
def _load(name: str) -> tuple[dict, ...]:
    path = _DIR / f"{name}.csv"
    if not path.exists():
        known = sorted(p.stem for p in _DIR.glob("*.csv"))
        raise ValueError(f"Unknown paper table {name!r}; known: {known}.")
    with path.open(newline="") as f:
        return tuple({k: _parse(v) for k, v in row.items()} for row in csv.DictReader(f))


def load(name: str) -> list[dict]:
    """Rows of the bundled table `name` (a fresh list of fresh dicts)."""
    return [dict(row) for row in _load(name)]


def resnet_rs_rows() -> list[dict]:
    """The eleven ResNet-RS rows of Table 7 (depth, image_resolution, params_m, flops_b, ...)."""
    return [row for row in load("table7_pareto") if row["family"] == "resnet_rs"]
