"""The local sweep launcher: relaunch after a kill, two launchers at once, locks, status (the
TPU launcher is tests/test_slices.py)."""

import argparse
import json
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from etils import epath

from rsjax.errors import UsageError
from rsjax.results import RunRecord, read_result
from rsjax.sweep import commands as sweep_commands
from rsjax.sweep import local, state
from rsjax.sweep.grid import Run

REPO = pathlib.Path(__file__).resolve().parent.parent

# The real worker (`rsjax.sweep.worker`: its lock and its done check) around a stand-in for
# training: it records that it trained, sleeps, and writes a complete result, so the launchers'
# scheduling is exercised without compiling models.
FAKE_WORKER = textwrap.dedent(
    """
    import os, pathlib, sys, time
    import rsjax.train
    from rsjax.results import RunRecord
    from rsjax.sweep import worker

    def train_and_evaluate(config, workdir):
        with open(pathlib.Path(workdir).parent / "trained.log", "a") as log:
            log.write(pathlib.Path(workdir).name + "\\n")
        time.sleep(float(os.environ.get("FAKE_SECONDS", "0.5")))
        header = {"schema": 1, "config": {}, "model": {}, "metrics": {}, "versions": {}}
        RunRecord.start(workdir, header).complete(metrics={"ema_top1": 0.5})
        return {"ema_top1": 0.5}

    rsjax.train.train_and_evaluate = train_and_evaluate
    worker.main([sys.argv[1]])
    """
)


def fake_command(tmp_path):
    script = tmp_path / "fake_worker.py"
    script.write_text(FAKE_WORKER)
    return lambda run_dir, profile_only: [sys.executable, str(script), str(run_dir)]


def grid(n, base="fashion_mnist:tiny"):
    return [Run(f"r{i}", {"seed": i}, base, sweep="test") for i in range(n)]


@pytest.mark.slow
def test_two_launchers_never_train_a_run_twice(tmp_path):
    runs, command = grid(6), fake_command(tmp_path)
    summaries = []

    def launcher():
        summaries.append(
            local.launch_local(
                runs, tmp_path / "sweep", command=command, log=lambda m: None, poll_s=0.05
            )
        )

    threads = [threading.Thread(target=launcher) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(summaries) == 2  # both launchers finished (neither thread raised)
    trained = (tmp_path / "sweep" / "trained.log").read_text().split()
    assert sorted(trained) == sorted(r.name for r in runs)  # each exactly once
    assert sum(len(s.ran) for s in summaries) == len(runs)
    states = state.sweep_states(tmp_path / "sweep")
    assert {s.state for s in states} == {"complete"}


def test_the_real_worker_respects_the_lock_and_the_done_check(tmp_path, monkeypatch):
    """Unit-level: `run_one` trains nothing while another holder has the lock or the run is done."""
    import rsjax.train
    from rsjax.results import RunRecord
    from rsjax.sweep import worker

    calls = []

    def fake_train(config, workdir):
        calls.append(workdir)
        header = {"schema": 1, "config": {}, "model": {}, "metrics": {}, "versions": {}}
        RunRecord.start(workdir, header).complete(metrics={})
        return {}

    monkeypatch.setattr(rsjax.train, "train_and_evaluate", fake_train)
    from rsjax.train import compilation

    monkeypatch.setattr(compilation, "use_persistent_cache", lambda directory: str(directory))
    (run,) = grid(1)
    state.write_sweep(tmp_path, [run])
    run_dir = tmp_path / run.name
    with state.run_lock(run_dir) as acquired:
        assert acquired
        assert worker.run_one(run_dir) == state.LOCKED_EXIT_CODE
    assert calls == []
    assert worker.run_one(run_dir) == 0 and len(calls) == 1
    assert worker.run_one(run_dir) == state.DONE_EXIT_CODE and len(calls) == 1


def test_a_held_lock_is_respected_and_released_on_exit(tmp_path):
    runs, command = grid(2), fake_command(tmp_path)
    state.write_sweep(tmp_path / "sweep", runs)
    with state.run_lock(tmp_path / "sweep" / "r0") as acquired:
        assert acquired
        assert state.run_state(tmp_path / "sweep" / "r0").state == "running"
        summary = local.launch_local(runs, tmp_path / "sweep", command=command, log=lambda m: None)
    assert summary.skipped_locked == ["r0"] and summary.ran == ["r1"]
    assert state.run_state(tmp_path / "sweep" / "r0").state == "pending"  # lock gone with us


@pytest.mark.parametrize("where", ["local", "gs"])
def test_status_reports_failures_and_corrupt_results(tmp_path, capsys, where, request):
    runs = grid(4)
    if where == "gs":
        root = request.getfixturevalue("fake_bucket")
        workdir = epath.Path("gs://b/sweep")
    else:
        workdir = epath.Path(tmp_path / "sweep")
    state.write_sweep(workdir, runs)
    (workdir / "r1" / "result.json").write_text("{not json")
    (workdir / "r2" / "result.json").write_text(
        json.dumps(
            {
                "schema": 1,
                "status": "failed",
                "error": "loss is nan at step 7",
                "config": {},
                "model": {},
                "metrics": {},
                "versions": {},
            }
        )
    )
    (workdir / "r3" / "checkpoints" / "5").mkdir(parents=True)
    assert [s.state for s in state.sweep_states(workdir)] == [
        "pending",
        "corrupt",
        "failed",
        "partial",
    ]
    sweep_commands.status(argparse.Namespace(workdir=str(workdir), all=False))
    out = capsys.readouterr().out
    assert "4 runs: 1 failed, 1 corrupt, 1 partial, 1 pending" in out
    assert "loss is nan at step 7" in out and "not valid JSON" in out
    if where == "gs":
        assert out.startswith("gs://b/sweep: ")
        assert (root / "b" / "sweep" / "sweep.json").is_file()  # it went through the stand-in
        with pytest.raises(UsageError, match="needs a local --workdir"):
            sweep_commands.launch(
                argparse.Namespace(
                    sweep_file=str(REPO / "sweeps" / "fmnist_fig3.py:demo"),
                    only=None,
                    launcher="local",
                    workdir=str(workdir),
                    parallel=1,
                    profile_only=False,
                    profile_batch_per_device=128,
                )
            )


def test_a_profile_launch_starts_each_profile_at_the_batch_it_was_given(tmp_path, monkeypatch):
    """--profile_batch_per_device reaches `profile_run` through the worker's argv."""
    import rsjax.train.profile_run
    from rsjax.sweep import worker
    from rsjax.train import compilation

    assert "--batch_per_device" not in local.worker_command(tmp_path, False, 32)
    argv = local.worker_command(tmp_path / "r0", True, 32)
    assert argv[-4:] == [str(tmp_path / "r0"), "--profile_only", "--batch_per_device", "32"]
    batches = []

    def fake_profile(config, workdir, *, batch_per_device):
        batches.append(batch_per_device)
        header = {"schema": 1, "config": {}, "model": {}, "metrics": {}, "versions": {}}
        RunRecord.start(workdir, header).profiled({"step_s": 1.0})

    monkeypatch.setattr(rsjax.train.profile_run, "profile_run", fake_profile)
    monkeypatch.setattr(compilation, "use_persistent_cache", lambda directory: str(directory))
    (run,) = grid(1)
    state.write_sweep(tmp_path, [run])
    with pytest.raises(SystemExit) as exit_code:
        worker.main(argv[3:])
    assert exit_code.value.code == 0 and batches == [32]
    assert state.is_done(tmp_path / "r0", profile_only=True)


def test_a_profile_batch_below_one_is_refused_before_the_launch(tmp_path, capsys):
    from rsjax import cli

    code = cli.main(
        ["sweep", "launch", str(REPO / "sweeps" / "paper_fig4.py"), "--workdir",
         str(tmp_path / "w"), "--profile_only", "--profile_batch_per_device", "0"]
    )  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--profile_batch_per_device must be >= 1" in err[0]
    assert not (tmp_path / "w").exists()


def test_only_glob_and_bad_parallel(tmp_path):
    runs = grid(3)
    assert [r.name for r in local.select(runs, "r[12]")] == ["r1", "r2"]
    with pytest.raises(ValueError, match="matches none"):
        local.select(runs, "zzz*")
    with pytest.raises(ValueError, match="parallel"):
        local.launch_local(runs, tmp_path, parallel=0)


@pytest.mark.slow
def test_killed_launcher_relaunch_finishes_without_redoing(small_fmnist, tmp_path):
    """Real training: kill the launcher (and its worker) after the first run completes."""
    data = {
        "data.manual_dir": small_fmnist["manual_dir"],
        "data.data_dir": small_fmnist["data_dir"],
        "data.shuffle_buffer": 256,
        "num_train_steps": 30,
        "checkpoint_every_steps": 10,
        "log_every_steps": 10,
        "progress": False,
        "mesh.data": 1,  # the workers inherit 8 simulated devices; the eval batch is 500
    }
    sweep_file = tmp_path / "tiny_sweep.py"
    sweep_file.write_text(
        "from rsjax.sweep import Run\n"
        f"DATA = {data!r}\n"
        "def get_sweep():\n"
        "    return [Run(f's{n}', {**DATA, 'num_train_steps': n}, 'fashion_mnist:tiny')\n"
        "            for n in (30, 40)]\n"
    )
    workdir = tmp_path / "sweep"
    argv = [
        sys.executable,
        "-m",
        "rsjax.cli",
        "sweep",
        "launch",
        str(sweep_file),
        "--workdir",
        str(workdir),
    ]
    # Cache every compilation (tiny programs compile in under the default 1 s threshold).
    env = {**os.environ, "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    first = subprocess.Popen(argv, cwd=REPO, start_new_session=True, env=env)
    deadline = time.time() + 600
    while time.time() < deadline:
        done = workdir / "s30" / "result.json"
        if done.exists() and read_result(done)["status"] in ("complete", "failed"):
            break
        time.sleep(1)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert read_result(workdir / "s30" / "result.json")["status"] == "complete"
    finished_at = (workdir / "s30" / "result.json").stat().st_mtime
    result = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=900, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "already done: 1" in result.stdout
    assert (workdir / "s30" / "result.json").stat().st_mtime == finished_at
    record = read_result(workdir / "s40" / "result.json")
    assert record["status"] == "complete" and record["name"] == "s40"
    assert (
        record["run_id"] == Run("s40", {**data, "num_train_steps": 40}, "fashion_mnist:tiny").run_id
    )
    # The two runs differ only in length: the second loaded the first's compiled programs from
    # the sweep's persistent cache (the schedule is an argument of the step, not a constant).
    cache = workdir / ".jax_cache"
    for program in ("jit_step_with_schedule", "jit_eval_step", "jit_create_train_state"):
        assert len(list(cache.glob(f"{program}-*"))) == 1, sorted(p.name for p in cache.iterdir())
