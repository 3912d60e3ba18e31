"""Analysis of sweep results: Pareto frontiers, power-law fits, depth/width/resolution scaling.

Input is a results table from `rsjax.results.collect` (or the paper's own numbers from
`rsjax.analysis.paper`). Quality columns are percentages; cost columns are whatever the table
holds (`latency` in seconds per train step for collected runs). Figures: `rsjax.analysis.plots`.
"""

from rsjax.analysis.frontier import pareto_frontier, speedup_at_matched_accuracy
from rsjax.analysis.paper import table7, table7_results
from rsjax.analysis.power_law import (
    PowerLawFit,
    TrendBreak,
    fit_power_law,
    fit_power_law_per_regime,
    trend_break,
)
from rsjax.analysis.report import recommend
from rsjax.analysis.scaling import (
    compare_scaling,
    regime_quality,
    regimes,
    resolution_returns,
    resolution_steps,
    scaling_curves,
)

__all__ = [
    "PowerLawFit",
    "TrendBreak",
    "compare_scaling",
    "fit_power_law",
    "fit_power_law_per_regime",
    "pareto_frontier",
    "recommend",
    "regime_quality",
    "regimes",
    "resolution_returns",
    "resolution_steps",
    "scaling_curves",
    "speedup_at_matched_accuracy",
    "table7",
    "table7_results",
    "trend_break",
]
