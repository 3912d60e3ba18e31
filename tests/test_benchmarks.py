"""The benchmark scripts' shared helpers still fit the trainer's API (the scripts are not in CI)."""

import json
import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))
import common


@pytest.mark.slow
def test_lower_train_step_gives_compiled_memory(tiny_model):
    # compile_time.py and memory.py lower the real step for the abstract state.
    lowered = common.lower_train_step(tiny_model, batch=2, resolution=32)
    analysis = lowered.compile().memory_analysis()
    assert analysis.temp_size_in_bytes > 0
    assert analysis.argument_size_in_bytes > 0


@pytest.mark.slow
def test_make_train_step_runs(tiny_model):
    init, step, compiled = common.make_train_step(tiny_model, batch=2, resolution=32)
    init()
    assert len(common.time_calls(step, 3)) == 3
    assert compiled.memory_analysis().temp_size_in_bytes > 0  # what family_pairs.py reads


def test_conv_layers_times_both_modes(tiny_model):
    import conv_layers

    shapes = conv_layers.conv_shapes(tiny_model, batch=2, resolution=32, channels=3)
    assert shapes[0][0] == "stem" and len(shapes) > 8
    for mode in ("train", "infer"):
        assert len(conv_layers.time_layer(shapes[1][1], "matmul", repeats=2, mode=mode)) == 2


def test_round_ratios_compare_blocks_of_the_same_round():
    import train_step

    seconds = {
        ("rsjax", "train"): [[2.0, 2.0, 2.2], [4.0, 4.0, 4.0]],
        ("timm", "train"): [[1.0, 1.0, 1.0], [4.0, 4.0, 4.0]],
        ("rsjax", "infer"): [[1.0]],  # no timm inference: no ratio
    }
    ratios = train_step.round_ratios(seconds)
    assert set(ratios) == {"rsjax/timm train"}
    assert ratios["rsjax/timm train"] == {"median": 0.75, "min": 0.5, "max": 1.0}


def test_timm_runs_on_glibc_with_its_tunables_not_on_rsjax_jemalloc():
    import train_step

    rsjax_env = {
        "PATH": "/bin",
        "LD_PRELOAD": "/x/libfoo.so /usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
        "MALLOC_CONF": "thp:always",
        "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1",
    }
    timm_env = train_step.timm_environment(rsjax_env)
    assert timm_env == {
        "PATH": "/bin",
        "LD_PRELOAD": "/x/libfoo.so",
        "GLIBC_TUNABLES": train_step.TIMM_GLIBC_TUNABLES,
    }
    assert "LD_PRELOAD" not in train_step.timm_environment({"LD_PRELOAD": "libjemalloc.so.2"})


def test_out_keeps_stamped_json_lines_across_runs(tmp_path, capsys, monkeypatch):
    import argparse

    out = tmp_path / "results" / "bench.jsonl"
    monkeypatch.setattr(common, "_KEEP", [])
    for run in range(2):  # a second run appends, it does not overwrite
        parser = argparse.ArgumentParser()
        common.add_out_flag(parser)
        common.keep_output(parser.parse_args(["--out", str(out)]))
        common.emit({"kind": "step", "run": run})
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert printed == [{"kind": "step", "run": 0}, {"kind": "step", "run": 1}]  # stdout unstamped
    kept = [json.loads(line) for line in out.read_text().splitlines()]
    assert [k["run"] for k in kept] == [0, 1]
    assert all({"benchmark", "utc", "rsjax", "jax"} <= set(k) for k in kept)


def test_family_pairs_parses_pairs_and_finds_table7_rows():
    import family_pairs

    pairs = family_pairs.parse_pairs(family_pairs.DEFAULT_PAIRS)
    assert pairs[0] == (("resnetrs101", 160), ("efficientnet_b2", 260))
    assert family_pairs.table7_row("resnetrs152", 224)["tpuv3_latency_ms"] == 320
    assert family_pairs.table7_row("efficientnet_b4", 380)["model"] == "EfficientNet-B4"
    assert family_pairs.table7_row("resnetrs152", 999) is None
    with pytest.raises(ValueError, match="RESNET@PX:EFFICIENTNET@PX"):
        family_pairs.parse_pairs("resnetrs101@160")
    assert common.timm_name("efficientnet_b0") == "tf_efficientnet_b0"
    assert common.build_model("efficientnet_b0").drop_connect_rate == 0.0
