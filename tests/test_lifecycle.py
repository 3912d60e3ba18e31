"""Every way a run ends is in its record; an unreadable newest checkpoint is survived."""

import json
import logging
import pathlib

import numpy as np
import orbax.checkpoint as ocp
import pytest

from rsjax import cli
from rsjax.data import input_pipeline
from rsjax.results import RunRecord, read_result
from rsjax.train import checkpoint, trainer
from tests.test_train import final_params, tiny_config


def checkpoint_steps(workdir: pathlib.Path) -> list[int]:
    return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


def truncate_largest_file(step_dir: pathlib.Path) -> pathlib.Path:
    """Cuts the largest file of a checkpoint to half its size (a torn write)."""
    largest = max((p for p in step_dir.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    data = largest.read_bytes()
    largest.write_bytes(data[: len(data) // 2])
    return largest


def failing_after(batches: int, error: Exception):
    """A train_batches that yields `batches` real batches, then raises `error`."""
    real = input_pipeline.train_batches

    def train_batches(*args, **kwargs):
        for i, batch in enumerate(real(*args, **kwargs)):
            if i == batches:
                raise error
            yield batch

    return train_batches


@pytest.mark.slow
def test_a_run_that_raises_mid_training_is_recorded_failed_and_reruns(
    small_fmnist, tmp_path, monkeypatch
):
    config = tiny_config(small_fmnist)
    fault = OSError("input shard truncated: fashion_mnist-train.tfrecord-00000\nsecond line")
    monkeypatch.setattr(input_pipeline, "train_batches", failing_after(6, fault))
    with pytest.raises(OSError, match="input shard truncated"):
        trainer.train_and_evaluate(config, tmp_path)
    record = read_result(tmp_path / "result.json")
    assert record["status"] == "failed"
    assert record["error_type"] == "OSError"
    assert record["error"] == "input shard truncated: fashion_mnist-train.tfrecord-00000"
    assert "Traceback" in (tmp_path / "error.log").read_text()
    assert checkpoint_steps(tmp_path) == [4]  # the checkpoint before the fault is kept
    monkeypatch.undo()
    metrics = trainer.train_and_evaluate(config, tmp_path)
    record = read_result(tmp_path / "result.json")
    assert record["status"] == "complete" and record["metrics"] == metrics
    assert record["train"]["resumed_from_step"] == 4


@pytest.mark.slow
def test_the_cli_exits_nonzero_with_one_line_on_a_mid_run_failure(
    small_fmnist, tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr(
        input_pipeline, "train_batches", failing_after(2, RuntimeError("fault injected"))
    )
    flags = [f"--config.{k}={v}" for k, v in _flat(tiny_config(small_fmnist)).items()]
    code = cli.main(["train", "--config", "fashion_mnist:tiny", *flags, "--workdir", str(tmp_path)])
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("rsjax train: failed: RuntimeError: fault injected")
    assert read_result(tmp_path / "result.json")["error_type"] == "RuntimeError"


def _flat(config) -> dict[str, str]:
    """The data and run-size keys of a config as command-line text."""
    keys = (
        "data.manual_dir", "data.data_dir", "data.shuffle_buffer", "global_batch_size",
        "eval_batch_size", "num_train_steps", "log_every_steps", "checkpoint_every_steps",
        "mesh.data", "progress",
    )  # fmt: skip
    values = {}
    for key in keys:
        node = config
        for part in key.split("."):
            node = node[part]
        values[key] = str(node)
    return values


@pytest.mark.slow
def test_the_record_exists_from_the_start_with_the_run_identity(small_fmnist, tmp_path):
    config = tiny_config(small_fmnist, num_train_steps=4)
    seen = {}
    real_start = RunRecord.start

    def start(*args, **kwargs):
        run = real_start(*args, **kwargs)
        seen.update(read_result(tmp_path / "result.json"))
        return run

    with pytest.MonkeyPatch.context() as m:
        m.setattr(RunRecord, "start", start)
        trainer.train_and_evaluate(config, tmp_path)
    assert seen["status"] == "running" and seen["run_id"] and seen["name"] == config.name
    final = read_result(tmp_path / "result.json")
    assert final["run_id"] == seen["run_id"] and final["status"] == "complete"


def test_a_record_write_that_fails_is_one_line_on_stderr(tmp_path, capsys, monkeypatch):
    from rsjax.results import lifecycle

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(lifecycle, "write_result", full_disk)
    run = RunRecord(tmp_path, {"status": "running"})
    run.fail(RuntimeError("x"))  # must not raise
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "No space left on device" in err[0]


@pytest.mark.parametrize("failed", [True, False])
def test_a_restore_attempt_holds_asyncio_records_and_drops_them_only_if_it_failed(failed, caplog):
    caplog.set_level("ERROR")
    with checkpoint._quiet_stderr(grace_s=0.0) as outcome:
        logging.getLogger("asyncio").error("Task exception was never retrieved")
        assert not caplog.records  # held while the attempt runs
        if failed:
            outcome["failed"] = "ValueError: torn"
    assert [r.name for r in caplog.records] == ([] if failed else ["asyncio"])


@pytest.mark.slow
def test_newest_unreadable_checkpoint_falls_back_and_resumes_bit_identically(
    small_fmnist, tmp_path, caplog
):
    config = tiny_config(small_fmnist, keep_checkpoints=3)
    straight, damaged = tmp_path / "straight", tmp_path / "damaged"
    trainer.train_and_evaluate(config, straight)
    trainer.train_and_evaluate(config, damaged)
    assert checkpoint_steps(damaged) == [4, 8, 12]
    # Killed after its last save, before its record said "complete"; the save was torn.
    record = read_result(damaged / "result.json")
    (damaged / "result.json").write_text(json.dumps({**record, "status": "running"}))
    torn = truncate_largest_file(damaged / "checkpoints" / "12")
    caplog.set_level("WARNING")
    trainer.train_and_evaluate(config, damaged)
    messages = [r.getMessage() for r in caplog.records]
    warnings = [m for m in messages if m.startswith("checkpoint 12 in ") and "is unreadable" in m]
    assert len(warnings) == 1, messages
    # The failed restore's abandoned reads ("Task exception was never retrieved") stay quiet.
    assert not [r for r in caplog.records if r.name == "asyncio"], messages
    assert "checkpoint 12" in warnings[0]
    assert "resuming from step 8" in warnings[0]
    moved = damaged / checkpoint.UNREADABLE_DIR / "12"
    assert (moved / torn.relative_to(damaged / "checkpoints" / "12")).exists()  # kept, not deleted
    final = read_result(damaged / "result.json")
    assert final["status"] == "complete" and final["train"]["resumed_from_step"] == 8
    a, b = final_params(straight), final_params(damaged)
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.mark.slow
def test_every_checkpoint_unreadable_is_one_line_and_exit_2(small_fmnist, tmp_path, capsys):
    config = tiny_config(small_fmnist, keep_checkpoints=3)
    trainer.train_and_evaluate(config, tmp_path)
    (tmp_path / "result.json").unlink()
    for step in checkpoint_steps(tmp_path):
        truncate_largest_file(tmp_path / "checkpoints" / str(step))
    before = sorted(str(p) for p in (tmp_path / "checkpoints").rglob("*"))
    flags = [f"--config.{k}={v}" for k, v in _flat(config).items()]
    code = cli.main(["train", "--config", "fashion_mnist:tiny", *flags, "--workdir", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("rsjax train: error: no readable checkpoint in ")
    assert str(tmp_path / "checkpoints") in err[0]
    assert sorted(str(p) for p in (tmp_path / "checkpoints").rglob("*")) == before
    assert not (tmp_path / checkpoint.UNREADABLE_DIR).exists()


@pytest.mark.slow
def test_leftover_temporary_checkpoint_is_ignored(small_fmnist, tmp_path):
    """A save killed mid-write leaves `<step>.orbax-checkpoint-tmp-*`: not a step."""
    config = tiny_config(small_fmnist, num_train_steps=8)
    trainer.train_and_evaluate(config, tmp_path)
    (tmp_path / "result.json").unlink()
    leftover = tmp_path / "checkpoints" / "16.orbax-checkpoint-tmp-1234"
    leftover.mkdir()
    (leftover / "junk").write_text("half a save")
    manager = checkpoint.create_manager(tmp_path, 3)
    assert manager.latest_step() == 8
    manager.close()
    trainer.train_and_evaluate(config, tmp_path)
    assert read_result(tmp_path / "result.json")["status"] == "complete"
    assert leftover.exists()


@pytest.mark.slow
def test_orbax_reads_what_the_fallback_moved_aside_as_a_checkpoint(small_fmnist, tmp_path):
    """Moving aside keeps a checkpoint whole: an intact one moved aside still restores."""
    config = tiny_config(small_fmnist, num_train_steps=4)
    trainer.train_and_evaluate(config, tmp_path)
    manager = checkpoint.create_manager(tmp_path, 3)
    moved = checkpoint._move_aside(manager, 4)
    manager.close()
    restored = ocp.StandardCheckpointer().restore(moved / "default")
    assert restored["step"] == 4
