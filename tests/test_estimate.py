"""Slice-hour estimates of a sweep from the profiles of a --profile_only sweep (synthetic)."""

import pytest

from rsjax.data import split_sizes
from rsjax.results import RunRecord
from rsjax.sweep import estimate
from rsjax.sweep.grid import Run, build_config

RS = "imagenet:resnetrs50_i160"  # global batch 4096 on ImageNet's 1,281,167 images


def write_profile(workdir, run: Run, run_id: str | None = None, **profile) -> None:
    header = {"schema": 1, "run_id": run_id or run.run_id, "name": run.name, "config": {},
              "model": {}, "metrics": {}, "versions": {}}  # fmt: skip
    (workdir / run.name).mkdir(parents=True)
    RunRecord.start(workdir / run.name, header).profiled(profile)


def test_a_runs_hours_are_its_steps_times_the_profiles_step_scaled_to_its_batch(tmp_path):
    run = Run("a", {"num_epochs": 10.0}, RS)
    # 2 s per step of 1024 images on the profiling slice -> 8 s per step of 4096.
    write_profile(tmp_path, run, normalized_step_s=2.0, normalized_batch=1024,
                  device_kind="TPU v4", num_devices=16)  # fmt: skip
    e = estimate.estimate_run(run, tmp_path)
    steps = 10 * (1_281_167 // 4096)
    assert (e.total_steps, e.global_batch, e.step_s) == (steps, 4096, 8.0)
    assert e.hours == pytest.approx(steps * 8.0 / 3600)
    assert e.device == "TPU v4 x16"


def test_runs_without_a_usable_profile_are_named_and_left_out_of_the_total(tmp_path):
    runs = [Run(n, {"num_epochs": 350.0, "model.depth": d}, RS)
            for n, d in (("d101", 101), ("d152", 152), ("d200", 200))]  # fmt: skip
    write_profile(tmp_path, runs[0], normalized_step_s=1.0, normalized_batch=4096,
                  device_kind="TPU v4", num_devices=16)  # fmt: skip
    write_profile(tmp_path, runs[1], run_id="0000beef", normalized_step_s=1.0,
                  normalized_batch=4096)  # fmt: skip
    estimates = estimate.estimate(runs, tmp_path)
    assert [e.note for e in estimates] == [
        "",
        "profile is of another config (run id 0000beef)",
        "no profile",
    ]
    hours = estimates[0].hours
    assert hours == pytest.approx((350 * 312) / 3600)
    text = estimate.format_estimates(estimates, max_slices=4)
    assert f"estimated {hours:.1f} slice-hours of train steps for 1 of 3 runs (2 without" in text
    assert f"at --max_slices 4: at least {hours:.1f} h" in text  # one run: its own length


def test_the_wall_time_bound_is_the_total_over_the_slices_or_the_longest_run(tmp_path):
    runs = [Run(f"r{i}", {"num_train_steps": 3600 * (i + 1)}, RS) for i in range(4)]
    for run in runs:
        write_profile(tmp_path, run, normalized_step_s=1.0, normalized_batch=4096,
                      device_kind=f"TPU v{4 + (run.name == 'r3')}", num_devices=16)  # fmt: skip
    estimates = estimate.estimate(runs, tmp_path)
    assert [e.hours for e in estimates] == [1.0, 2.0, 3.0, 4.0]
    assert "at least 5.0 h" in estimate.format_estimates(estimates, max_slices=2)  # 10/2
    assert "at least 4.0 h" in estimate.format_estimates(estimates, max_slices=8)  # the longest
    over = "the estimate exceeds --budget_slice_hours 9"
    assert over in estimate.format_estimates(estimates, max_slices=2, budget_slice_hours=9)
    assert over not in estimate.format_estimates(estimates, max_slices=2, budget_slice_hours=10)
    assert "profiles from different devices: TPU v4 x16, TPU v5 x16" in (
        estimate.format_estimates(estimates, max_slices=2)
    )


def test_split_sizes_come_from_the_override_the_catalogue_or_a_clear_error():
    config = build_config(Run("a", {}, RS))
    assert split_sizes.train_examples(config.data) == 1_281_167
    config.data.train_examples = 1000
    assert split_sizes.train_examples(config.data) == 1000
    config.data.train_examples, config.data.train_split = 0, "train[:98%]"
    with pytest.raises(ValueError, match=r"set data\.train_examples"):
        split_sizes.train_examples(config.data)
