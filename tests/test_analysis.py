"""rsjax.analysis: frontiers, Table 7 speed-ups, power-law fits, scaling, report and plots."""

import itertools
import math
import re

import numpy as np
import pandas as pd
import pytest

from rsjax import analysis, cli
from rsjax.analysis import plots

# The speed-ups the paper prints in bold in Table 7 (ResNet-RS model: (TPUv3, V100)).
PAPER_BOLD_SPEEDUPS = {
    "ResNet-RS-101-160": (1.8, 2.1),
    "ResNet-RS-152-224": (2.2, 2.7),
    "ResNet-RS-152-256": (1.7, 2.3),
    "ResNet-RS-270-256": (1.9, 2.2),
    "ResNet-RS-350-256": (2.7, 3.3),
}


def synthetic_grid(
    long_winner="depth", short_winner="width", flat_resolution=False, seeds=3, noise=0.1
):
    """A Figure 3 grid whose winners are known: in the 3.5-epoch regime `long_winner` gains
    more accuracy per latency, in the 0.1-epoch regime `short_winner` does. Each model point has
    `seeds` replicates with Gaussian seed noise of `noise` points."""
    rng = np.random.default_rng(0)
    rows = []
    for epochs, depth, width, res, seed in itertools.product(
        (0.1, 3.5), (26, 50, 101), (0.125, 0.25, 0.5), (24, 32, 40), range(seeds)
    ):
        latency = 0.01 * (depth / 26) * (width / 0.125) * (res / 24) ** 2
        winner = long_winner if epochs == 3.5 else short_winner
        gain = {"depth": math.log2(depth / 26), "width": math.log2(width / 0.125)}
        top1 = 80 + 2 * gain[winner] + 0.5 * gain["depth" if winner == "width" else "width"]
        top1 += 0 if flat_resolution else 3 * math.log2(res / 24) ** 0.5
        top1 += rng.normal(0, noise)
        rows.append(dict(epochs=epochs, depth=depth, width_multiplier=width, image_resolution=res,
                         seed=seed, latency=latency, top1=top1, error=100 - top1,
                         family="resnet_rs", flops=latency * 1e9))  # fmt: skip
    return pd.DataFrame(rows)


def test_table7_view_reproduces_the_papers_speedups():
    table = analysis.table7().set_index("ours")
    assert set(table.index) == set(PAPER_BOLD_SPEEDUPS)
    for model, (tpu, v100) in PAPER_BOLD_SPEEDUPS.items():
        assert table.loc[model, "speedup_TPUv3"] == pytest.approx(tpu, abs=0.1)
        assert table.loc[model, "speedup_V100"] == pytest.approx(v100, abs=0.1)
    assert round(table["speedup_TPUv3"].min(), 1) == 1.7
    assert round(table["speedup_TPUv3"].max(), 1) == 2.7
    assert round(table["speedup_V100"].min(), 1) == 2.1
    assert round(table["speedup_V100"].max(), 1) == 3.3


def test_speedup_nearest_pairs_and_interpolation():
    df = analysis.table7_results()
    pairs = analysis.speedup_at_matched_accuracy(df, cost="tpuv3_latency_ms")
    b2 = pairs[pairs["theirs"] == "EfficientNet-B2"].iloc[0]
    assert b2["ours"] == "ResNet-RS-101-160" and b2["speedup"] == pytest.approx(210 / 120)
    # Interpolated: RS-101-160 (80.3%) against B2 (80.1%, 210 ms) - B3 (81.6%, 340 ms).
    interp = analysis.speedup_at_matched_accuracy(
        df, cost="tpuv3_latency_ms", method="interpolate"
    ).set_index("ours")
    expected = math.exp(math.log(210) + (0.2 / 1.5) * math.log(340 / 210)) / 120
    assert interp.loc["ResNet-RS-101-160", "speedup"] == pytest.approx(expected, rel=1e-3)
    with pytest.raises(ValueError, match="no rows of that family"):
        analysis.speedup_at_matched_accuracy(df, theirs="vit")


def test_pareto_frontier_matches_brute_force_with_ties():
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"latency": rng.integers(1, 8, 60), "top1": rng.integers(70, 80, 60)})
    front = analysis.pareto_frontier(df)
    points = set(zip(df["latency"], df["top1"], strict=True))
    dominated = {
        (c, q) for c, q in points
        if any(c2 <= c and q2 >= q and (c2, q2) != (c, q) for c2, q2 in points)
    }  # fmt: skip
    got = list(zip(front["latency"], front["top1"], strict=True))
    assert sorted(got) == sorted(points - dominated)
    assert len(got) == len(set(got))  # duplicates of one point appear once
    assert list(front["latency"]) == sorted(front["latency"])


def test_fit_power_law_recovers_a_known_exponent():
    rng = np.random.default_rng(1)
    flops = np.geomspace(1e8, 1e11, 40)
    df = pd.DataFrame({"flops": flops, "error": 250 * flops**-0.12 * rng.lognormal(0, 0.01, 40)})
    fit = analysis.fit_power_law(df, x="flops", y="error")
    assert fit.exponent == pytest.approx(-0.12, rel=0.01)
    assert fit.prefactor == pytest.approx(250, rel=0.1)
    assert fit.r2 > 0.99 and fit.n == 40


def test_trend_break_is_flagged_where_larger_models_leave_the_fit():
    rng = np.random.default_rng(2)
    flops = np.geomspace(1e8, 1e11, 30)
    error = 250 * np.minimum(flops, 1e10) ** -0.12 * (np.maximum(flops, 1e10) / 1e10) ** -0.01
    noisy = error * rng.lognormal(0, 0.01, 30)
    brk = analysis.trend_break(pd.DataFrame({"flops": flops, "error": noisy}))
    assert brk.detected and brk.excess > 0
    assert 5e9 < brk.break_x < 2e10
    assert brk.below.exponent == pytest.approx(-0.12, rel=0.05)
    straight = 250 * flops**-0.12 * rng.lognormal(0, 0.01, 30)
    assert not analysis.trend_break(pd.DataFrame({"flops": flops, "error": straight})).detected


@pytest.mark.parametrize("long_winner", ["depth", "width"])
def test_compare_scaling_finds_the_winner_per_regime(long_winner):
    df = synthetic_grid(long_winner=long_winner)
    long = analysis.compare_scaling(df, 3.5)
    assert list(long["image_resolution"]) == [24, 32, 40]
    assert set(long["winner"]) == {long_winner}
    assert (long["depth_points"] == 3).all() and (long["width_points"] == 3).all()
    assert (long["gap_low"] < long["accuracy_gap"]).all()
    assert (long["accuracy_gap"] < long["gap_high"]).all() and (long["seeds"] == 3).all()
    short = analysis.compare_scaling(df, 0.1)
    assert set(short["winner"]) == {"width"}
    assert (short["gap_high"] < 0).all()
    curves = analysis.scaling_curves(df, 3.5)
    assert curves["is_base"].sum() == 6  # the base is on both curves at 3 resolutions


def test_resolution_returns_show_diminishing_gains():
    returns = analysis.resolution_returns(synthetic_grid())
    assert len(returns) == 2 * 9 * 2  # regimes x (depth, width) models x resolution steps
    assert (returns["delta_low"] < returns["delta_quality"]).all()
    first = returns[returns["from_resolution"] == 24]["gain_per_doubling"]
    second = returns[returns["from_resolution"] == 32]["gain_per_doubling"]
    assert (first.to_numpy() > second.to_numpy()).all()


def test_recommend_is_computed_from_the_numbers():
    depth_report = analysis.recommend(synthetic_grid(long_winner="depth"))
    width_report = analysis.recommend(synthetic_grid(long_winner="width"))
    assert "3.5 epochs: scale depth (clear at 3 of 3 resolutions)" in depth_report
    assert "3.5 epochs: scale width (clear at 3 of 3 resolutions)" in width_report
    assert "depends on the training length" in depth_report
    assert "depends on the training length" not in width_report
    assert "Returns fall as resolution grows" in depth_report
    flat = analysis.recommend(synthetic_grid(flat_resolution=True))
    assert "No clear change in returns" in flat
    assert not re.search(r"(?<![\d.])1 epochs", depth_report) and "0.1 epochs" in depth_report


def test_one_seed_per_model_names_no_winner():
    """Without replicates there is no noise estimate: no interval, so no winner."""
    df = synthetic_grid(seeds=1, noise=0.0)
    table = analysis.compare_scaling(df, 3.5)
    assert set(table["winner"]) == {"unclear"} and table["gap_low"].isna().all()
    assert (table["accuracy_gap"] > 0).all()  # the point estimate is still reported
    report = analysis.recommend(df)
    assert "3.5 epochs: no clear winner (one seed per model: no interval)" in report
    assert "scale depth" not in report and "scale width" not in report


def test_rows_of_one_model_point_that_differ_beyond_the_seed_are_refused():
    df = synthetic_grid().assign(replicate_id="a")
    df.loc[df.index[0], "replicate_id"] = "b"
    with pytest.raises(ValueError, match="differ in more than their seed"):
        analysis.compare_scaling(df, 0.1)


def coverage_grid(rng, true_gap: float, seeds: int = 3, noise: float = 0.3) -> pd.DataFrame:
    """One regime and resolution: a base, two deeper and two wider models whose quality is
    linear in log(cost), the depth curve `true_gap` points above the width curve's line (the
    base on both); each model has `seeds` replicates with Gaussian noise."""
    rows = []
    models = {(26, 0.125): 0.0, (50, 0.125): true_gap, (101, 0.125): true_gap,
              (26, 0.25): 0.0, (26, 0.5): 0.0}  # fmt: skip
    for (depth, width), offset in models.items():
        latency = (depth / 26) * (width / 0.125) ** 1.1
        for seed in range(seeds):
            top1 = 70 + 3 * math.log(latency) + offset + rng.normal(0, noise)
            rows.append(dict(epochs=1.0, depth=depth, width_multiplier=width, image_resolution=32,
                             seed=seed, latency=latency, top1=top1))  # fmt: skip
    return pd.DataFrame(rows)


@pytest.mark.slow
def test_the_gap_interval_covers_the_truth_at_its_nominal_rate():
    """200 noisy draws: the 95% interval of depth minus width covers the noise-free gap in at
    least 90% of them, for a true gap of 0 and of 1 point."""
    rng = np.random.default_rng(1)
    for true_gap in (0.0, 1.0):
        truth = analysis.compare_scaling(coverage_grid(rng, true_gap, noise=0.0), 1.0)
        truth = float(truth["accuracy_gap"].iloc[0])
        covered = 0
        for _ in range(200):
            row = analysis.compare_scaling(coverage_grid(rng, true_gap), 1.0).iloc[0]
            covered += row["gap_low"] <= truth <= row["gap_high"]
        assert covered >= 180, (true_gap, covered)


@pytest.mark.slow
def test_recommend_says_no_clear_winner_when_the_truth_is_zero():
    rng = np.random.default_rng(2)
    unclear = sum(
        "1 epoch: no clear winner" in analysis.recommend(coverage_grid(rng, 0.0))
        for _ in range(200)
    )
    assert unclear >= 180, unclear
    # ...and names the winner when the truth is far from zero.
    assert "1 epoch: scale depth" in analysis.recommend(coverage_grid(rng, 3.0))


def test_the_report_says_which_quality_each_regime_uses():
    df = synthetic_grid().assign(raw_top1=lambda d: d["top1"] - 1.0, ema_warm=True)
    df.loc[df["epochs"] == 0.1, "ema_warm"] = False
    report = analysis.recommend(df)
    assert "- 0.1 epochs: raw top-1 (the EMA is not warmed up in 81 of 81 runs)" in report
    assert "- 3.5 epochs: EMA top-1 (every run's EMA is warmed up)" in report
    assert analysis.regime_quality(df[df["epochs"] == 0.1], "auto")[0] == "raw_top1"
    assert analysis.regime_quality(df[df["epochs"] == 0.1], "top1")[0] == "top1"  # as asked


def test_the_report_gives_train_minus_test_per_regime_with_its_interval():
    """Train accuracy a known 0.5 (short) and 8 (long) points above test, plus seed noise: the
    report's interval of each regime's gap covers the truth; no train column is said so."""
    df = synthetic_grid(noise=0.2)
    rng = np.random.default_rng(4)
    truth = np.where(df["epochs"] == 3.5, 8.0, 0.5)
    df["train_top1"] = df["top1"] + truth + rng.normal(0, 0.2, len(df))
    report = analysis.recommend(df)
    for label, gap in (("0.1 epochs", 0.5), ("3.5 epochs", 8.0)):
        line = next(x for x in report.splitlines() if x.startswith(f"- {label}: train "))
        low, high = map(float, re.search(r"\[([-+.\d]+), ([-+.\d]+)\] pts over 27", line).groups())
        assert low <= gap <= high < gap + 0.5, line
    without = analysis.recommend(synthetic_grid())
    assert "- 3.5 epochs: no train accuracy in the table" in without


def test_per_regime_power_laws_recover_each_exponent():
    """Three regimes on three power laws: each exponent within 10%, the legend names each."""
    rng = np.random.default_rng(3)
    exponents = {0.1: -0.05, 1.0: -0.15, 3.5: -0.3}
    rows = []
    for regime, exponent in exponents.items():
        for flops in np.geomspace(1e6, 1e8, 8):
            error = 40 * (flops / 1e6) ** exponent * rng.lognormal(0, 0.005)
            rows.append(dict(epochs=regime, depth=26, flops=flops, top1=100 - error))
    df = pd.DataFrame(rows)
    fits = analysis.fit_power_law_per_regime(df.assign(error=100 - df["top1"]))
    assert set(fits) == set(exponents)
    for regime, exponent in exponents.items():
        law, _ = fits[regime]
        assert law.exponent == pytest.approx(exponent, rel=0.1)
        assert law.exponent_low < law.exponent < law.exponent_high
    pooled = analysis.fit_power_law(df.assign(error=100 - df["top1"]))
    assert not any(pooled.exponent == pytest.approx(e, rel=0.1) for e in exponents.values())
    legend = [t.get_text() for t in plots.fig2(df).axes[0].get_legend().get_texts()]
    for regime in ("0.1 epochs: exponent", "1 epoch: exponent", "3.5 epochs: exponent"):
        assert any(text.startswith(regime) for text in legend), legend


def test_bad_input_gives_clear_messages():
    df = synthetic_grid()
    with pytest.raises(ValueError, match="results table is empty"):
        analysis.pareto_frontier(df.iloc[:0])
    with pytest.raises(ValueError, match=r"needs column\(s\) \['latency'\]"):
        plots.fig3(df.drop(columns="latency"))
    one = df[(df["epochs"] == 3.5)].iloc[:1]
    with pytest.raises(ValueError, match=r"3\.5-epoch regime has 1 run"):
        analysis.compare_scaling(one, 3.5)
    with pytest.raises(ValueError, match=re.escape("regimes present: ['0.1', '3.5']")):
        analysis.compare_scaling(df, 7)
    with pytest.raises(ValueError, match="two or more resolutions"):
        analysis.resolution_returns(df[df["image_resolution"] == 24])


def test_figures_are_produced(tmp_path):
    df = synthetic_grid()
    for name, fig in [
        ("fig2", plots.fig2(df)),
        ("fig3", plots.fig3(df)),
        ("fig4", plots.fig4(paper_overlay=True)),
        ("table7", plots.table7_figure()),
    ]:
        assert len(fig.axes) >= 1
        for path in plots.save(fig, tmp_path, name):
            assert path.stat().length > 1000
    assert len(plots.fig3(df).axes) == 2  # one panel per regime


def test_cli_plot_and_report(tmp_path, capsys):
    table = tmp_path / "results.csv"
    synthetic_grid().to_csv(table, index=False)
    assert cli.main(["plot", "fig3", str(table), "--out", str(tmp_path / "figs")]) == 0
    assert (tmp_path / "figs" / "fig3.png").exists() and (tmp_path / "figs" / "fig3.pdf").exists()
    assert cli.main(["plot", "table7", "--out", str(tmp_path / "figs")]) == 0
    assert "ResNet-RS-350-256" in capsys.readouterr().out
    assert cli.main(["results", "report", str(table)]) == 0
    assert "Depth or width" in capsys.readouterr().out
    assert cli.main(["plot", "fig2", "--out", str(tmp_path)]) == 2
    assert "fig2 needs RESULTS" in capsys.readouterr().err
    assert cli.main(["plot", "fig3", str(table), "--out", str(tmp_path), "--cost", "mem"]) == 2
    assert "needs column(s) ['mem']" in capsys.readouterr().err


def test_missing_base_and_uncomparable_resolutions_are_reported_not_crashed():
    df = synthetic_grid()
    no_base_at_24 = df[
        ~((df["depth"] == 26) & (df["width_multiplier"] == 0.125) & (df["image_resolution"] == 24))
    ]
    table = analysis.compare_scaling(no_base_at_24, 3.5)
    assert list(table["image_resolution"]) == [32, 40]  # 24 px has no common base
    only_deeper = df[(df["width_multiplier"] == 0.125) & (df["image_resolution"] == 40)]
    with_width = pd.concat([only_deeper, df[(df["image_resolution"] == 24)]])
    table = analysis.compare_scaling(with_width, 3.5).set_index("image_resolution")
    assert table.loc[40, "winner"] is None  # one curve only: no winner, and no NaN string
    assert "nan" not in analysis.recommend(with_width)
    no_base = df[~((df["depth"] == 26) & (df["width_multiplier"] == 0.125))]
    no_base = no_base[no_base["depth"] > 26]  # the regime's base is now (50, 0.125) everywhere
    assert set(analysis.compare_scaling(no_base, 3.5)["base_depth"]) == {50}
    missing = df[~((df["depth"] == 26) & (df["width_multiplier"] == 0.125))]
    with pytest.raises(ValueError, match="no run of its base model"):
        analysis.scaling_curves(missing, 3.5)


def test_speedup_sides_without_costs_and_misaligned_masks():
    df = analysis.table7_results()
    no_v100 = df.copy()
    no_v100.loc[no_v100["family"] == "resnet_rs", "v100_latency_s"] = math.nan
    with pytest.raises(ValueError, match="ours has no row with v100_latency_s"):
        analysis.table7(no_v100)
    ours = (df["family"] == "resnet_rs").iloc[::-1]  # same labels, other order: aligned by label
    pairs = analysis.speedup_at_matched_accuracy(df, ours=ours, cost="tpuv3_latency_ms")
    assert pairs["ours"].str.startswith("ResNet-RS").all()
    with pytest.raises(ValueError, match="a mask of"):
        analysis.speedup_at_matched_accuracy(df, ours=[True, False], cost="tpuv3_latency_ms")


def test_speedups_merge_replicates_and_carry_our_quality_interval():
    """Three seeds of each model are one model: one pair per model, and with interpolation the
    speed-up's interval comes from our quality's (their frontier is increasing, so it brackets)."""
    rng = np.random.default_rng(4)
    rows = []
    for family, speed in (("resnet_rs", 1.0), ("efficientnet", 2.0)):
        for depth in (26, 50, 101, 152):
            latency = speed * depth / 26
            for seed in range(3):
                top1 = 70 + 4 * math.log(depth / 26) + rng.normal(0, 0.2)
                rows.append(dict(family=family, epochs=1.0, depth=depth, width_multiplier=1.0,
                                 image_resolution=32, seed=seed, latency=latency, top1=top1,
                                 name=f"{family}-{depth}-s{seed}"))  # fmt: skip
    df = pd.DataFrame(rows)
    pairs = analysis.speedup_at_matched_accuracy(df, method="interpolate")
    assert len(pairs) == 4  # our four models, not twelve runs
    inside = pairs[pairs["matched"]]
    assert len(inside) >= 2
    assert (inside["ours_quality_low"] < inside["ours_quality"]).all()
    assert ((inside["speedup"] - 2.0).abs() < 0.5).all()  # their models are 2x slower
    bracketed = inside.dropna(subset=["speedup_low", "speedup_high"])
    assert not bracketed.empty
    assert (bracketed["speedup_low"] <= bracketed["speedup"]).all()
    assert (bracketed["speedup"] <= bracketed["speedup_high"]).all()
    nearest = analysis.speedup_at_matched_accuracy(df)
    assert len(nearest) >= 4 and nearest["ours_quality_low"].notna().all()
