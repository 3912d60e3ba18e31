"""The paper's figures from a results table (matplotlib; each returns the Figure, never shows it).

fig2: error against FLOPs, log-log, colour = regime, marker = depth, a power-law fit per regime.
fig3: one panel per epoch regime, quality against cost, depth- and width-scaling lines per
      resolution from a common base, through model means with their intervals as error bars.
fig4: cost-quality Pareto curves per family (ResNet-RS against EfficientNet), optionally over the
      paper's Table 7 points.
table7_figure: the Table 7 view (`rsjax.analysis.paper.table7`) rendered as a table.
`save(fig, out_dir, name)` writes NAME.png and NAME.pdf.
"""

import os

import matplotlib

matplotlib.use("Agg")  # headless: figures are written, never shown

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from etils import epath
from matplotlib import ticker

from rsjax.analysis.checks import complete_rows
from rsjax.analysis.frontier import pareto_frontier
from rsjax.analysis.power_law import fit_power_law_per_regime
from rsjax.analysis.scaling import (
    compare_scaling,
    epochs_label,
    regime_quality,
    regimes,
    scaling_curves,
)

MARKERS = "osD^vP*Xh<>p"
LABELS = {
    "latency": "train step latency (s)",
    "tpuv3_latency_ms": "TPUv3 train step latency (ms, 1024 images)",
    "v100_latency_s": "V100 latency (s)",
    "flops": "FLOPs per image",
    "top1": "top-1 accuracy (%)",
    "raw_top1": "raw top-1 accuracy (%)",
    "error": "top-1 error (%)",
}


def _label(column: str) -> str:
    return LABELS.get(column, column)


def _colors(values) -> dict:
    values = sorted(values)
    cmap = plt.get_cmap("viridis")
    return {v: cmap(i / max(len(values) - 1, 1)) for i, v in enumerate(values)}


def fig2(
    df: pd.DataFrame,
    x: str = "flops",
    y: str = "error",
    fit: bool = True,
    quality: str = "auto",
) -> plt.Figure:
    """Figure 2: `y` against `x` on log-log axes, colour = training regime (epochs), marker =
    depth, with one power law per regime (of its points below a detected trend break) and its
    exponent's 95% interval in the legend. y="error" is 100 minus each regime's quality
    (`regime_quality`: EMA top-1 where warmed up, raw top-1 otherwise)."""
    rows = complete_rows(df, [x, "epochs", "depth"], "fig2", minimum=1)
    if y == "error":
        parts = []
        for _, at in rows.groupby("epochs"):
            column, _ = regime_quality(at, quality)
            parts.append(at.assign(error=100.0 - at[column]))
        rows = pd.concat(parts)
    rows = complete_rows(rows, [y], "fig2")
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    colors = _colors(rows["epochs"].unique())
    markers = {d: MARKERS[i % len(MARKERS)] for i, d in enumerate(sorted(rows["depth"].unique()))}
    for (regime, depth), group in rows.groupby(["epochs", "depth"]):
        ax.scatter(group[x], group[y], color=colors[regime], marker=markers[depth], s=36)
    for depth, marker in markers.items():
        ax.scatter([], [], color="gray", marker=marker, label=f"depth {int(depth)}")
    fits = fit_power_law_per_regime(rows, x, y) if fit else {}
    for regime, color in colors.items():
        at = rows[rows["epochs"] == regime]
        label = epochs_label(regime)
        if regime in fits:
            law, brk = fits[regime]
            xs = np.geomspace(at[x].min(), at[x].max(), 50)
            label += f": exponent {law.exponent_text}"
            ax.plot(xs, law.predict(xs), "--", color=color, lw=1)
            if brk.detected:
                ax.axvline(brk.break_x, color=color, lw=0.8, ls=":")
                label += f", trend break at {brk.break_x:.3g}"
        ax.scatter([], [], color=color, marker="o", label=label)
    ax.set(xscale="log", yscale="log", xlabel=_label(x), ylabel=_label(y))
    for axis in (ax.xaxis, ax.yaxis):  # minor labels (3x10^6, 4x10^6, ...) overlap
        axis.set_minor_formatter(ticker.NullFormatter())
    ax.set_title("Error against FLOPs, one power law per regime (Figure 2)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def fig3(
    df: pd.DataFrame, cost: str = "latency", quality: str = "auto", regime_list=None
) -> plt.Figure:
    """Figure 3: per regime, depth scaling (solid) and width scaling (dashed) at each resolution
    (colour) through the model means, error bars their intervals; the legend names a winner per
    resolution only where `compare_scaling`'s interval is clear. Each panel's quality is
    `regime_quality`'s, named in its axis label."""
    found = regimes(complete_rows(df, ["epochs"], "fig3")) if regime_list is None else regime_list
    fig, axes = plt.subplots(1, len(found), figsize=(4.6 * len(found), 4.2), squeeze=False)
    for ax, regime in zip(axes[0], found, strict=True):
        at = df[np.isclose(df["epochs"].astype(float), float(regime))]
        column, _ = regime_quality(at, quality)
        curves = scaling_curves(df, regime, cost, column)
        try:
            winners = compare_scaling(df, regime, cost, column).set_index("image_resolution")
        except ValueError:
            winners = None
        colors = _colors(curves["image_resolution"].unique())
        for (res, strategy), curve in curves.groupby(["image_resolution", "strategy"]):
            winner = None if winners is None else winners["winner"].get(res)
            label = f"{int(res)} px {strategy}" + (" (wins)" if winner == strategy else "")
            ax.errorbar(
                curve["cost"],
                curve["quality"],
                yerr=curve["half_width"].fillna(0.0),
                ls="-" if strategy == "depth" else "--",
                marker="o" if strategy == "depth" else "s",
                color=colors[res],
                capsize=2,
                label=label,
            )
        ax.set(xscale="log", xlabel=_label(cost), ylabel=_label(column))
        ax.set_title(epochs_label(regime))
        ax.legend(fontsize=7)
    fig.suptitle("Depth (solid) vs width (dashed) scaling (Figure 3)")
    fig.tight_layout()
    return fig


def fig4(
    df: pd.DataFrame | None = None,
    cost: str = "tpuv3_latency_ms",
    quality: str = "top1",
    paper_overlay: bool = False,
    quality_label: str | None = None,
) -> plt.Figure:
    """Figure 4: Pareto curve of each family in `df` (default: the paper's Table 7), points
    annotated depth-resolution; `paper_overlay` adds Table 7's points in grey; `quality_label`
    replaces the quality axis's label (say where its values come from)."""
    from rsjax.analysis.paper import table7_results

    df = table7_results() if df is None else df
    rows = complete_rows(df, [cost, quality], "fig4")
    families = rows["family"] if "family" in rows.columns else pd.Series("results", rows.index)
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    if paper_overlay:
        paper = table7_results()
        if cost in paper.columns:
            ax.scatter(paper[cost], paper[quality], color="0.75", s=20, label="paper Table 7")
    for i, (family, group) in enumerate(rows.groupby(families)):
        front = pareto_frontier(group, cost, quality)
        ax.scatter(group[cost], group[quality], marker=MARKERS[i], s=24)
        ax.plot(front[cost], front[quality], marker=MARKERS[i], label=str(family))
        for _, r in front.iterrows():
            label = _point_label(r)
            if label:
                ax.annotate(
                    label, (r[cost], r[quality]), fontsize=6, xytext=(3, -8),
                    textcoords="offset points",
                )  # fmt: skip
    ax.set(xscale="log", xlabel=_label(cost), ylabel=quality_label or _label(quality))
    ax.set_title("Speed-accuracy Pareto curves (Figure 4)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def table7_figure(table: pd.DataFrame | None = None) -> plt.Figure:
    """The Table 7 view (default: the paper's numbers with recomputed speed-ups) as a figure."""
    from rsjax.analysis.paper import table7

    table = table7() if table is None else table
    complete_rows(table, ["ours", "theirs"], "table7")
    shown = table.copy()
    for column in shown.columns:
        if column.startswith("speedup_"):
            shown[column] = [f"{v:.1f}x" for v in shown[column]]
    fig, ax = plt.subplots(figsize=(1.3 * len(shown.columns) + 1, 0.35 * len(shown) + 1))
    ax.axis("off")
    cells = [[f"{v:g}" if isinstance(v, float) else str(v) for v in row] for row in shown.values]
    ax.table(cellText=cells, colLabels=list(shown.columns), loc="center").auto_set_font_size(True)
    ax.set_title("Speed-ups at matched accuracy (Table 7)")
    fig.tight_layout()
    return fig


def save(fig: plt.Figure, out_dir: str | os.PathLike, name: str) -> list[epath.Path]:
    """Writes OUT_DIR/NAME.png and OUT_DIR/NAME.pdf; returns their paths and closes `fig`."""
    out_dir = epath.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for suffix in ("png", "pdf"):
        path = out_dir / f"{name}.{suffix}"
        with path.open("wb") as f:
            fig.savefig(f, format=suffix, dpi=150)
        paths.append(path)
    plt.close(fig)
    return paths


def _point_label(row: pd.Series) -> str | None:
    """ "depth-resolution" for a ResNet ("50-160"), else the run's name ("efficientnet_b0")."""
    depth, resolution = row.get("depth"), row.get("image_resolution")
    if pd.notna(depth) and pd.notna(resolution):
        return f"{int(depth)}-{int(resolution)}"
    name = row.get("name")
    return str(name) if pd.notna(name) else None
