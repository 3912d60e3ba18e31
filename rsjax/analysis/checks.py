"""Input checks shared by the analysis functions and plots: clear messages, not tracebacks."""

from collections.abc import Iterable

import pandas as pd


def require_columns(df: pd.DataFrame, columns: Iterable[str], what: str) -> pd.DataFrame:
    """Raises ValueError if `df` is empty or lacks any of `columns` (named in the message)."""
    if not isinstance(df, pd.DataFrame):
        raise ValueError(f"{what} needs a pandas DataFrame of results, got {type(df).__name__}.")
    if df.empty:
        raise ValueError(
            f"{what}: the results table is empty (no complete runs were collected; "
            "check the paths and `rsjax sweep status`)."
        )
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(
            f"{what} needs column(s) {missing}, which the results table lacks; "
            f"it has: {sorted(map(str, df.columns))[:40]}."
        )
    return df


def complete_rows(df: pd.DataFrame, columns: Iterable[str], what: str, minimum: int = 1):
    """The rows of `df` with every one of `columns` present; ValueError if fewer than `minimum`."""
    columns = list(columns)
    require_columns(df, columns, what)
    rows = df.dropna(subset=columns)
    if len(rows) < minimum:
        missing = {c: int(n) for c, n in df[columns].isna().sum().items() if n}
        raise ValueError(
            f"{what} needs at least {minimum} run(s) with {columns} all present; "
            f"the table has {len(rows)} of {len(df)} (values missing: {missing})."
        )
    return rows
