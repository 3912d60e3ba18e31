"""Depth versus width scaling per regime (Strategy #1) and returns of resolution (Strategy #2).

A regime is a number of training epochs (the `epochs` column). Within a regime and resolution
the common base is the shallowest, narrowest model; the depth-scaling curve keeps its width and
grows depth, the width-scaling curve keeps its depth and grows width (Figure 3).
"""

import math

import numpy as np
import pandas as pd

from rsjax.analysis.checks import complete_rows

AXES = ("depth", "width_multiplier", "image_resolution", "epochs")
TIE_POINTS = 0.05  # accuracy gaps below this many points at matched cost count as a tie
# A resolution step whose cost grows less than this has no returns per cost (noise would divide).
MIN_COST_RATIO = 1.05


def regimes(df: pd.DataFrame) -> list[float]:
    """The distinct `epochs` values of `df`, ascending."""
    return sorted(complete_rows(df, ["epochs"], "regimes")["epochs"].unique().tolist())


def regime_rows(df: pd.DataFrame, regime: float, columns, what: str) -> pd.DataFrame:
    """Rows of `df` trained for `regime` epochs with `columns` present; a clear error if none."""
    rows = complete_rows(df, [*AXES, *columns], what)
    chosen = rows[np.isclose(rows["epochs"].astype(float), float(regime))]
    if chosen.empty:
        raise ValueError(
            f"{what}: no complete run trained for {regime:g} epochs; "
            f"regimes present: {[f'{r:g}' for r in regimes(rows)]}."
        )
    return chosen


def scaling_curves(
    df: pd.DataFrame, regime: float, cost: str = "latency", quality: str = "top1"
) -> pd.DataFrame:
    """Tidy points of the depth- and width-scaling curves at each resolution of a regime.

    Columns: epochs, image_resolution, strategy ("depth" | "width"), depth, width_multiplier,
    cost, quality (means over repeated runs of one model), is_base. The base (the regime's
    shallowest depth at its narrowest width) appears in both; resolutions without a run of it
    are left out.
    """
    rows = regime_rows(df, regime, [cost, quality], "scaling_curves")
    models = (
        rows.groupby(["image_resolution", "depth", "width_multiplier"], as_index=False)[
            [cost, quality]
        ]
        .mean()
        .rename(columns={cost: "cost", quality: "quality"})
    )
    curves = []
    base_depth, base_width = models["depth"].min(), models["width_multiplier"].min()
    for _, at_res in models.groupby("image_resolution"):
        has_base = (at_res["depth"] == base_depth) & (at_res["width_multiplier"] == base_width)
        if not has_base.any():
            continue  # no common base at this resolution (yet): no curves to compare
        for strategy, along in (
            ("depth", at_res[at_res["width_multiplier"] == base_width].sort_values("depth")),
            ("width", at_res[at_res["depth"] == base_depth].sort_values("width_multiplier")),
        ):
            along = along.assign(
                epochs=float(regime),
                strategy=strategy,
                is_base=(along["depth"] == base_depth) & (along["width_multiplier"] == base_width),
            )
            curves.append(along)
    if not curves:
        raise ValueError(
            f"scaling_curves: the {regime:g}-epoch regime has no run of its base model (depth "
            f"{base_depth:g}, width {base_width:g}) at any resolution; the curves start there."
        )
    columns = ["epochs", "image_resolution", "strategy", "depth", "width_multiplier"]
    return pd.concat(curves)[[*columns, "cost", "quality", "is_base"]].reset_index(drop=True)


def _gap_at_matched_cost(depth: pd.DataFrame, width: pd.DataFrame) -> float:
    """Mean (depth - width) quality over the cost range both curves cover (log-cost grid)."""
    low = max(depth["cost"].min(), width["cost"].min())
    high = min(depth["cost"].max(), width["cost"].max())
    if not high > low:
        return math.nan
    grid = np.geomspace(low, high, 16)

    def along(curve: pd.DataFrame) -> np.ndarray:
        curve = curve.sort_values("cost")
        return np.interp(np.log(grid), np.log(curve["cost"]), curve["quality"])

    return float(np.mean(along(depth) - along(width)))


def _gain_per_doubling(curve: pd.DataFrame) -> float:
    """Least-squares slope of quality against log2(cost) along a curve (points per 2x cost)."""
    if len(curve) < 2 or np.ptp(np.log2(curve["cost"])) == 0:
        return math.nan
    return float(np.polyfit(np.log2(curve["cost"]), curve["quality"], 1)[0])


def compare_scaling(
    df: pd.DataFrame, regime: float, cost: str = "latency", quality: str = "top1"
) -> pd.DataFrame:
    """Which of depth or width scaling wins on the cost-quality plane, per resolution.

    The winner is the curve with the higher quality at matched cost, averaged over the cost
    range both curves cover (log-cost interpolation); gaps under `TIE_POINTS` are a tie. A
    resolution without at least two points on both curves, or whose curves cover no common cost
    range, has no winner (None).

    Returns one row per resolution: epochs, image_resolution, base_depth, base_width,
    depth_points, width_points, depth_gain and width_gain (quality points per doubling of cost),
    accuracy_gap (depth minus width at matched cost), winner.

    Raises:
      ValueError: no run in the regime, or no resolution with both curves (e.g. one point).
    """
    curves = scaling_curves(df, regime, cost, quality)
    out = []
    for resolution, at_res in curves.groupby("image_resolution"):
        depth = at_res[at_res["strategy"] == "depth"]
        width = at_res[at_res["strategy"] == "width"]
        gap = _gap_at_matched_cost(depth, width)
        if math.isnan(gap):
            winner = None
        elif abs(gap) < TIE_POINTS:
            winner = "tie"
        else:
            winner = "depth" if gap > 0 else "width"
        base = at_res[at_res["is_base"]].iloc[0]
        out.append(
            {
                "epochs": float(regime),
                "image_resolution": resolution,
                "base_depth": base["depth"],
                "base_width": base["width_multiplier"],
                "depth_points": len(depth),
                "width_points": len(width),
                "depth_gain": _gain_per_doubling(depth),
                "width_gain": _gain_per_doubling(width),
                "accuracy_gap": gap,
                "winner": winner,
            }
        )
    table = pd.DataFrame(out)
    table["winner"] = pd.Series([row["winner"] for row in out], dtype=object)
    if table["winner"].isna().all():
        count = len(regime_rows(df, regime, [cost, quality], "compare_scaling"))
        raise ValueError(
            f"compare_scaling: the {regime:g}-epoch regime has {count} run(s) but no resolution "
            "with a base, a deeper and a wider model whose costs overlap; depth and width "
            "scaling cannot be compared."
        )
    return table


def resolution_returns(
    df: pd.DataFrame, cost: str = "latency", quality: str = "top1"
) -> pd.DataFrame:
    """Marginal quality per unit cost as resolution grows, for every model and regime.

    Returns one row per consecutive pair of resolutions of the same (epochs, depth, width):
    from_resolution, to_resolution, delta_quality (points), cost_ratio, gain_per_doubling
    (points per 2x cost), gain_per_cost (points per unit of `cost`); both NaN when the cost grew
    by less than `MIN_COST_RATIO` (a ratio near 1 would turn timing noise into huge returns).

    Raises:
      ValueError: no model was run at two or more resolutions.
    """
    rows = complete_rows(df, [*AXES, cost, quality], "resolution_returns")
    keys = ["epochs", "depth", "width_multiplier"]
    models = rows.groupby([*keys, "image_resolution"], as_index=False)[[cost, quality]].mean()
    out = []
    for key, group in models.groupby(keys):
        group = group.sort_values("image_resolution")
        for (_, a), (_, b) in zip(
            group.iloc[:-1].iterrows(), group.iloc[1:].iterrows(), strict=True
        ):
            ratio = b[cost] / a[cost]
            delta = b[quality] - a[quality]
            grew = ratio >= MIN_COST_RATIO
            out.append(
                {
                    **dict(zip(keys, key, strict=True)),
                    "from_resolution": a["image_resolution"],
                    "to_resolution": b["image_resolution"],
                    "delta_quality": delta,
                    "cost_ratio": ratio,
                    "gain_per_doubling": delta / math.log2(ratio) if grew else math.nan,
                    "gain_per_cost": delta / (b[cost] - a[cost]) if grew else math.nan,
                }
            )
    if not out:
        resolutions = sorted(rows["image_resolution"].unique().tolist())
        raise ValueError(
            "resolution_returns needs a model (depth, width, epochs) run at two or more "
            f"resolutions; the table has resolutions {resolutions} with no model at more than one."
        )
    return pd.DataFrame(out)
