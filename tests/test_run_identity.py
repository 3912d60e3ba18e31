"""One run, one id: a crashed sweep run, a completed one and the same config started by hand all
carry the run id `rsjax sweep plan` printed, from their first record on."""

import json

import pytest

from rsjax import cli, configs
from rsjax.data import input_pipeline
from rsjax.errors import UsageError
from rsjax.results import collect, read_result
from rsjax.sweep import Run, startup, state, worker
from tests.test_lifecycle import failing_after

TINY = {
    "global_batch_size": 32,
    "eval_batch_size": 50,
    "num_train_steps": 4,
    "log_every_steps": 2,
    "checkpoint_every_steps": 2,
    "mesh.data": 1,
    "progress": False,
    "data.shuffle_buffer": 256,
}


def sweep_file(tmp_path, small_fmnist):
    data = {
        "data.manual_dir": small_fmnist["manual_dir"],
        "data.data_dir": small_fmnist["data_dir"],
    }
    path = tmp_path / "ids.py"
    path.write_text(
        "from rsjax.sweep import Run\n"
        f"COMMON = {json.dumps({**TINY, **data})!r}\n"
        "def get_sweep():\n"
        "    import json\n"
        "    common = json.loads(COMMON)\n"
        "    return [Run('ok', common, 'fashion_mnist:tiny'),\n"
        "            Run('crash', {**common, 'seed': 1}, 'fashion_mnist:tiny')]\n"
    )
    return path, {**TINY, **data}


@pytest.mark.slow
def test_crashed_complete_and_hand_started_runs_share_the_planned_id(
    small_fmnist, tmp_path, capsys, monkeypatch
):
    path, overrides = sweep_file(tmp_path, small_fmnist)
    assert cli.main(["sweep", "plan", str(path), "--jsonl"]) == 0
    planned = {
        r["name"]: r["run_id"] for r in map(json.loads, capsys.readouterr().out.splitlines())
    }

    from rsjax.sweep.loader import load_sweep
    from rsjax.train import compilation

    # In-process workers: keep this session's compilation cache setting as it is.
    monkeypatch.setattr(compilation, "use_persistent_cache", lambda directory: str(directory))
    sweep_dir = tmp_path / "sweep"
    state.write_sweep(sweep_dir, load_sweep(path))
    assert worker.run_one(sweep_dir / "ok") == 0
    real_batches = input_pipeline.train_batches
    monkeypatch.setattr(input_pipeline, "train_batches", failing_after(1, RuntimeError("boom")))
    assert worker.run_one(sweep_dir / "crash") == 1
    monkeypatch.setattr(input_pipeline, "train_batches", real_batches)
    flags = [f"--config.{k}={v}" for k, v in overrides.items()]
    hand = tmp_path / "by_hand"
    assert (
        cli.main(["train", "--config", "fashion_mnist:tiny", *flags, "--workdir", str(hand)]) == 0
    )

    crashed = read_result(sweep_dir / "crash" / "result.json")
    assert crashed["status"] == "failed" and crashed["run_id"] == planned["crash"]
    assert crashed["sweep"] == "ids" and crashed["name"] == "crash"
    done = read_result(sweep_dir / "ok" / "result.json")
    assert done["run_id"] == planned["ok"]
    by_hand = read_result(hand / "result.json")
    assert by_hand["run_id"] == planned["ok"] and by_hand["sweep"] is None

    df = collect([sweep_dir, hand], statuses=("complete", "failed"))
    assert sorted(df["run_id"]) == sorted(planned.values())  # two runs, not three
    assert len(df.attrs["summary"].duplicates) == 1


def test_a_run_started_from_its_startup_script_command_has_the_planned_identity():
    """The startup script's `rsjax train` flags rebuild the run's config: same id, name, sweep."""
    run = Run(
        "d101-w1.5",
        {"model.depth": 101, "model.width_multiplier": 1.5, "num_epochs": 350.0,
         "data.area_range": [0.5, 1.0], "model.stage_sizes": []},
        "imagenet:resnetrs50_i160",
        sweep="paper_fig3",
    )  # fmt: skip
    spec, overrides, rest = configs.split_flags(
        ["--config", run.base, *startup.config_flags(run)], "test"
    )
    assert rest == []
    config = configs.load(spec, overrides, as_text=True)
    assert (config.name, config.sweep) == ("d101-w1.5", "paper_fig3")
    assert configs.run_id(config) == run.run_id
    assert configs.run_id(config) != Run("x", {}, run.base).run_id  # the id can tell runs apart
    config.name, config.sweep = "started-by-hand", ""
    assert configs.run_id(config) == run.run_id  # labels are not part of the id


def test_a_key_added_later_keeps_earlier_runs_ids_and_resumption(tmp_path):
    """`data.input_shards` at its neutral 0 is left out of the id, so a config.json written
    before the key existed has the id it had, and its workdir still resumes."""
    from rsjax.train import checkpoint

    config = configs.load("fashion_mnist:tiny")
    earlier = json.loads(config.to_json())
    del earlier["data"]["input_shards"]  # what config.json held before the key existed
    assert configs.run_id(earlier) == configs.run_id(config)
    sharded = configs.load("fashion_mnist:tiny", {"data.input_shards": 2})
    assert configs.run_id(sharded) != configs.run_id(config)
    (tmp_path / checkpoint.CONFIG_FILE).write_text(json.dumps(earlier))
    checkpoint.check_or_write_config(tmp_path, config)  # the same run: accepted
    with pytest.raises(UsageError, match=r"different config.*data\.input_shards"):
        checkpoint.check_or_write_config(tmp_path, sharded)
