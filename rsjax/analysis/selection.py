"""Model selection over a fine-tuning grid (Appendix F): pick by validation, report test.

The paper searches learning rate x steps per task and reports each model's best. Picking that
best on the test split itself overstates what a new task would see; `select` picks the run with
the best quality on a held-out split of the training data (`val_top1`: `data.validation_split`,
recorded as val_* metrics) and reports its test quality, beside the best-on-test run, labelled as
the optimistic number that protocol implies.
"""

import dataclasses

import pandas as pd

# Grid columns shown beside each run, when the table has them (short name -> column).
GRID_COLUMNS = {
    "base_lr": "config.optim.base_learning_rate",  # per 256 images (peak = base x B / 256)
    "steps": "config.num_train_steps",
    "epochs": "epochs",
    "seed": "seed",
}


@dataclasses.dataclass(frozen=True)
class Selection:
    """The run chosen by validation and the run that is best on test (rows of the table)."""

    selected: pd.Series
    best_on_test: pd.Series
    by: str
    report: str


def select(df: pd.DataFrame, by: str = "val_top1", report: str = "top1") -> Selection:
    """The row with the highest `by` (ties: the first by run name) and the row with the highest
    `report`. ValueError when no row has a `by` value."""
    if by not in df.columns or df[by].isna().all():
        raise ValueError(
            f"no run has {by!r}: train with data.validation_split set (a split carved from the "
            "training data) to select without reading the test split"
        )
    rows = df[df[by].notna()].sort_values("name", kind="stable")
    selected = rows.loc[rows[by].idxmax()]
    best = rows.loc[rows[report].idxmax()]
    return Selection(selected=selected, best_on_test=best, by=by, report=report)


def format_selection(df: pd.DataFrame, selection: Selection) -> str:
    """Every run (best `by` first) with its grid values, then the two answers."""
    by, report = selection.by, selection.report
    grid = {k: c for k, c in GRID_COLUMNS.items() if c in df.columns and df[c].nunique() > 1}
    table = df[df[by].notna()].sort_values([by, "name"], ascending=[False, True])
    shown = table[["name", *grid.values(), by, report]].rename(
        columns={c: k for k, c in grid.items()}
    )
    lines = [shown.to_string(index=False, float_format=lambda v: f"{v:.4g}"), ""]
    s, b = selection.selected, selection.best_on_test
    lines.append(f"selected by {by}: {s['name']} ({by} {s[by]:.2f}%): {report} {s[report]:.2f}%")
    lines.append(
        f"best on the test split (optimistic: chosen by the number it reports): {b['name']}: "
        f"{report} {b[report]:.2f}%"
    )
    return "\n".join(lines)
