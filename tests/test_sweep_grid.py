"""Sweep grids, rules and loading (`rsjax.sweep`, `sweeps/`): pure ConfigDict work, no JAX.

Expected values come from the paper: its tables read here straight from the bundled CSVs, and the
Appendix E rules written out by hand below; never from the code under test.
"""

import csv
import itertools
import pathlib
import re
import textwrap

import pytest

from rsjax.configs import apply_overrides, load_file, replicate_id, run_id
from rsjax.results import ema_is_warm
from rsjax.sweep import Run, build_config, load_sweep, rules

ROOT = pathlib.Path(__file__).resolve().parents[1]
TABLES = ROOT / "rsjax" / "paper_tables"
SWEEP_FILES = {p.stem: p for p in sorted((ROOT / "sweeps").glob("paper_*.py"))}

# Appendix E, by hand from the text, for the Figure 2 widths (rows) and resolutions (columns):
# "magnitude 10 for filter multipliers in [0.25, 0.5] or image resolution in [64, 160], 15 for
# image resolution in [224, 320] and 20 otherwise."
RESOLUTIONS = (128, 160, 224, 320, 448)
RANDAUGMENT = {
    0.25: (10, 10, 10, 10, 10),
    0.5: (10, 10, 10, 10, 10),
    1.0: (10, 10, 15, 15, 20),
    1.5: (10, 10, 15, 15, 20),
    2.0: (10, 10, 15, 15, 20),
}
# "stochastic depth with a drop rate of 0.2 for image resolutions 224 and above. We do not apply
# stochastic depth filter multiplier 0.25 (or images smaller than 224)."
STOCHASTIC_DEPTH = {
    0.25: (0, 0, 0, 0, 0),
    0.5: (0, 0, 0.2, 0.2, 0.2),
    1.0: (0, 0, 0.2, 0.2, 0.2),
    1.5: (0, 0, 0.2, 0.2, 0.2),
    2.0: (0, 0, 0.2, 0.2, 0.2),
}


def read_csv(name: str) -> list[dict[str, str]]:
    with (TABLES / f"{name}.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def scaling_axis(axis: str) -> list[float]:
    row = next(r for r in read_csv("scaling_grid") if r["axis"] == axis)
    return [float(v) for v in row["values"].split()]


@pytest.fixture(scope="module")
def sweeps() -> dict[str, list[Run]]:
    return {stem: load_sweep(path) for stem, path in SWEEP_FILES.items()}


@pytest.fixture(scope="module")
def configs(sweeps) -> dict[str, list]:
    return {stem: [build_config(run) for run in runs] for stem, runs in sweeps.items()}


def point(c) -> tuple[float, float, float, float]:
    return (c.model.depth, c.model.width_multiplier, c.data.image_size, c.num_epochs)


def flat(config) -> dict:
    out = {}
    for key, value in config.items():
        if hasattr(value, "items"):
            out.update({f"{key}.{k}": v for k, v in flat(value).items()})
        else:
            out[key] = value
    return out


def test_sweep_sizes(sweeps):
    table2 = read_csv("table2_weight_decay")
    wd_columns = [c for c in table2[0] if c.startswith("top1_wd_")]
    assert len(sweeps["paper_fig2"]) == 175
    assert len(sweeps["paper_fig3"]) == 144
    assert len(sweeps["paper_table7"]) == 11
    assert len(sweeps["paper_fig4"]) == 11 + 8 + 28  # + B0-B7 + EfficientNet-RS B2-B7
    assert len(sweeps["paper_table2"]) == len(table2) * len(wd_columns) == 12
    # Table 1 steps 0 (stepwise LR) and 10 (ResNet-D) have no config knob: documented, not run.
    steps = [int(r["step"]) for r in read_csv("table1_additive_study")]
    assert len(sweeps["paper_table1"]) == len(set(steps) - {0, 10}) == 9
    for stem, runs in sweeps.items():
        assert {run.sweep for run in runs} == {stem}


def test_fig2_is_the_section6_grid_at_350_epochs(configs):
    expected = set(
        itertools.product(
            scaling_axis("depth"),
            scaling_axis("width_multiplier"),
            scaling_axis("image_resolution"),
            [350.0],
        )
    )
    got = [point(c) for c in configs["paper_fig2"]]
    assert len(got) == len(set(got)) and set(got) == expected


def test_fig3_is_the_figure3_grid(configs):
    expected = set(
        itertools.product(
            scaling_axis("fig3_depth"),
            scaling_axis("fig3_width"),
            scaling_axis("fig3_resolution"),
            scaling_axis("epochs"),
        )
    )
    got = [point(c) for c in configs["paper_fig3"]]
    assert len(got) == len(set(got)) and set(got) == expected


def test_appendix_e_rules_at_350_epochs_cell_by_cell(configs):
    dropout = {
        float(r["width_multiplier"]): float(r["dropout_rate"])
        for r in read_csv("table12_dropout_by_width")
    }
    checked = set()
    for c in configs["paper_fig2"] + configs["paper_fig3"]:
        if c.num_epochs != 350:
            continue
        width, col = c.model.width_multiplier, RESOLUTIONS.index(c.data.image_size)
        assert c.data.randaugment_layers == 2
        assert c.data.randaugment_magnitude == RANDAUGMENT[width][col], c.name
        assert c.model.stochastic_depth_rate == STOCHASTIC_DEPTH[width][col], c.name
        assert c.model.dropout_rate == dropout[width], c.name
        assert c.label_smoothing == 0.1 and c.optim.weight_decay == 4e-5 and c.data.flip
        checked.add((width, c.data.image_size))
    assert checked == set(itertools.product(dropout, RESOLUTIONS))  # every cell of the tables


def test_short_regimes_use_flips_and_crops_only(configs):
    short = [c for c in configs["paper_fig3"] if c.num_epochs in (10, 100)]
    assert len(short) == 96
    for c in short:
        assert c.data.randaugment_layers == 0 or c.data.randaugment_magnitude == 0
        assert c.model.dropout_rate == 0 and c.model.stochastic_depth_rate == 0
        assert c.label_smoothing == 0 and c.optim.weight_decay == 4e-5
        assert c.data.flip and tuple(c.data.area_range) == (0.08, 1.0)


def test_table7_runs_have_table8_settings_cell_by_cell(sweeps, configs):
    pareto = {
        (int(r["depth"]), int(r["image_resolution"]))
        for r in read_csv("table7_pareto")
        if r["family"] == "resnet_rs"
    }
    table8 = {(int(r["depth"]), int(r["image_resolution"])): r for r in read_csv("table8_hparams")}
    assert set(table8) == pareto and len(pareto) == 11
    got = {}
    for run, c in zip(sweeps["paper_table7"], configs["paper_table7"], strict=True):
        row = table8[c.model.depth, c.data.image_size]
        assert c.data.randaugment_magnitude == float(row["randaugment_magnitude"]), run.name
        assert c.model.stochastic_depth_rate == float(row["stochastic_depth_rate"]), run.name
        assert c.model.dropout_rate == float(row["dropout_rate"]), run.name
        # Table 8 caption: 350 epochs, wd 4e-5, EMA 0.9999, 2 RandAugment layers, LS 0.1.
        assert c.num_epochs == 350 and c.optim.weight_decay == 4e-5 and c.ema_decay == 0.9999
        assert c.data.randaugment_layers == 2 and c.label_smoothing == 0.1
        assert c.model.width_multiplier == 1.0
        # The run's explicit overrides state the same values (the result record carries them).
        assert run.overrides["data.randaugment_magnitude"] == float(row["randaugment_magnitude"])
        got[c.model.depth, c.data.image_size] = run.name
    assert set(got) == pareto


def test_fig4_holds_table7s_resnet_rs_runs_and_both_efficientnet_families(sweeps, configs):
    """Its ResNet-RS runs are Table 7's (same names, same configs); B0-B7 at their own
    resolutions with the Table 10 recipe; EfficientNet-RS: B2-B7's width and depth at every Table 8
    resolution below their own, nothing else changed."""
    by_name = dict(zip([r.name for r in sweeps["paper_fig4"]], configs["paper_fig4"], strict=True))
    for run, c in zip(sweeps["paper_table7"], configs["paper_table7"], strict=True):
        assert flat(by_name.pop(run.name)) | {"sweep": None} == flat(c) | {"sweep": None}
    own = {"b0": 224, "b1": 240, "b2": 260, "b3": 300, "b4": 380, "b5": 456, "b6": 528, "b7": 600}
    for variant, resolution in own.items():
        c = by_name.pop(f"efficientnet_{variant}")
        assert c.model.family == "efficientnet" and c.data.image_size == resolution
        assert c.optim.name == "rmsprop" and c.optim.base_learning_rate == 0.016
    resolutions = {int(r["image_resolution"]) for r in read_csv("table8_hparams")}
    expected = {
        f"efficientnet_rs_{v}_i{r}" for v in own if v not in ("b0", "b1") for r in resolutions
        if r < own[v]
    }  # fmt: skip
    assert set(by_name) == expected
    for name, c in by_name.items():
        variant, resolution = name.split("_")[2], int(name.split("_i")[-1])
        base = flat(configs_of(f"efficientnet_{variant}"))
        assert c.data.image_size == resolution and c.model.family == "efficientnet"
        changed = {k for k, v in flat(c).items() if base.get(k) != v}
        assert changed <= {"data.image_size", "data.randaugment_magnitude", "name", "sweep"}, name


def configs_of(preset: str):
    from rsjax.configs import imagenet

    return imagenet.get_config(preset)


def test_table1_adds_one_improvement_per_step(sweeps, configs):
    table1 = {int(r["step"]): r["improvement"] for r in read_csv("table1_additive_study")}
    table8 = next(
        r
        for r in read_csv("table8_hparams")
        if (r["depth"], r["image_resolution"]) == ("200", "256")
    )
    epochs = re.search(r"->(\d+)", table1[2]).group(1)
    wd = re.search(r"->([\d.e-]+)\)", table1[8]).group(1)
    added = {  # what each step of Table 1 turns on, per the paper (Sections 4.1, 5.1; Table 8)
        2: {"num_epochs": float(epochs)},
        3: {"ema_decay": 0.9999},
        4: {"label_smoothing": 0.1},
        5: {"model.stochastic_depth_rate": float(table8["stochastic_depth_rate"])},
        6: {
            "data.randaugment_layers": 2,
            "data.randaugment_magnitude": float(table8["randaugment_magnitude"]),
        },
        7: {"model.dropout_rate": float(table8["dropout_rate"])},
        8: {"optim.weight_decay": float(wd)},
        9: {"model.se_ratio": 0.25},
    }
    runs, cs = sweeps["paper_table1"], configs["paper_table1"]
    assert [int(run.name[1:3]) for run in runs] == list(range(1, 10))
    first = cs[0]  # the baseline's settings with a cosine schedule: 90 epochs, nothing else on
    assert (first.model.depth, first.data.image_size, first.num_epochs) == (200, 256, 90)
    assert first.ema_decay == 0 and first.label_smoothing == 0 and first.model.se_ratio is None
    assert first.model.stochastic_depth_rate == 0 and first.model.dropout_rate == 0
    assert first.data.randaugment_magnitude == 0 and first.optim.weight_decay == 1e-4
    for step in range(2, 10):
        before, after = flat(cs[step - 2]), flat(cs[step - 1])
        changed = {k: v for k, v in after.items() if k != "name" and before[k] != v}
        assert changed == added[step], (step, table1[step])


def test_table6_adds_one_improvement_per_row_and_ends_at_the_rs_preset(sweeps, configs):
    """Each row of Table 6 turns on what Appendix G says it does (written out here by hand),
    with seeds 0 and 1 per row; the last row is `video:kinetics_rs`."""
    from rsjax.configs import load

    table6 = [r["improvement"] for r in read_csv("table6_video_additive")]
    added = [  # Appendix G, row by row
        {},
        {"model.dropout_rate": 0.5},
        {"label_smoothing": 0.1},
        {"model.stochastic_depth_rate": 0.2},
        {"ema_decay": 0.9999},
        {"optim.weight_decay": 4e-5},
        {"num_epochs": 350.0},
        {"data.scale_range": (256 / 224, 320 / 224), "model.stochastic_depth_rate": 0.1},
        {"model.se_ratio": 0.25},
        {"model.resnet_d": True, "model.temporal.kernels": "rs"},
    ]
    runs, cs = sweeps["paper_table6"], configs["paper_table6"]
    assert len(runs) == 2 * len(table6) == 20
    by_seed = [c for c in cs if c.seed == 0]
    assert [c.seed for c in cs] == [0, 1] * len(table6)
    baseline = flat(by_seed[0])
    assert baseline == {**flat(load("video:kinetics_baseline")), "name": baseline["name"],
                        "sweep": baseline["sweep"]}  # fmt: skip
    assert by_seed[0].model.se_ratio is None and not by_seed[0].model.resnet_d
    for row in range(1, len(table6)):
        before, after = flat(by_seed[row - 1]), flat(by_seed[row])
        changed = {k: v for k, v in after.items() if k != "name" and before[k] != v}
        assert changed == added[row], (row, table6[row])
    last, rs = flat(by_seed[-1]), flat(load("video:kinetics_rs"))
    assert {k: v for k, v in last.items() if k not in ("name", "sweep")} == {
        k: v for k, v in rs.items() if k not in ("name", "sweep")
    }


def test_table2_regularization_and_weight_decay(configs):
    names = {"RA", "LS", "SD", "DO"}
    expected = set()
    for row in read_csv("table2_weight_decay"):
        used = set() if row["regularization"] == "None" else set(row["regularization"].split("-"))
        assert used <= names
        for wd in ("1e-4", "4e-5"):
            depth = int(row["model"].removeprefix("ResNet-"))
            expected.add((depth, int(row["resolution"]), float(wd), frozenset(used)))
    got = set()
    for c in configs["paper_table2"]:
        on = {
            "RA": c.data.randaugment_magnitude > 0 and c.data.randaugment_layers > 0,
            "LS": c.label_smoothing > 0,
            "SD": c.model.stochastic_depth_rate > 0,
            "DO": c.model.dropout_rate > 0,
        }
        used = frozenset(k for k, v in on.items() if v)
        got.add((c.model.depth, c.data.image_size, c.optim.weight_decay, used))
        assert c.num_epochs == 350
    assert got == expected


def test_every_override_lands_in_its_config(sweeps, configs):
    for stem, runs in sweeps.items():
        for run, c in zip(runs, configs[stem], strict=True):
            values = flat(c)
            assert c.name == run.name
            for key, value in run.overrides.items():
                assert values[key] == value, (stem, run.name, key)
                assert (
                    type(values[key]) is type(value)
                    or value is None
                    or isinstance(values[key], float)
                ), (stem, run.name, key)


def test_names_are_readable_and_unique(sweeps, configs):
    for stem in ("paper_fig2", "paper_fig3"):
        for run, c in zip(sweeps[stem], configs[stem], strict=True):
            d, w, r, e = point(c)
            assert run.name == f"d{d}-w{w:g}-r{r}-e{e:g}"
    assert sweeps["paper_fig2"][0].name.startswith("d")
    for runs in sweeps.values():
        assert len({run.name for run in runs}) == len(runs)
        assert all(re.fullmatch(r"[a-z0-9_.\-]+", run.name) for run in runs)


def test_run_ids_are_deterministic_and_content_based(sweeps):
    again = load_sweep(SWEEP_FILES["paper_fig3"])
    assert [r.run_id for r in again] == [r.run_id for r in sweeps["paper_fig3"]]
    for runs in sweeps.values():
        assert all(re.fullmatch(r"[0-9a-f]{8}", r.run_id) for r in runs)
        assert len({r.run_id for r in runs}) == len(runs)
    a = Run("a", {"model.depth": 101, "num_epochs": 350.0}, "imagenet:resnetrs50_i160")
    assert Run("b", {"num_epochs": 350, "model.depth": 101}, a.base).run_id == a.run_id
    assert Run("a", {"model.depth": 152, "num_epochs": 350.0}, a.base).run_id != a.run_id
    # The id is the full config's: the same config reached from another preset is the same run.
    assert Run("a", dict(a.overrides), "imagenet:resnetrs101_i160").run_id == a.run_id
    assert Run("a", dict(a.overrides), "imagenet:resnetrs101_i192").run_id != a.run_id
    # The same model at the same epochs is the same run in Figures 2 and 3 (shared across sweeps).
    fig3_350 = {r.run_id for r in sweeps["paper_fig3"] if r.overrides["num_epochs"] == 350}
    assert len(fig3_350) == 48 and fig3_350 <= {r.run_id for r in sweeps["paper_fig2"]}


def test_apply_overrides_keeps_tuples_and_names_bad_keys():
    c = load_file("fashion_mnist")
    apply_overrides(c, {"data.area_range": [0.5, 1.0], "model.stage_sizes": [2, 2, 2, 2]})
    assert c.data.area_range == (0.5, 1.0) and isinstance(c.data.area_range, tuple)
    assert c.model.stage_sizes == (2, 2, 2, 2) and isinstance(c.model.stage_sizes, tuple)
    for key in ("model.no_such_key", "no_group.depth", "model.depth.deeper", "model"):
        with pytest.raises(ValueError, match=re.escape(repr(key))):
            apply_overrides(c, {key: 1})
    with pytest.raises(ValueError, match=r"'model\.depth'"):
        apply_overrides(c, {"model.depth": "deep"})
    with pytest.raises(ValueError, match="no config file 'cifar'"):
        build_config(Run("x", {}, "cifar"))


def test_rules_refuse_cases_the_paper_does_not_cover():
    with pytest.raises(ValueError, match="90"):
        rules.regularization(1.0, 224, 90.0)
    with pytest.raises(ValueError, match="192 px"):
        rules.randaugment_magnitude(1.0, 192)
    with pytest.raises(ValueError, match=r"0\.75"):
        rules.dropout_rate(0.75)
    with pytest.raises(ValueError, match="Table 8"):
        rules.table8(50, 224)


def test_run_rejects_bad_fields():
    with pytest.raises(ValueError, match="name"):
        Run("has space", {}, "fashion_mnist")
    with pytest.raises(TypeError, match="JSON"):
        Run("x", {"seed": object()}, "fashion_mnist")
    with pytest.raises(ValueError, match="override key"):
        Run("x", {"model..depth": 1}, "fashion_mnist")


def write_sweep(tmp_path: pathlib.Path, body: str, name: str = "my_sweep") -> pathlib.Path:
    path = tmp_path / f"{name}.py"
    path.write_text("from rsjax.sweep import Run\n\n" + textwrap.dedent(body))
    return path


def test_loader_errors_are_clear(tmp_path):
    with pytest.raises(ValueError, match="get_sweep"):
        load_sweep(write_sweep(tmp_path, "RUNS = []\n", "no_get_sweep"))
    with pytest.raises(FileNotFoundError):
        load_sweep(tmp_path / "missing.py")
    with pytest.raises(ValueError, match="empty"):
        load_sweep(write_sweep(tmp_path, "def get_sweep():\n    return []\n", "empty"))
    with pytest.raises(TypeError, match="list of Run"):
        load_sweep(write_sweep(tmp_path, "def get_sweep():\n    return None\n", "none"))
    with pytest.raises(TypeError, match="entry 1"):
        body = "def get_sweep():\n    return [Run('a', {}, 'fashion_mnist'), {}]\n"
        load_sweep(write_sweep(tmp_path, body, "not_runs"))
    body = """
    def get_sweep():
        return [
            Run("ok", {"model.depth": 50}, "fashion_mnist"),
            Run("typo", {"model.widht_multiplier": 2.0}, "fashion_mnist"),
        ]
    """
    with pytest.raises(ValueError, match=r"'typo'.*'model\.widht_multiplier'"):
        load_sweep(write_sweep(tmp_path, body, "unknown_key"))
    body = """
    def get_sweep():
        return [Run("a", {"seed": 1}, "fashion_mnist"), Run("a", {"seed": 2}, "fashion_mnist")]
    """
    with pytest.raises(ValueError, match="duplicate run names: a"):
        load_sweep(write_sweep(tmp_path, body, "duplicate_names"))
    body = """
    def get_sweep():
        return [Run("a", {"seed": 1}, "fashion_mnist"), Run("b", {"seed": 1}, "fashion_mnist")]
    """
    with pytest.raises(ValueError, match=r"identical configs.*\(a, b\)"):
        load_sweep(write_sweep(tmp_path, body, "duplicate_ids"))
    body = """
    def get_sweep():
        return [Run("a", {"seed": 1}, "fashion_mnist:huge")]
    """
    with pytest.raises(ValueError, match=r"'a'.*huge"):
        load_sweep(write_sweep(tmp_path, body, "bad_preset"))


def test_sweep_presets(tmp_path):
    fig3 = ROOT / "sweeps" / "fmnist_fig3.py"
    full, demo = load_sweep(fig3), load_sweep(f"{fig3}:demo")
    assert len(full) == 40 and len(demo) == 12
    assert {run.sweep for run in demo} == {"fmnist_fig3:demo"}
    # The same model trained the same way has the same id: the demo is a subset of the study.
    assert {run.run_id for run in demo} < {run.run_id for run in full}
    assert {run.name.split("-")[0] + "-" + run.name.split("-")[1] for run in demo} == {
        "d26-w0.125", "d38-w0.125", "d26-w0.1875"
    }  # fmt: skip
    with pytest.raises(ValueError, match="Unknown fmnist_fig3 preset 'huge'"):
        load_sweep(f"{fig3}:huge")
    seeds = full
    configs = [build_config(run) for run in seeds]
    assert {c.seed for c in configs} == {0, 1}
    # Replicates: each model point twice, with one replicate id and two run ids.
    by_point = {}
    for run, config in zip(seeds, configs, strict=True):
        by_point.setdefault(run.name.rsplit("-s", 1)[0], []).append(config)
    assert len(by_point) == 20 and all(len(c) == 2 for c in by_point.values())
    for pair in by_point.values():
        assert len({replicate_id(c) for c in pair}) == 1 and len({run_id(c) for c in pair}) == 2
    # Every run's EMA is warmed up by the documented rule, the short regime's included.
    for config in configs:
        steps = int(config.num_epochs * config.data.train_examples) // config.global_batch_size
        assert ema_is_warm(config.ema_decay, steps), (config.num_epochs, config.ema_decay)
        assert config.data.train_eval_split == config.data.train_split == "train[:10000]"
    plain = write_sweep(tmp_path, "def get_sweep():\n    return []\n", "plain")
    with pytest.raises(ValueError, match="takes no preset"):
        load_sweep(f"{plain}:demo")
