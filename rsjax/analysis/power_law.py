"""Power-law fits of error against compute (Figure 2) and the check for where the trend breaks.

A power law y = prefactor * x**exponent is a straight line in log-log space, so it is fitted by
least squares on (log x, log y); R^2 is that of the log-log fit.
"""

import dataclasses
import math

import numpy as np
import pandas as pd
from scipy import stats

from rsjax.analysis.checks import complete_rows


@dataclasses.dataclass(frozen=True)
class PowerLawFit:
    """y = prefactor * x**exponent, fitted on `n` points; `r2` in log-log space; the exponent's
    95% t interval [exponent_low, exponent_high] (n - 2 degrees of freedom; NaN for n < 3)."""

    exponent: float
    prefactor: float
    r2: float
    n: int
    exponent_low: float = math.nan
    exponent_high: float = math.nan

    def predict(self, x) -> np.ndarray:
        return self.prefactor * np.asarray(x, dtype=float) ** self.exponent

    @property
    def exponent_text(self) -> str:
        """ "-0.123 [-0.150, -0.096]" (the interval left out when unknown)."""
        if math.isnan(self.exponent_low):
            return f"{self.exponent:.3f}"
        return f"{self.exponent:.3f} [{self.exponent_low:.3f}, {self.exponent_high:.3f}]"

    def __str__(self) -> str:
        return f"y = {self.prefactor:.4g} * x^{self.exponent_text} (R^2 {self.r2:.3f}, n={self.n})"


@dataclasses.dataclass(frozen=True)
class TrendBreak:
    """Result of `trend_break`: whether the largest points leave the power law of the smaller.

    detected: the two-segment fit is significantly better (p < `alpha`) and the points past
      `break_x` lie above the low segment's extrapolation (returns diminish).
    break_x: the first x of the upper segment (NaN when there are too few points to test).
    below / above: power-law fits of the points below and from `break_x` on.
    excess: mean log10(observed / extrapolated from `below`) over the upper points (> 0: worse
      than the low-x trend predicts).
    p_value: F-test of two segments against one line, Bonferroni-corrected for the number of
      splits tried (the best of many splits would otherwise look significant on a straight line).
    """

    detected: bool
    break_x: float
    below: PowerLawFit | None
    above: PowerLawFit | None
    excess: float
    p_value: float


def _fit_logs(log_x: np.ndarray, log_y: np.ndarray) -> tuple[float, float, float]:
    """(slope, intercept, sum of squared residuals) of the least-squares line (`log_x` must
    not be constant)."""
    dx = log_x - log_x.mean()
    slope = float(dx @ (log_y - log_y.mean()) / (dx @ dx))
    intercept = float(log_y.mean() - slope * log_x.mean())
    residuals = log_y - (slope * log_x + intercept)
    return float(slope), float(intercept), float(residuals @ residuals)


def _to_fit(
    slope: float, intercept: float, sse: float, log_y: np.ndarray, log_x: np.ndarray | None = None
) -> PowerLawFit:
    total = float(((log_y - log_y.mean()) ** 2).sum())
    r2 = 1.0 - sse / total if total > 0 else 1.0
    low = high = math.nan
    n = len(log_y)
    if log_x is not None and n >= 3:
        se = math.sqrt(sse / (n - 2) / float(((log_x - log_x.mean()) ** 2).sum()))
        half = float(stats.t.ppf(0.975, n - 2)) * se
        low, high = slope - half, slope + half
    return PowerLawFit(slope, float(10**intercept), r2, n, low, high)


def _logs(df: pd.DataFrame, x: str, y: str, what: str, minimum: int) -> tuple[np.ndarray, ...]:
    rows = complete_rows(df, [x, y], what, minimum=minimum)
    values = rows[[x, y]].to_numpy(float)
    if (values <= 0).any():
        raise ValueError(f"{what}: {x} and {y} must be positive for a log-log fit.")
    order = np.argsort(values[:, 0], kind="stable")
    return np.log10(values[order, 0]), np.log10(values[order, 1])


def fit_power_law(df: pd.DataFrame, x: str = "flops", y: str = "error") -> PowerLawFit:
    """Least-squares fit of log10(y) = exponent * log10(x) + log10(prefactor) over the rows."""
    log_x, log_y = _logs(df, x, y, "fit_power_law", minimum=2)
    if np.ptp(log_x) == 0:
        raise ValueError(f"fit_power_law: every row has the same {x}; nothing to fit.")
    return _to_fit(*_fit_logs(log_x, log_y), log_y, log_x)


def fit_power_law_per_regime(
    df: pd.DataFrame, x: str = "flops", y: str = "error", regime: str = "epochs"
) -> dict[float, tuple[PowerLawFit, "TrendBreak"]]:
    """{regime: (fit, trend break)}: each regime's power law on its own (points trained for
    different lengths lie on different curves), fitted to its points below a detected
    `trend_break` (all of them when none is). Regimes with fewer than two distinct `x` are left
    out."""
    rows = complete_rows(df, [x, y, regime], "fit_power_law_per_regime")
    fits = {}
    for value, group in rows.groupby(regime):
        if group[x].nunique() < 2:
            continue
        brk = trend_break(group, x, y)
        fitted = group[group[x] < brk.break_x] if brk.detected else group
        fits[float(value)] = (fit_power_law(fitted, x, y), brk)
    return fits


def trend_break(
    df: pd.DataFrame,
    x: str = "flops",
    y: str = "error",
    min_points: int = 3,
    alpha: float = 0.01,
) -> TrendBreak:
    """Finds where the larger-x points leave the smaller-x power law (Figure 2's observation).

    Every split with at least `min_points` on each side is tried; the split with the smallest
    total squared residual of two separate log-log lines is kept and tested against one line
    (F-test, 2 extra parameters, Bonferroni-corrected over the splits). A break is reported when
    the test is significant at `alpha` and the upper points lie above the lower fit's
    extrapolation. Fewer than 2 * `min_points` points (or 5) are not tested: detected False and
    p_value NaN.
    """
    log_x, log_y = _logs(df, x, y, "trend_break", minimum=2)
    n = len(log_x)
    if n < max(2 * min_points, 5):  # two segments of min_points, and an F-test with dof > 0
        return TrendBreak(False, math.nan, None, None, math.nan, math.nan)
    one_sse = _fit_logs(log_x, log_y)[2]
    best, tried = None, 0
    for split in range(min_points, n - min_points + 1):
        if (
            log_x[split] == log_x[split - 1]
            or log_x[0] == log_x[split - 1]
            or log_x[split] == log_x[-1]
        ):
            continue  # never split points of equal x; each segment needs two distinct x
        tried += 1
        low = _fit_logs(log_x[:split], log_y[:split])
        high = _fit_logs(log_x[split:], log_y[split:])
        if best is None or low[2] + high[2] < best[0]:
            best = (low[2] + high[2], split, low, high)
    if best is None:
        return TrendBreak(False, math.nan, None, None, math.nan, math.nan)
    two_sse, split, low, high = best
    dof = n - 4
    scale = max(two_sse, 1e-12 * max(one_sse, 1e-30))
    f_stat = ((one_sse - two_sse) / 2) / (scale / dof) if dof > 0 else 0.0
    p_value = min(1.0, tried * float(stats.f.sf(f_stat, 2, dof))) if dof > 0 else 1.0
    predicted = low[0] * log_x[split:] + low[1]
    excess = float(np.mean(log_y[split:] - predicted))
    return TrendBreak(
        detected=bool(p_value < alpha and excess > 0),
        break_x=float(10 ** log_x[split]),
        below=_to_fit(*low, log_y[:split], log_x[:split]),
        above=_to_fit(*high, log_y[split:], log_x[split:]),
        excess=excess,
        p_value=p_value,
    )
