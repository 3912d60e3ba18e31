"""`recommend`: a plain-language report of which axis to scale, computed from a results table."""

import numpy as np
import pandas as pd

from rsjax.analysis.checks import complete_rows
from rsjax.analysis.frontier import pareto_frontier
from rsjax.analysis.scaling import AXES, TIE_POINTS, compare_scaling, regimes, resolution_returns


def _regime_line(table: pd.DataFrame, regime: float) -> tuple[str, str | None]:
    """One line on depth versus width in a regime, and the axis it recommends (or None)."""
    decided = table[table["winner"].isin(["depth", "width"])]
    per_res = "; ".join(
        f"{int(r.image_resolution)} px: {r.winner}"
        + ("" if np.isnan(r.accuracy_gap) else f" ({r.accuracy_gap:+.2f} pts depth-width)")
        for r in table.itertuples()
        if pd.notna(r.winner)
    )
    if decided.empty:
        return f"- {regime:g} epochs: depth and width scaling tie ({per_res}).", None
    counts = decided["winner"].value_counts()
    axis = counts.index[0] if len(counts) == 1 or counts.iloc[0] > counts.iloc[1] else None
    if axis is None:
        mean_gap = decided["accuracy_gap"].mean()
        axis = "depth" if mean_gap > 0 else "width"
        verdict = f"split by resolution; on average scale {axis} ({mean_gap:+.2f} pts)"
    else:
        verdict = f"scale {axis} (wins at {counts.iloc[0]} of {len(table)} resolutions)"
    return f"- {regime:g} epochs: {verdict}. Per resolution at matched cost: {per_res}.", axis


def recommend(df: pd.DataFrame, cost: str = "latency", quality: str = "top1") -> str:
    """Which axis to scale in each training regime, from the numbers in `df`.

    Depth versus width (Strategy #1) per regime from `compare_scaling`; resolution (Strategy #2)
    from `resolution_returns` (median over models of the quality gained per doubling of cost,
    for each resolution step); and the cost-quality frontier of each regime. Regimes that cannot
    be compared are said so, not skipped silently.
    """
    rows = complete_rows(df, [*AXES, cost, quality], "recommend")
    found = regimes(rows)
    lines = [
        f"Scaling report: {len(rows)} runs, regimes {', '.join(f'{r:g}' for r in found)} epochs, "
        f"resolutions {', '.join(str(int(r)) for r in sorted(rows['image_resolution'].unique()))}"
        f" px; quality = {quality}, cost = {cost}.",
        "",
        "Depth or width (Strategy #1):",
    ]
    axes = {}
    for regime in found:
        try:
            line, axes[regime] = _regime_line(compare_scaling(rows, regime, cost, quality), regime)
        except ValueError as e:
            line = f"- {regime:g} epochs: not comparable ({e})"
        lines.append(line)
    chosen = [(r, a) for r, a in axes.items() if a is not None]
    if len(chosen) >= 2:
        if len({a for _, a in chosen}) > 1:
            lines.append(
                "  The better axis depends on the training length: "
                + ", ".join(f"{a} at {r:g} epochs" for r, a in chosen)
                + "."
            )
        else:
            lines.append(f"  The same axis ({chosen[0][1]}) wins in every comparable regime.")

    lines += ["", "Resolution (Strategy #2):"]
    try:
        returns = resolution_returns(rows, cost, quality)
        for regime, group in returns.groupby("epochs"):
            steps = group.groupby(["from_resolution", "to_resolution"])["gain_per_doubling"]
            medians = steps.median().dropna()
            if medians.empty:
                lines.append(f"- {regime:g} epochs: the cost barely grows with resolution.")
                continue
            text = ", ".join(f"{int(a)}->{int(b)} px {g:+.2f}" for (a, b), g in medians.items())
            trend = ""
            if len(medians) >= 2:
                falling = medians.iloc[-1] < medians.iloc[0] - TIE_POINTS
                trend = (
                    " Returns fall as resolution grows: raise it slowly."
                    if falling
                    else " Returns do not fall over this range: higher resolution still pays."
                )
            lines.append(f"- {regime:g} epochs: pts per 2x {cost}: {text}.{trend}")
    except ValueError as e:
        lines.append(f"- not comparable ({e})")

    lines += ["", f"Pareto frontier ({quality} against {cost}):"]
    for regime in found:
        at = rows[np.isclose(rows["epochs"].astype(float), regime)]
        front = pareto_frontier(at, cost, quality)
        points = " -> ".join(f"{_label(r)} ({r[quality]:.2f})" for _, r in front.iterrows())
        lines.append(f"- {regime:g} epochs: {points}")
    return "\n".join(lines)


def _label(row: pd.Series) -> str:
    return f"d{int(row['depth'])}-w{row['width_multiplier']:g}-r{int(row['image_resolution'])}"
