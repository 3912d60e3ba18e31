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


def synthetic_grid(long_winner="depth", short_winner="width", flat_resolution=False):
    """A Figure 3 grid whose winners are known: in the 3.5-epoch regime `long_winner` gains
    more accuracy per latency, in the 0.1-epoch regime `short_winner` does."""
    rows = []
    for epochs, depth, width, res in itertools.product(
        (0.1, 3.5), (26, 50, 101), (0.125, 0.25, 0.5), (24, 32, 40)
    ):
        latency = 0.01 * (depth / 26) * (width / 0.125) * (res / 24) ** 2
        winner = long_winner if epochs == 3.5 else short_winner
        gain = {"depth": math.log2(depth / 26), "width": math.log2(width / 0.125)}
        top1 = 80 + 2 * gain[winner] + 0.5 * gain["depth" if winner == "width" else "width"]
        top1 += 0 if flat_resolution else 3 * math.log2(res / 24) ** 0.5
        rows.append(dict(epochs=epochs, depth=depth, width_multiplier=width, image_resolution=res,
                         latency=latency, top1=top1, error=100 - top1, family="resnet_rs",
                         flops=latency * 1e9))  # fmt: skip
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
    short = analysis.compare_scaling(df, 0.1)
    assert set(short["winner"]) == {"width"}
    assert (short["accuracy_gap"] < 0).all()
    curves = analysis.scaling_curves(df, 3.5)
    assert curves["is_base"].sum() == 6  # the base is on both curves at 3 resolutions


def test_resolution_returns_show_diminishing_gains():
    returns = analysis.resolution_returns(synthetic_grid())
    assert len(returns) == 2 * 9 * 2  # regimes x (depth, width) models x resolution steps
    first = returns[returns["from_resolution"] == 24]["gain_per_doubling"]
    second = returns[returns["from_resolution"] == 32]["gain_per_doubling"]
    assert (first.to_numpy() > second.to_numpy()).all()


def test_recommend_is_computed_from_the_numbers():
    depth_report = analysis.recommend(synthetic_grid(long_winner="depth"))
    width_report = analysis.recommend(synthetic_grid(long_winner="width"))
    assert "3.5 epochs: scale depth (wins at 3 of 3 resolutions)" in depth_report
    assert "3.5 epochs: scale width (wins at 3 of 3 resolutions)" in width_report
    assert "depends on the training length" in depth_report
    assert "depends on the training length" not in width_report
    assert "Returns fall as resolution grows" in depth_report
    flat = analysis.recommend(synthetic_grid(flat_resolution=True))
    assert "Returns do not fall" in flat


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
