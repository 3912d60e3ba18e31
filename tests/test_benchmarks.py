"""The benchmark scripts' shared helpers still fit the trainer's API (the scripts are not in CI)."""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))
import common


def test_lower_train_step_gives_compiled_memory(tiny_model):
    # compile_time.py and memory.py lower the real step for the abstract state.
    lowered = common.lower_train_step(tiny_model, batch=2, resolution=32)
    analysis = lowered.compile().memory_analysis()
    assert analysis.temp_size_in_bytes > 0
    assert analysis.argument_size_in_bytes > 0


def test_make_train_step_runs(tiny_model):
    init, step = common.make_train_step(tiny_model, batch=2, resolution=32)
    init()
    assert len(common.time_calls(step, 3)) == 3
