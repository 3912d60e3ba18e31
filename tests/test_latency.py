"""Appendix H profiling: batch halving on out-of-memory, normalisation, and a real CPU profile."""

import json

import pytest

from rsjax import cli
from rsjax.configs import fashion_mnist as fmnist_config
from rsjax.train import latency, sharding


class FakeOOM(RuntimeError):
    pass


def fake_measure(fits_up_to, seen):
    def measure(config, global_batch, mesh, **kwargs):
        seen.append(global_batch)
        if global_batch > fits_up_to:
            raise FakeOOM(f"RESOURCE_EXHAUSTED: Out of memory allocating {global_batch} images")
        return {"step_s": 0.01 * global_batch, "compile_s": 1.0, "compiled_peak_bytes": 123}

    return measure


def profile(measure, batch_per_device=128):
    return latency.profile_train_step(
        fmnist_config.get_config("tiny"),
        sharding.make_mesh(1, 1),
        batch_per_device=batch_per_device,
        measure=measure,
    )


def test_out_of_memory_halves_the_batch_and_normalises():
    seen = []
    result = profile(fake_measure(fits_up_to=32, seen=seen))
    assert seen == [128, 64, 32]
    assert result["batch"] == 32 and result["normalized_batch"] == 128
    assert result["step_s"] == pytest.approx(0.32)
    assert result["normalized_step_s"] == pytest.approx(0.32 * 128 / 32)
    assert result["images_per_s"] == pytest.approx(32 / 0.32)


def test_nothing_fits_is_a_clear_error():
    with pytest.raises(RuntimeError, match="does not fit even at one example per device"):
        profile(fake_measure(fits_up_to=0, seen=[]), batch_per_device=4)


def test_other_errors_are_not_taken_for_out_of_memory():
    def broken(*args, **kwargs):
        raise ValueError("shapes do not match")

    with pytest.raises(ValueError, match="shapes"):
        profile(broken)


def test_a_compiled_peak_larger_than_the_device_halves_the_batch_before_running(monkeypatch):
    """On CPU an allocation too large does not fail (it swaps or is killed), so the profile
    compares the compiled peak with the device's memory and halves before the step runs."""
    config = fmnist_config.get_config("tiny")
    config.data.image_size = 24
    mesh = sharding.make_mesh(1, 1)
    peak_at_4 = latency.measure_step(config, 4, mesh, steps=1, warmup=0)["compiled_peak_bytes"]
    monkeypatch.setattr(latency, "device_memory_bytes", lambda: peak_at_4)
    calls = []

    def counting(*args, **kwargs):
        calls.append(args[1])
        return latency.measure_step(*args, **kwargs)

    result = latency.profile_train_step(
        config, mesh, batch_per_device=8, steps=1, warmup=0, measure=counting
    )
    assert calls == [8, 4]
    assert result["batch"] == 4 and result["compiled_peak_bytes"] == peak_at_4
    with pytest.raises(latency.CompiledPeakTooLarge, match="compiled peak"):
        latency.measure_step(config, 8, mesh, steps=1, warmup=0)


def test_a_cpu_device_holds_at_most_the_hosts_memory():
    available = latency.device_memory_bytes()
    with open("/proc/meminfo") as meminfo:
        total_kib = int(meminfo.readline().split()[1])
    assert 0 < available <= total_kib * 1024


@pytest.mark.slow
def test_profile_cli_on_cpu(tmp_path, capsys):
    """The real thing, small: tiny Fashion-MNIST config, batch 8, two timed steps."""
    code = cli.main(
        ["profile", "--config", "fashion_mnist:tiny", "--batch_per_device", "8", "--steps", "2",
         "--warmup", "1", "--config.data.image_size=24", "--workdir", str(tmp_path)]
    )  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    report = json.loads(out[out.index("{") :])
    prof, model = report["profile"], report["model"]
    assert prof["batch"] == 8 * 8 == prof["normalized_batch"]  # per device x 8 data devices
    assert prof["step_s"] > 0 and prof["compiled_peak_bytes"] > 0
    assert prof["device_kind"] == "cpu" and prof["num_devices"] == 8  # the config's mesh
    assert model["params"] > 0 and model["flops_per_image"] > 0
    assert model["image_resolution"] == 24
    record = json.loads((tmp_path / "result.json").read_text())
    assert record["status"] == "profiled"


def test_profile_cli_bad_override(capsys):
    assert cli.main(["profile", "--config", "fashion_mnist", "--config.model.depthh=3"]) == 2
    assert "model.depthh" in capsys.readouterr().err
