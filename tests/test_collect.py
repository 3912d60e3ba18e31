"""rsjax.results.collect: good rows, and every bad file reported in a summary that adds up."""

import json

import pandas as pd
import pytest

from rsjax import cli
from rsjax.results import collect, load, write_table
from rsjax.results.schema import write_result


def run_record(run_id, top1, status="complete", finished="2026-11-24T01:00:00+00:00", **extra):
    """A schema-1 result as the trainer and sweep worker write it (only the fields read here)."""
    depth, width, res, epochs = extra.pop("point", (26, 0.125, 24, 1.0))
    return {
        "schema": 1,
        "run_id": run_id,
        "name": f"d{depth}-w{width}-r{res}-e{epochs:g}",
        "sweep": "unit",
        "status": status,
        "error": "boom" if status == "failed" else None,
        "config": {"num_epochs": epochs, "model": {"width_multiplier": width}},
        "model": {"depth": None, "layers": depth, "stage_sizes": [2, 2, 2, 2],
                  "width_multiplier": width, "image_resolution": res, "params": 1000,
                  "flops_per_image": 2e6},
        "train": {"epochs": epochs, "global_batch": 128, "wall_s": 10.0},
        "profile": {"step_s": 0.05, "batch": 128, "device_kind": "cpu"},
        "metrics": {"top1": top1 - 0.01, "ema_top1": top1, "top5": 0.99, "ema_top5": 0.995},
        "versions": {},
        "started": "2026-11-24T00:00:00+00:00",
        "finished": finished,
        **extra,
    }  # fmt: skip


def write(directory, record):
    directory.mkdir(parents=True, exist_ok=True)
    write_result(directory, record)


@pytest.fixture
def mixed_dir(tmp_path):
    """Two good runs, one failed, one partial, one truncated file, one schema-invalid file."""
    root = tmp_path / "sweep"
    write(root / "a", run_record("aaaa0001", 0.90))
    write(root / "b", run_record("bbbb0002", 0.85, point=(50, 0.125, 24, 1.0)))
    write(root / "failed", run_record("cccc0003", 0.0, status="failed"))
    write(root / "partial", run_record("dddd0004", 0.0, status="running"))
    (root / "truncated").mkdir()
    (root / "truncated" / "result.json").write_text('{"schema": 1, "status": "comp')
    (root / "invalid").mkdir()
    (root / "invalid" / "result.json").write_text(json.dumps({"schema": 7, "status": "complete"}))
    return root


def test_mixed_directory_keeps_good_rows_and_counts_the_rest(mixed_dir):
    df = collect(mixed_dir)
    summary = df.attrs["summary"]
    assert sorted(df["run_id"]) == ["aaaa0001", "bbbb0002"]
    assert summary.counts() == {"files": 6, "rows": 2, "duplicates": 0, "failed": 1,
                                "partial": 1, "corrupt": 2}  # fmt: skip
    assert summary.adds_up()
    reasons = dict(summary.corrupt)
    assert "not valid JSON" in reasons[str(mixed_dir / "truncated" / "result.json")]
    assert "required field" in reasons[str(mixed_dir / "invalid" / "result.json")]


def test_flattened_columns_and_units(mixed_dir):
    row = collect(mixed_dir).set_index("run_id").loc["aaaa0001"]
    assert row["top1"] == pytest.approx(90.0)  # EMA weights, in percent
    assert row["raw_top1"] == pytest.approx(89.0)
    assert row["error"] == pytest.approx(10.0)
    assert row["weights"] == "ema"
    assert (row["depth"], row["width_multiplier"], row["image_resolution"]) == (26, 0.125, 24)
    assert row["epochs"] == 1.0 and row["flops"] == 2e6 and row["latency"] == 0.05
    assert row["config.model.width_multiplier"] == 0.125
    assert row["metrics.ema_top5"] == 0.995


def test_two_directories_with_duplicated_runs_keep_the_newest(tmp_path, mixed_dir):
    other = tmp_path / "rerun"
    write(other / "a", run_record("aaaa0001", 0.95, finished="2026-11-25T00:00:00+00:00"))
    write(other / "e", run_record("eeee0005", 0.80, point=(26, 0.25, 24, 1.0)))
    df = collect([mixed_dir, other])
    summary = df.attrs["summary"]
    assert sorted(df["run_id"]) == ["aaaa0001", "bbbb0002", "eeee0005"]
    assert df.set_index("run_id").loc["aaaa0001", "top1"] == pytest.approx(95.0)
    assert summary.duplicates == [str(mixed_dir / "a")]
    assert summary.counts()["files"] == 8 and summary.adds_up()
    # The same directory twice, or a glob overlapping it, reads each file once.
    assert collect([mixed_dir, mixed_dir, f"{mixed_dir}/*"]).attrs["summary"].files == 6


def test_latency_is_shared_by_runs_of_the_same_model(tmp_path):
    write(tmp_path / "long", run_record("00000001", 0.9, point=(26, 0.125, 24, 3.5)))
    short = run_record("00000002", 0.7, point=(26, 0.125, 24, 0.1))
    short["profile"]["step_s"] = None  # too few steps to time
    write(tmp_path / "short", short)
    df = collect(tmp_path).set_index("run_id")
    assert df.loc["00000002", "latency"] == 0.05
    assert pd.isna(df.loc["00000002", "run_latency"])


def test_table_round_trip_and_bad_paths(tmp_path, mixed_dir):
    df = collect(mixed_dir)
    for suffix in ("csv", "parquet"):
        back = load(str(write_table(df, tmp_path / f"results.{suffix}")))
        assert list(back["run_id"]) == list(df["run_id"])
    with pytest.raises(ValueError, match="no such file"):
        collect(tmp_path / "missing")
    with pytest.raises(ValueError, match="matches nothing"):
        collect(f"{tmp_path}/nothing*")
    with pytest.raises(ValueError, match=r"\.csv or \.parquet"):
        write_table(df, tmp_path / "results.xlsx")


def test_cli_collect_writes_the_table_and_prints_the_summary(tmp_path, mixed_dir, capsys):
    out = tmp_path / "results.csv"
    assert cli.main(["results", "collect", str(mixed_dir), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "6 result files: 2 rows" in printed and "corrupt" in printed
    assert len(pd.read_csv(out)) == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.main(["results", "collect", str(empty), "-o", str(out)]) == 2
    assert "no complete runs" in capsys.readouterr().err


def test_schema_valid_but_malformed_records_are_counted_corrupt(tmp_path):
    write(tmp_path / "good", run_record("00000001", 0.9))
    bad = run_record("00000002", 0.9)
    bad["config"]["num_epochs"] = "three"
    write(tmp_path / "bad_epochs", bad)
    bad = run_record("00000003", 0.9)
    bad["metrics"]["ema_top1"] = [0.9]
    write(tmp_path / "bad_metric", bad)
    df = collect(tmp_path)
    assert list(df["run_id"]) == ["00000001"]
    assert df.attrs["summary"].counts()["corrupt"] == 2 and df.attrs["summary"].adds_up()


def profiled_record(run_id, family, resolution, params, step_s):
    """A profile-only record (`rsjax profile` / `sweep launch --profile_only`): no metrics."""
    record = run_record(run_id, 0.0, status="profiled", point=(50, 1.0, resolution, 350.0))
    if family == "resnet_rs":
        record["model"].update(family=family, params=params, depth=50)
    else:  # as EfficientNet records are: seven stages, no ResNet depth or layer count
        stage_sizes = [1, 2, 2, 3, 3, 4, 1]
        record["model"].update(
            family=family, params=params, depth=None, layers=None, stage_sizes=stage_sizes
        )
    record["profile"] = {"step_s": step_s, "batch": 8, "device_kind": "cpu"}
    record["metrics"] = {}
    return record


def test_a_profile_that_halved_its_batch_is_read_at_the_batch_it_started_from(tmp_path):
    """Latency and batch go together: normalized_step_s is per step of normalized_batch; an
    EfficientNet has no ResNet depth."""
    record = profiled_record("ffff0006", "efficientnet", 224, 5_288_548, 23.75)
    record["profile"].update(batch=64, normalized_batch=128, normalized_step_s=47.5)
    write(tmp_path / "b0", record)
    row = load(tmp_path, ("profiled",)).iloc[0]
    assert row["batch"] == 128 and row["latency"] == pytest.approx(47.5)
    assert pd.isna(row["depth"]) and pd.isna(row["layers"])  # not ResNet's 3 x 16 blocks + 2


def test_fig4_draws_profiled_runs_at_the_papers_accuracy_and_says_so(tmp_path, capsys):
    """Profiled ResNet-RS-50@160 and EfficientNet-B0@224 (their real parameter counts, which
    Table 7 rounds to "36" and "5.3" M) take Table 7's top-1; a trained run keeps its own;
    EfficientNet-RS B2@192 (not in Table 7) and an RS-50-sized model at a resolution the table
    does not list have none."""
    from rsjax.analysis import paper

    table = paper.table7_results().set_index("name")
    rs50, b0 = table.loc["ResNet-RS-50-160"], table.loc["EfficientNet-B0"]
    root = tmp_path / "fig4"
    write(root / "rs", profiled_record("aaaa0001", "resnet_rs", 160, 35_691_912, 0.5))
    write(root / "rs999", profiled_record("eeee0005", "resnet_rs", 999, 35_691_912, 0.5))
    write(root / "b0", profiled_record("bbbb0002", "efficientnet", 224, 5_288_548, 0.4))
    write(root / "b2rs", profiled_record("cccc0003", "efficientnet", 192, 9_109_994, 0.6))
    trained = run_record("dddd0004", 0.79, point=(50, 1.0, 160, 350.0))
    trained["model"].update(family="resnet_rs", params=rs50["params"], depth=101)
    write(root / "trained", trained)
    df = paper.with_paper_quality(load(root, ("complete", "profiled"))).set_index("run_id")
    assert df.loc["aaaa0001", "top1"] == rs50["top1"] and df.loc["bbbb0002", "top1"] == b0["top1"]
    assert df.loc["dddd0004", "top1"] == pytest.approx(79.0)
    assert df["quality_source"].fillna("none").to_dict() == {
        "aaaa0001": paper.PAPER_QUALITY, "bbbb0002": paper.PAPER_QUALITY, "cccc0003": "none",
        "dddd0004": "measured", "eeee0005": "none",
    }  # fmt: skip
    assert pd.isna(df.loc["cccc0003", "top1"])
    assert cli.main(["plot", "fig4", str(root), "--out", str(tmp_path / "figs")]) == 0
    assert "2 untrained run(s) of models not in Table 7" in capsys.readouterr().out
    assert (tmp_path / "figs" / "fig4.png").stat().st_size > 0
