"""Depth versus width scaling per regime (Strategy #1) and returns of resolution (Strategy #2).

A regime is a number of training epochs (the `epochs` column). Within a regime and resolution
the common base is the shallowest, narrowest model; the depth-scaling curve keeps its width and
grows depth, the width-scaling curve keeps its depth and grows width (Figure 3). Runs of one model
point that differ only in their seed are replicates: the curves go through their means, and every
comparison carries a confidence interval (`rsjax.analysis.intervals`).
"""

import itertools
import math

import numpy as np
import pandas as pd

from rsjax.analysis import intervals
from rsjax.analysis.checks import complete_rows

AXES = ("depth", "width_multiplier", "image_resolution", "epochs")
# A resolution step whose cost grows less than this has no returns per cost (noise would divide).
MIN_COST_RATIO = 1.05


def regimes(df: pd.DataFrame) -> list[float]:
    """The distinct `epochs` values of `df`, ascending."""
    return sorted(complete_rows(df, ["epochs"], "regimes")["epochs"].unique().tolist())


QUALITY_NAMES = {"top1": "EMA top-1", "raw_top1": "raw top-1"}


def epochs_label(regime: float) -> str:
    """ "1 epoch", "0.1 epochs", "3.5 epochs"."""
    return f"{regime:g} epoch" + ("" if regime == 1 else "s")


def regime_quality(rows: pd.DataFrame, quality: str) -> tuple[str, str]:
    """(column, why) of the quality a regime's runs are compared on.

    quality="auto": EMA top-1 (`top1`, the paper's metric) when every run's EMA is warmed up
    (`ema_warm`, rule in `rsjax.results.lifecycle.ema_is_warm`), raw top-1 otherwise. Any other
    value is used as given.
    """
    if quality != "auto":
        return quality, QUALITY_NAMES.get(quality, quality)
    warm = rows["ema_warm"] if "ema_warm" in rows.columns else pd.Series(dtype=object)
    warm = warm.map({True: True, False: False, "True": True, "False": False})
    if warm.isna().all():
        return "top1", "EMA top-1 (EMA warm-up not recorded)"
    cold = int((warm == False).sum())  # noqa: E712 (NaN is neither)
    if cold == 0:
        return "top1", "EMA top-1 (every run's EMA is warmed up)"
    return "raw_top1", f"raw top-1 (the EMA is not warmed up in {cold} of {len(rows)} runs)"


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
    cost, quality (means over a model's replicates), n (its replicates), half_width (of the
    mean's interval, from the regime's pooled seed noise; NaN with one seed per model), model
    (the point's label, shared by the base's two rows), is_base. The base (the regime's
    shallowest depth at its narrowest width) appears in both; resolutions without a run of it
    are left out.
    """
    return _curves_and_noise(df, regime, cost, quality, "scaling_curves")[0]


def _curves_and_noise(
    df: pd.DataFrame, regime: float, cost: str, quality: str, what: str
) -> tuple[pd.DataFrame, intervals.Noise]:
    """`scaling_curves`'s table and the regime's pooled seed noise, from one pass over the rows
    (`what` names the caller in errors)."""
    rows = regime_rows(df, regime, [cost, quality], what)
    means = intervals.model_means(rows, quality, cost)
    noise = intervals.pooled_noise(means)
    models = means.rename(columns={cost: "cost", quality: "quality"}).assign(
        model=means.index, half_width=noise.half_width(means["n"])
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
    columns = ["epochs", "image_resolution", "strategy", "depth", "width_multiplier", "cost"]
    columns += ["quality", "n", "half_width", "model", "is_base"]
    return pd.concat(curves)[columns].reset_index(drop=True), noise


def _gap_at_matched_cost(depth: pd.DataFrame, width: pd.DataFrame) -> float:
    """Mean (depth - width) quality over the cost range both curves cover (log-cost grid); NaN
    when they cover no common range. Linear in the curves' qualities (costs fixed)."""
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
    df: pd.DataFrame,
    regime: float,
    cost: str = "latency",
    quality: str = "top1",
    level: float = intervals.LEVEL,
) -> pd.DataFrame:
    """Which of depth or width scaling wins on the cost-quality plane, per resolution.

    The gap is depth minus width quality at matched cost, averaged over the cost range both
    curves cover (log-cost interpolation through the model means), with its `level` t interval
    from the regime's pooled seed noise. The winner is the axis the interval favours; "unclear"
    when the interval includes zero or cannot be computed (one seed per model). A resolution
    without two points on both curves over a common cost range has no winner (None).

    Returns one row per resolution: epochs, image_resolution, base_depth, base_width,
    depth_points, width_points, seeds (the fewest replicates of its models), depth_gain and
    width_gain (quality points per doubling of cost), accuracy_gap, gap_low, gap_high, winner.

    Raises:
      ValueError: no run in the regime, or no resolution with both curves (e.g. one point).
    """
    curves, noise = _curves_and_noise(df, regime, cost, quality, "compare_scaling")
    out = []
    for resolution, at_res in curves.groupby("image_resolution"):
        depth = at_res[at_res["strategy"] == "depth"]
        width = at_res[at_res["strategy"] == "width"]
        means = at_res.drop_duplicates("model").set_index("model")

        def gap(values, depth=depth, width=width):
            return _gap_at_matched_cost(
                depth.assign(quality=depth["model"].map(values)),
                width.assign(quality=width["model"].map(values)),
            )

        estimate = intervals.Estimate(math.nan, math.nan, math.nan)
        if not math.isnan(gap(means["quality"])):
            weights = intervals.linear_weights(gap, list(means.index))
            estimate = intervals.contrast(weights, means, "quality", noise, level)
        if math.isnan(estimate.value):
            winner = None
        elif estimate.excludes_zero:
            winner = "depth" if estimate.value > 0 else "width"
        else:
            winner = "unclear"
        base = at_res[at_res["is_base"]].iloc[0]
        out.append(
            {
                "epochs": float(regime),
                "image_resolution": resolution,
                "base_depth": base["depth"],
                "base_width": base["width_multiplier"],
                "depth_points": len(depth),
                "width_points": len(width),
                "seeds": int(means["n"].min()),
                "depth_gain": _gain_per_doubling(depth),
                "width_gain": _gain_per_doubling(width),
                "accuracy_gap": estimate.value,
                "gap_low": estimate.low,
                "gap_high": estimate.high,
                "winner": winner,
            }
        )
    table = pd.DataFrame(out)
    table["winner"] = pd.Series([row["winner"] for row in out], dtype=object)
    if table["winner"].isna().all():
        runs = len(regime_rows(df, regime, [cost, quality], "compare_scaling"))
        raise ValueError(
            f"compare_scaling: the {regime:g}-epoch regime has {runs} run(s) but no "
            "resolution with a base, a deeper and a wider model whose costs overlap; depth and "
            "width scaling cannot be compared."
        )
    return table


def resolution_returns(
    df: pd.DataFrame,
    cost: str = "latency",
    quality: str = "top1",
    level: float = intervals.LEVEL,
) -> pd.DataFrame:
    """What raising the resolution buys, for every model and regime.

    Returns one row per consecutive pair of resolutions of the same (epochs, depth, width):
    from_resolution, to_resolution, delta_quality (points, between the model means) with its
    `level` interval delta_low and delta_high (the regime's pooled seed noise; NaN with one seed
    per model), cost_ratio, gain_per_doubling (points per 2x cost) and gain_per_cost (points per
    unit of `cost`); the two rates are NaN when the cost grew by less than `MIN_COST_RATIO` (a
    ratio near 1 would turn timing noise into huge rates).

    Raises:
      ValueError: no model was run at two or more resolutions.
    """
    rows = complete_rows(df, [*AXES, cost, quality], "resolution_returns")
    keys = ["epochs", "depth", "width_multiplier"]
    out = []
    for _, at_regime in rows.groupby("epochs"):
        means = intervals.model_means(at_regime, quality, cost)
        noise = intervals.pooled_noise(means)
        for key, a, b in _model_steps(means):
            ratio = means.loc[b, cost] / means.loc[a, cost]
            delta = intervals.contrast({b: 1.0, a: -1.0}, means, quality, noise, level)
            grew = ratio >= MIN_COST_RATIO
            out.append(
                {
                    **dict(zip(keys, key, strict=True)),
                    "from_resolution": means.loc[a, "image_resolution"],
                    "to_resolution": means.loc[b, "image_resolution"],
                    "delta_quality": delta.value,
                    "delta_low": delta.low,
                    "delta_high": delta.high,
                    "cost_ratio": ratio,
                    "gain_per_doubling": delta.value / math.log2(ratio) if grew else math.nan,
                    "gain_per_cost": (
                        delta.value / (means.loc[b, cost] - means.loc[a, cost])
                        if grew
                        else math.nan
                    ),
                }
            )
    if not out:
        raise _no_resolution_steps(rows)
    return pd.DataFrame(out)


def _no_resolution_steps(rows: pd.DataFrame) -> ValueError:
    resolutions = sorted(rows["image_resolution"].unique().tolist())
    return ValueError(
        "resolution_returns needs a model (depth, width, epochs) run at two or more "
        f"resolutions; the table has resolutions {resolutions} with no model at more than one."
    )


def _model_steps(means: pd.DataFrame):
    """(model key (epochs, depth, width), label a, label b) for each consecutive pair of
    resolutions a < b of one model in `intervals.model_means` output."""
    for key, group in means.groupby(["epochs", "depth", "width_multiplier"]):
        yield from (
            (key, a, b) for a, b in itertools.pairwise(group.sort_values("image_resolution").index)
        )


def resolution_steps(
    df: pd.DataFrame,
    cost: str = "latency",
    quality: str = "top1",
    level: float = intervals.LEVEL,
) -> pd.DataFrame:
    """Each resolution step of each regime, averaged over the models run at both resolutions.

    Returns one row per (epochs, from_resolution, to_resolution): models (how many),
    delta_quality with its `level` interval delta_low / delta_high (the mean over models of
    their change, points), cost_ratio (geometric mean), and change_from_first with change_low /
    change_high: this step's mean change minus the regime's first step's (negative: returns
    fall as resolution grows; NaN for the first step).

    Raises:
      ValueError: no model was run at two or more resolutions.
    """
    rows = complete_rows(df, [*AXES, cost, quality], "resolution_steps")
    out = []
    for regime, at_regime in rows.groupby("epochs"):
        means = intervals.model_means(at_regime, quality, cost)
        noise = intervals.pooled_noise(means)
        steps: dict[tuple, list[tuple[int, int]]] = {}
        for _, a, b in _model_steps(means):
            step = (means.loc[a, "image_resolution"], means.loc[b, "image_resolution"])
            steps.setdefault(step, []).append((a, b))
        first = None
        for (low_res, high_res), pairs in sorted(steps.items()):
            weights: dict[int, float] = {}
            for a, b in pairs:
                weights[b] = weights.get(b, 0.0) + 1.0 / len(pairs)
                weights[a] = weights.get(a, 0.0) - 1.0 / len(pairs)
            delta = intervals.contrast(weights, means, quality, noise, level)
            change = intervals.Estimate(math.nan, math.nan, math.nan)
            if first is None:
                first = weights
            else:
                difference = dict(weights)
                for m, w in first.items():
                    difference[m] = difference.get(m, 0.0) - w
                change = intervals.contrast(difference, means, quality, noise, level)
            ratios = [means.loc[b, cost] / means.loc[a, cost] for a, b in pairs]
            out.append(
                {
                    "epochs": regime,
                    "from_resolution": low_res,
                    "to_resolution": high_res,
                    "models": len(pairs),
                    "delta_quality": delta.value,
                    "delta_low": delta.low,
                    "delta_high": delta.high,
                    "cost_ratio": float(np.exp(np.mean(np.log(ratios)))),
                    "change_from_first": change.value,
                    "change_low": change.low,
                    "change_high": change.high,
                }
            )
    if not out:
        raise _no_resolution_steps(rows)
    return pd.DataFrame(out)
