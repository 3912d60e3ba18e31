"""Replicate runs (seeds) and confidence intervals for the scaling analysis.

A model point is one (epochs, depth, width_multiplier, image_resolution); its replicates are the
runs that differ only in their seed. Every comparison the analysis makes (depth minus width at
matched cost, the change from one resolution to the next, a frontier point) is a linear contrast
sum_m w_m * mean_m of model means, so its interval is a t interval:

  estimate +- t(level, dof) * s * sqrt(sum_m w_m^2 / n_m)

with s the seed-to-seed standard deviation pooled over every model point of the regime that has
two or more seeds (dof = sum of (n_m - 1)). Pooling assumes the seed noise is about the same for
every model of a regime; it gives intervals with usable degrees of freedom from 2-3 seeds per
point, where a per-model interval (dof 1-2) would be uselessly wide and a bootstrap over 2-3
seeds would undercover. Costs (latency) are taken at their means, as fixed. With one seed per
point there is no noise estimate: the interval is NaN and nothing is called a winner.
"""

import dataclasses
import math
from collections.abc import Mapping

import numpy as np
import pandas as pd
from scipy import stats

MODEL = ("epochs", "depth", "width_multiplier", "image_resolution")
LEVEL = 0.95


@dataclasses.dataclass(frozen=True)
class Noise:
    """Pooled seed-to-seed standard deviation `sd` (quality points) with `dof` degrees of
    freedom; dof 0 (sd NaN) when no model point has two seeds."""

    sd: float
    dof: int

    def t_value(self, level: float = LEVEL) -> float:
        return float(stats.t.ppf(0.5 + level / 2, self.dof)) if self.dof > 0 else math.nan

    def half_width(self, n, level: float = LEVEL):
        """Half-width of the `level` interval of a mean over `n` replicates (n may be an array
        or Series; NaN without a noise estimate)."""
        return self.t_value(level) * self.sd / np.sqrt(n)


@dataclasses.dataclass(frozen=True)
class Estimate:
    """A contrast's value and its `level` confidence interval [low, high] (NaN: unknown)."""

    value: float
    low: float
    high: float

    @property
    def excludes_zero(self) -> bool:
        return bool(self.low > 0 or self.high < 0)  # False when the interval is NaN

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def __str__(self) -> str:
        if math.isnan(self.low):
            return f"{self.value:+.2f} (no interval: one seed per model)"
        return f"{self.value:+.2f} [{self.low:+.2f}, {self.high:+.2f}]"


def model_means(
    rows: pd.DataFrame, quality: str, cost: str | None = None, keys=MODEL
) -> pd.DataFrame:
    """One row per model point: `keys`, mean `quality` (and `cost`), `n` (its replicates), `sd`.

    Rows of one model point must be replicates: when the table has `replicate_id` (the run's
    config without its seed), one model point with two ids is an error naming them.
    """
    keys = list(keys)
    if "replicate_id" in rows.columns and rows["replicate_id"].notna().any():
        ids = rows.groupby(keys)["replicate_id"].nunique()
        mixed = ids[ids > 1]
        if not mixed.empty:
            raise ValueError(
                f"runs of one model point {dict(zip(keys, mixed.index[0], strict=True))} differ "
                "in more than their seed (several replicate ids); give them distinct epochs, "
                "depth, width or resolution, or analyse them separately."
            )
    columns = [quality] + ([cost] if cost else [])
    grouped = rows.groupby(keys)
    out = grouped[columns].mean()
    out["n"] = grouped[quality].count()
    out["sd"] = grouped[quality].std(ddof=1)
    return out.reset_index()


def pooled_noise(means: pd.DataFrame) -> Noise:
    """The seed noise pooled over the model points of `model_means` that have two or more seeds."""
    replicated = means[means["n"] >= 2]
    dof = int((replicated["n"] - 1).sum())
    if dof == 0:
        return Noise(math.nan, 0)
    variance = float(((replicated["n"] - 1) * replicated["sd"] ** 2).sum() / dof)
    return Noise(math.sqrt(variance), dof)


def contrast(
    weights: Mapping[int, float],
    means: pd.DataFrame,
    quality: str,
    noise: Noise,
    level: float = LEVEL,
) -> Estimate:
    """sum_m weights[m] * means.loc[m, quality] (labels of `model_means`), with its interval."""
    value = sum(w * float(means.loc[m, quality]) for m, w in weights.items())
    spread = math.sqrt(sum(w * w / float(means.loc[m, "n"]) for m, w in weights.items()))
    half = noise.t_value(level) * noise.sd * spread
    return Estimate(float(value), value - half, value + half)


def linear_weights(function, labels: list[int]) -> dict[int, float]:
    """The weights of a function that is linear in the qualities of the models `labels`:
    `function(values)` is evaluated on each unit vector (values: {label: quality})."""
    weights = {}
    for label in labels:
        weights[label] = float(function({m: float(m == label) for m in labels}))
    return {m: w for m, w in weights.items() if not np.isclose(w, 0.0, atol=1e-12)}
