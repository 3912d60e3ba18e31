"""Speed-accuracy Pareto frontiers and speed-ups at matched accuracy (Figure 4, Table 7)."""

import math

import numpy as np
import pandas as pd

from rsjax.analysis import intervals
from rsjax.analysis.checks import complete_rows


def pareto_frontier(df: pd.DataFrame, cost: str = "latency", quality: str = "top1") -> pd.DataFrame:
    """The rows no other row beats: lower-or-equal `cost` with strictly higher `quality`, or
    strictly lower cost with equal-or-higher quality. Sorted by cost (quality rising).

    Ties: rows with identical (cost, quality) are one point; the first such row is kept.
    Rows missing either value are ignored.
    """
    rows = complete_rows(df, [cost, quality], "pareto_frontier")
    ordered = rows.sort_values([cost, quality], ascending=[True, False], kind="stable")
    keep, best = [], -math.inf
    for index, value in zip(ordered.index, ordered[quality], strict=True):
        if value > best:
            keep.append(index)
            best = value
    return ordered.loc[keep]


def _select(df: pd.DataFrame, which, role: str) -> pd.DataFrame:
    """Rows of `df` picked by a family name (matched against `family`) or a boolean mask."""
    if isinstance(which, str):
        if "family" not in df.columns:
            raise ValueError(f"{role}={which!r} selects by the 'family' column, which is missing.")
        rows = df[df["family"] == which]
        if rows.empty:
            raise ValueError(
                f"{role}={which!r}: no rows of that family; families: "
                f"{sorted(df['family'].dropna().unique())}."
            )
        return rows
    if isinstance(which, pd.Series):
        mask = which.reindex(df.index, fill_value=False).astype(bool)
    else:
        mask = np.asarray(which, dtype=bool)
        if mask.shape != (len(df),):
            raise ValueError(f"{role}: a mask of {mask.shape} for a table of {len(df)} rows.")
    rows = df[mask]
    if rows.empty:
        raise ValueError(f"{role} selects no rows.")
    return rows


def speedup_at_matched_accuracy(
    df: pd.DataFrame,
    ours="resnet_rs",
    theirs="efficientnet",
    cost: str = "latency",
    quality: str = "top1",
    method: str = "nearest",
    tolerance: float = 0.2,
) -> pd.DataFrame:
    """How much cheaper `ours` is than `theirs` at the same accuracy: speedup = their cost / ours.

    `ours`/`theirs`: a family name (the `family` column) or a boolean mask over `df`.
    method="nearest" (the paper's Table 7): each of their models is paired with our model(s)
    closest in `quality` (ties all kept), and the pair counts as matched when the accuracies
    differ by at most `tolerance` (points). method="interpolate": each of our models is compared
    with their Pareto frontier's cost at our accuracy, interpolated linearly in log-cost between
    neighbouring frontier points (matched when our accuracy lies within their frontier's range).

    Replicates (rows of one model point, `intervals.MODEL`, that differ in their seed) are one
    model: its mean quality and cost, with the mean's interval from the seed noise pooled over
    its family and regime.

    Returns one row per pair: ours, theirs (names), ours_quality with ours_quality_low /
    ours_quality_high, theirs_quality, ours_cost, theirs_cost, speedup, speedup_low and
    speedup_high (interpolate: their frontier's cost at the ends of our quality's interval;
    NaN for nearest pairs or without replicates), matched.
    """
    if method not in ("nearest", "interpolate"):
        raise ValueError(f"method must be 'nearest' or 'interpolate', got {method!r}.")
    rows = complete_rows(df, [cost, quality], "speedup_at_matched_accuracy", minimum=2)
    rows = _replicate_means(rows, cost, quality)
    ours_rows = rows.loc[rows.index.intersection(_select(df, ours, "ours").index)]
    theirs_rows = rows.loc[rows.index.intersection(_select(df, theirs, "theirs").index)]
    for role, side in (("ours", ours_rows), ("theirs", theirs_rows)):
        if side.empty:
            raise ValueError(
                f"speedup_at_matched_accuracy: {role} has no row with {cost} and {quality}."
            )
    names = "name" if "name" in rows.columns else None
    label = (lambda r: r[names]) if names else (lambda r: str(r.name))
    pairs = []
    if method == "nearest":
        for _, their in theirs_rows.iterrows():
            gaps = (ours_rows[quality] - their[quality]).abs()
            for _, our in ours_rows[np.isclose(gaps, gaps.min())].iterrows():
                pairs.append((our, their, their[cost], abs(our[quality] - their[quality])))
        out = [
            _pair(label(our), label(their), our, their, c, cost, quality, gap <= tolerance + 1e-9)
            for our, their, c, gap in pairs
        ]
    else:
        frontier = pareto_frontier(theirs_rows, cost, quality)
        q, log_c = frontier[quality].to_numpy(), np.log(frontier[cost].to_numpy(float))
        out = []

        def their_cost_at(value: float) -> float:
            inside = q.min() <= value <= q.max()
            return float(np.exp(np.interp(value, q, log_c))) if inside else math.nan

        for _, our in ours_rows.iterrows():
            their_cost = their_cost_at(our[quality])
            pair = _pair(
                label(our),
                "frontier",
                our,
                None,
                their_cost,
                cost,
                quality,
                not np.isnan(their_cost),
            )
            pair["speedup_low"] = their_cost_at(our["quality_low"]) / our[cost]
            pair["speedup_high"] = their_cost_at(our["quality_high"]) / our[cost]
            out.append(pair)
    return pd.DataFrame(out)


def _replicate_means(rows: pd.DataFrame, cost: str, quality: str) -> pd.DataFrame:
    """`rows` with replicates of one model point merged into their first row (mean cost and
    quality), and quality_low / quality_high: the mean's interval (NaN without replicates or
    without the model-point columns, as in the paper's tables)."""
    rows = rows.assign(quality_low=math.nan, quality_high=math.nan)
    family = ["family"] if "family" in rows.columns else []
    keys = [*intervals.MODEL, *family]
    if not set(keys) <= set(rows.columns) or rows[keys].isna().any().any():
        return rows
    merged = []
    for _, group in rows.groupby(["epochs", *family]):
        means = intervals.model_means(group, quality, cost, keys=keys)
        half = intervals.pooled_noise(means).half_width(means["n"])
        stats = means[[*keys, quality, cost]].assign(
            quality_low=means[quality] - half, quality_high=means[quality] + half
        )
        firsts = group.drop_duplicates(keys).drop(
            columns=[quality, cost, "quality_low", "quality_high"]
        )
        firsts = firsts.reset_index(names="_row").merge(stats, on=keys, how="left")
        merged.append(firsts.set_index("_row").rename_axis(None))
    return pd.concat(merged)


def _pair(our_name, their_name, our, their, their_cost, cost, quality, matched) -> dict:
    return {
        "ours": our_name,
        "theirs": their_name,
        "ours_quality": our[quality],
        "theirs_quality": their[quality] if their is not None else math.nan,
        "ours_cost": our[cost],
        "theirs_cost": their_cost,
        "speedup": their_cost / our[cost],
        "speedup_low": math.nan,
        "speedup_high": math.nan,
        "ours_quality_low": our.get("quality_low", math.nan),
        "ours_quality_high": our.get("quality_high", math.nan),
        "matched": bool(matched),
    }
