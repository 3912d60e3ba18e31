"""`recommend`: a plain-language report of which axis to scale, computed from a results table.

Every claim it prints comes with its interval (`rsjax.analysis.intervals`): an axis is named the
winner only where the interval of its advantage excludes zero, and "no clear winner" otherwise.
"""

import math

import pandas as pd

from rsjax.analysis import intervals
from rsjax.analysis.checks import complete_rows
from rsjax.analysis.frontier import pareto_frontier
from rsjax.analysis.scaling import (
    AXES,
    compare_scaling,
    epochs_label,
    regime_quality,
    regime_rows,
    regimes,
    resolution_steps,
)


def _interval(low: float, high: float) -> str:
    return "" if math.isnan(low) else f" [{low:+.2f}, {high:+.2f}]"


def _depth_or_width(table: pd.DataFrame, regime: float) -> tuple[str, str | None]:
    """One line on depth versus width in a regime, and the axis it recommends (or None)."""
    compared = table[table["winner"].notna()]
    per_res = "; ".join(
        f"{int(r.image_resolution)} px: {r.accuracy_gap:+.2f}{_interval(r.gap_low, r.gap_high)}"
        + ("" if r.winner == "unclear" else f" {r.winner}")
        for r in compared.itertuples()
    )
    clear = compared[compared["winner"].isin(["depth", "width"])]
    axes = sorted(set(clear["winner"]))
    if compared["gap_low"].isna().all():
        verdict, axis = "no clear winner (one seed per model: no interval)", None
    elif not axes:
        verdict, axis = "no clear winner (every interval includes zero)", None
    elif len(axes) == 2:
        verdict, axis = "depends on the resolution (clear winners of both axes)", None
    else:
        axis = axes[0]
        verdict = f"scale {axis} (clear at {len(clear)} of {len(compared)} resolutions)"
    label = epochs_label(regime)
    return f"- {label}: {verdict}. Depth minus width at matched cost: {per_res}.", axis


def recommend(df: pd.DataFrame, cost: str = "latency", quality: str = "auto") -> str:
    """Which axis to scale in each training regime, from the numbers in `df`.

    Depth versus width (Strategy #1) per regime from `compare_scaling`; resolution (Strategy #2)
    from `resolution_steps` (the change from each resolution to the next, averaged over models,
    with the change of that change: do returns fall?); and the cost-quality frontier of each
    regime through model means. Each regime's quality is `regime_quality`'s. Regimes that cannot
    be compared are said so, not skipped silently.
    """
    rows = complete_rows(df, [*AXES, cost], "recommend")
    found = regimes(rows)
    seeds = rows.groupby(list(intervals.MODEL)).size()
    lines = [
        f"Scaling report: {len(rows)} runs of {len(seeds)} model points ("
        + (f"{seeds.min()}" if seeds.min() == seeds.max() else f"{seeds.min()}-{seeds.max()}")
        + (" seed" if seeds.max() == 1 else " seeds")
        + f" each), regimes {', '.join(epochs_label(r) for r in found)}, "
        f"resolutions {', '.join(str(int(r)) for r in sorted(rows['image_resolution'].unique()))}"
        f" px; cost = {cost}.",
        f"Intervals: {intervals.LEVEL:.0%} t intervals from the seed-to-seed noise pooled over "
        "each regime's model points; a winner is named only where its interval excludes zero.",
        "",
        "Quality compared, per regime:",
    ]
    chosen = {}
    for regime in found:
        chosen[regime] = regime_quality(regime_rows(rows, regime, [], "recommend"), quality)
        lines.append(f"- {epochs_label(regime)}: {chosen[regime][1]}")

    lines += ["", "Depth or width (Strategy #1):"]
    axes = {}
    for regime in found:
        column = chosen[regime][0]
        try:
            line, axes[regime] = _depth_or_width(
                compare_scaling(rows, regime, cost, column), regime
            )
        except ValueError as e:
            line = f"- {epochs_label(regime)}: not comparable ({e})"
        lines.append(line)
    clear = [(r, a) for r, a in axes.items() if a is not None]
    if len(clear) >= 2:
        if len({a for _, a in clear}) > 1:
            lines.append(
                "  The better axis depends on the training length: "
                + ", ".join(f"{a} at {epochs_label(r)}" for r, a in clear)
                + "."
            )
        else:
            lines.append(f"  The same axis ({clear[0][1]}) wins in every regime with a winner.")

    lines += ["", "Resolution (Strategy #2), the change to the next resolution (mean over models):"]
    for regime in found:
        lines.append(_resolution_line(rows, regime, cost, chosen[regime][0]))

    lines += ["", "Fit: train minus test accuracy (mean over model points; overfitting grows it):"]
    for regime in found:
        lines.append(_fit_line(rows, regime, chosen[regime][0]))

    lines += ["", f"Pareto frontier ({cost} against the model means, +- interval half-width):"]
    for regime in found:
        column = chosen[regime][0]
        lines.append(f"- {epochs_label(regime)}: {_frontier_text(rows, regime, cost, column)}")
    return "\n".join(lines)


def _resolution_line(rows: pd.DataFrame, regime: float, cost: str, quality: str) -> str:
    label = epochs_label(regime)
    try:
        at = regime_rows(rows, regime, [cost, quality], "recommend")
        steps = resolution_steps(at, cost, quality)
    except ValueError as e:
        return f"- {label}: not comparable ({e})"
    text = ", ".join(
        f"{int(s.from_resolution)}->{int(s.to_resolution)} px {s.delta_quality:+.2f} pts"
        f"{_interval(s.delta_low, s.delta_high)} at {s.cost_ratio:.2f}x {cost}"
        for s in steps.itertuples()
    )
    trend = ""
    if len(steps) >= 2:
        last = steps.iloc[-1]
        change = intervals.Estimate(
            last["change_from_first"], last["change_low"], last["change_high"]
        )
        if not change.excludes_zero:
            trend = f" No clear change in returns over this range ({change})."
        elif change.value < 0:
            trend = f" Returns fall as resolution grows ({change} pts): raise it slowly."
        else:
            trend = f" Returns grow with resolution ({change} pts): higher resolution pays."
    return f"- {label}: {text}.{trend}"


TRAIN_QUALITY = {"top1": "train_top1", "raw_top1": "train_raw_top1"}


def _fit_line(rows: pd.DataFrame, regime: float, quality: str) -> str:
    """Train and test accuracy of a regime's runs (same weights, EMA or raw, as `quality`), and
    their difference with its interval: the mean over model points of each point's mean gap."""
    label, train = epochs_label(regime), TRAIN_QUALITY.get(quality)
    at = regime_rows(rows, regime, [quality], "recommend")
    if train is None or train not in at.columns or at[train].isna().all():
        return f"- {label}: no train accuracy in the table (the runs had no train_eval_split)."
    at = at[at[train].notna()].assign(gap=lambda t: t[train] - t[quality])
    means = intervals.model_means(at, "gap").set_index(list(intervals.MODEL))
    weights = {m: 1.0 / len(means) for m in means.index}
    gap = intervals.contrast(weights, means, "gap", intervals.pooled_noise(means.reset_index()))
    widest = means["gap"].idxmax()
    return (
        f"- {label}: train {at[train].mean():.2f}%, test {at[quality].mean():.2f}%; train minus "
        f"test {gap} pts over {len(means)} model points (largest {means['gap'].max():+.2f} at "
        f"d{int(widest[1])}-w{widest[2]:g}-r{int(widest[3])})."
    )


def _frontier_text(rows: pd.DataFrame, regime: float, cost: str, quality: str) -> str:
    at = regime_rows(rows, regime, [cost, quality], "recommend")
    means = intervals.model_means(at, quality, cost)
    means["half_width"] = intervals.pooled_noise(means).half_width(means["n"])
    front = pareto_frontier(means, cost, quality)
    return " -> ".join(
        f"{_label(r)} ({r[quality]:.2f}"
        + ("" if math.isnan(r["half_width"]) else f" +- {r['half_width']:.2f}")
        + ")"
        for _, r in front.iterrows()
    )


def _label(row: pd.Series) -> str:
    return f"d{int(row['depth'])}-w{row['width_multiplier']:g}-r{int(row['image_resolution'])}"
