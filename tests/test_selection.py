"""Model selection over a fine-tuning grid: by validation, with the best-on-test beside it."""

import pandas as pd
import pytest

from rsjax.analysis.selection import format_selection, select


def grid() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "name": ["lr0.01-s100", "lr0.02-s100", "lr0.04-s100", "lr0.08-s100"],
            "config.optim.base_learning_rate": [0.0256, 0.0512, 0.1024, 0.2048],
            "config.num_train_steps": [100] * 4,
            "epochs": [20.0] * 4,
            "seed": [0] * 4,
            "val_top1": [90.0, 92.5, 92.5, 91.0],
            "top1": [89.0, 91.0, 90.5, 93.0],
        }
    )


def test_the_best_validation_run_is_selected_ties_by_name_and_best_on_test_is_apart():
    selection = select(grid())
    assert selection.selected["name"] == "lr0.02-s100"  # tied with lr0.04 on validation
    assert selection.best_on_test["name"] == "lr0.08-s100"
    text = format_selection(grid(), selection)
    assert "selected by val_top1: lr0.02-s100 (val_top1 92.50%): top1 91.00%" in text
    assert "best on the test split (optimistic" in text and "lr0.08-s100: top1 93.00%" in text
    assert text.splitlines()[0].split() == ["name", "base_lr", "val_top1", "top1"]


def test_runs_without_validation_metrics_are_one_clear_error():
    df = grid().assign(val_top1=None)
    with pytest.raises(ValueError, match=r"data\.validation_split"):
        select(df)
    partial = grid()
    partial.loc[2, "val_top1"] = None
    assert select(partial).selected["name"] == "lr0.02-s100"
