"""The queued-resource TPU launcher against a stateful fake gcloud (tests/fake_gcloud.py).

Fast tests boot fake slices whose workers run the real startup script and slice worker around a
stand-in `rsjax` (it prints progress, "checkpoints" its step to a file, writes a real record),
so the controller's scheduling, preemption recovery, failure limits and cost guard are exercised
in seconds. The slow test trains real 2-process runs on the fake slices.
"""

import argparse
import contextlib
import dataclasses
import fcntl
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from rsjax.errors import UsageError
from rsjax.results import RunRecord, read_result
from rsjax.sweep import attempts, cloud, shipping, slices, startup, state, tpu_vm
from rsjax.sweep import commands as sweep_commands
from rsjax.sweep.grid import Run

REPO = pathlib.Path(__file__).resolve().parent.parent

# A stand-in for the venv's `rsjax`: `rsjax train --workdir=W --config.name=N ...` prints a
# progress line per step, keeps its step in W/progress.json (its "checkpoint"), resumes from it,
# and writes a real record: complete, or failed for a name in $FAKE_TRAIN_FAIL. Only process 0
# writes (--process_id, as rsjax train does).
FAKE_RSJAX = textwrap.dedent(
    """
    import json, os, pathlib, sys, time
    from rsjax.results import RunRecord
    args = dict(a[2:].split("=", 1) for a in sys.argv[2:] if a.startswith("--") and "=" in a)
    argv = sys.argv
    process = int(argv[argv.index("--process_id") + 1]) if "--process_id" in argv else 0
    workdir = pathlib.Path(args["workdir"])
    workdir.mkdir(parents=True, exist_ok=True)
    progress = workdir / "progress.json"
    start = json.loads(progress.read_text())["step"] if progress.exists() else 0
    if start:
        print(f"resumed from step {start}", flush=True)
    steps = int(os.environ.get("FAKE_TRAIN_STEPS", "6"))
    header = {"schema": 1, "config": {}, "model": {}, "metrics": {}, "versions": {}}
    header["run_id"] = json.loads(os.environ.get("FAKE_RUN_IDS", "{}")).get(args["config.name"])
    record = RunRecord.start(workdir, header, enabled=process == 0)
    if sys.argv[1] == "profile":  # rsjax profile --batch_per_device=N: 0.5 s per N images
        batch = 4 * int(args["batch_per_device"])
        print(f"profiling from batch {batch}", flush=True)
        record.profiled({"step_s": 0.5, "batch": batch, "normalized_batch": batch,
                         "normalized_step_s": 0.5, "device_kind": "fake", "num_devices": 4})
        sys.exit(0)
    for step in range(start, steps):
        time.sleep(float(os.environ.get("FAKE_TRAIN_STEP_S", "0.2")))
        print(f"step {step + 1}/{steps} | loss 1.0", flush=True)
        if process == 0:
            progress.write_text(json.dumps({"step": step + 1}))
    if args["config.name"] in os.environ.get("FAKE_TRAIN_FAIL", "").split(","):
        record.fail(FloatingPointError("loss is nan at step 3"))
        sys.exit(1)
    seen = {"tfds_data_dir": os.environ.get("TFDS_DATA_DIR", "")}
    record.complete(metrics={"ema_top1": 0.5, **seen}, train={"resumed_from_step": start})
    """
)


class FakeCloud:
    def __init__(self, root: pathlib.Path):
        self.root = root
        self.state_file = root / "gcloud-state.json"

    def state(self) -> dict:
        """The fake's state, read under its lock (a gcloud call rewrites the file in place)."""
        with open(self.state_file) as f:
            fcntl.flock(f, fcntl.LOCK_SH)
            return json.load(f)

    def set_faults(self, **faults) -> None:
        with open(self.state_file, "r+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            current = json.load(f)
            current["faults"].update(faults)
            f.seek(0)
            f.truncate()
            json.dump(current, f)

    def live(self) -> list[str]:
        return sorted(self.state()["resources"])

    def creates_per_name(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for verb, *rest in self.state()["calls"]:
            if verb == "create":
                counts[rest[0]] = counts.get(rest[0], 0) + 1
        return counts


def _executable(path: pathlib.Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o755)


@pytest.fixture
def fake_cloud(tmp_path, monkeypatch):
    """gcloud on PATH is the fake; slices boot workers from `FAKE_GCLOUD_VENV` (a stand-in venv
    whose `rsjax` is FAKE_RSJAX, unless a test points it at the real one). At the end, no queued
    resource may be left and no worker process survives."""
    root = tmp_path / "cloud"
    (root / "bin").mkdir(parents=True)
    _executable(
        root / "bin" / "gcloud",
        f'#!/bin/sh\nexec {sys.executable} {REPO / "tests" / "fake_gcloud.py"} "$@"\n',
    )
    venv = root / "venv" / "bin"
    venv.mkdir(parents=True)
    _executable(venv / "python", f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    _executable(venv / "rsjax", f"#!{sys.executable}\n{FAKE_RSJAX}")
    fake = FakeCloud(root)
    fake.state_file.write_text(json.dumps({"faults": {}, "resources": {}}))
    monkeypatch.setenv("PATH", f"{root / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_GCLOUD_STATE", str(fake.state_file))
    monkeypatch.setenv("FAKE_GCLOUD_VENV", str(root / "venv"))
    monkeypatch.setenv("FAKE_GCLOUD_BUCKET", str(root / "bucket"))
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # the workers import this checkout
    yield fake
    left = fake.state()["resources"]
    for resource in left.values():
        for pgid in resource.get("pgids", []):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
    assert not left, f"queued resources left in the fake: {sorted(left)}"


@pytest.fixture
def payload(tmp_path) -> shipping.Payload:
    wheel = tmp_path / "ship" / "rsjax-0.1.0-py3-none-any.whl"
    wheel.parent.mkdir()
    wheel.write_bytes(b"PK")
    return shipping.Payload(wheel=wheel, lock=REPO / "requirements" / "lock.txt")


SPEC = cloud.SliceSpec(project="proj", zone="us-central2-b", accelerator_type="v4-32")
FAST = slices.Limits(
    max_slices=2, max_failures=1, poll_s=0.2, heartbeat_s=0.3, backoff_s=0.5, claim_grace_s=30
)


def grid(n: int, sweep: str = "test") -> list[Run]:
    return [Run(f"r{i}", {"seed": i}, "fashion_mnist:tiny", sweep=sweep) for i in range(n)]


def controller(runs, workdir, payload, limits=FAST, logs=None) -> slices.Controller:
    qr = cloud.QueuedResources(SPEC, log=(logs.append if logs is not None else print))
    return slices.Controller(
        runs, str(workdir), qr, payload, limits, log=logs.append if logs is not None else print
    )


def run_until_done(ctl: slices.Controller, timeout_s: float = 120.0) -> int:
    deadline = time.monotonic() + timeout_s
    state.write_sweep(ctl.workdir, ctl.runs)
    while time.monotonic() < deadline:
        tick = ctl.tick()
        if tick.finished:
            return 0 if tick.complete == len(ctl.runs) else 1
        time.sleep(ctl.limits.poll_s)
    raise AssertionError("the sweep did not finish in time")


def test_names_and_labels_meet_gcps_rules_for_long_sweep_names():
    long_workdir = "gs://a-bucket/" + "Very_Long Sweep.Name-" * 8
    sweep = cloud.sweep_label(long_workdir)
    assert cloud.LABEL_VALUE_RE.fullmatch(sweep) and len(sweep) <= 63
    assert sweep != cloud.sweep_label("gs://other-bucket/" + "Very_Long Sweep.Name-" * 8)
    for attempt in (1, 12, 1234):
        name = cloud.resource_name("rsjax-" * 20, sweep, "3f2a9c1e", attempt)
        assert cloud.NAME_RE.fullmatch(name) and len(name) <= 63
        assert name.endswith(f"-3f2a9c1e-a{attempt}")
        labels = cloud.labels(sweep, "3f2a9c1e", attempt)
        assert all(cloud.LABEL_RE.fullmatch(k) and cloud.LABEL_VALUE_RE.fullmatch(v)
                   for k, v in labels.items())  # fmt: skip
    assert cloud.sweep_label("gs://b/9lives/") == cloud.sweep_label("gs://b/9lives")
    assert cloud.sweep_label("gs://b/9lives")[0].isalpha()
    with pytest.raises(ValueError, match="label"):
        cloud.labels("Upper", "x", 1)


def test_the_startup_script_passes_bash_n_and_shellcheck(payload, tmp_path):
    run = Run("d101-w1.5-r224-e350", {"model.depth": 101, "data.area_range": [0.08, 1.0]},
              "imagenet:resnetrs50_i160", sweep="paper_fig3")  # fmt: skip
    qr = cloud.QueuedResources(SPEC)
    script = startup.render(
        startup.Attempt(run, "gs://b/fig3/" + run.name, 3, "rsjax-fig3-abc-a3", "gs://b/fig3/_s"),
        payload,
        qr,
        env={"TFDS_DATA_DIR": "gs://b/tensorflow datasets"},
    )
    path = tmp_path / "startup.sh"
    path.write_text(script)
    assert subprocess.run(["bash", "-n", str(path)]).returncode == 0
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck is needed (apt-get install shellcheck; `make test` does it)"
    checked = subprocess.run([shellcheck, "-s", "bash", str(path)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout
    jax_version = shipping.locked_version(payload.lock, "jax")
    assert f"'jax[tpu]=={jax_version}'" in script and "python3.11" in script
    assert "--config.data.area_range=(0.08,1.0)" in script and "--jax_distributed" in script
    assert "queued-resources delete rsjax-fig3-abc-a3" in script
    assert "export TFDS_DATA_DIR='gs://b/tensorflow datasets'\n" in script


@pytest.mark.slow
def test_a_sweep_runs_on_two_slices_with_a_preemption_and_a_failure(
    fake_cloud, payload, tmp_path, monkeypatch
):
    """6 runs, --max_slices 2: never more than 2 slices; r1 is preempted mid-training and
    completes as attempt 2 from its checkpoint; r4 fails and, with --max_failures 1, is not
    retried; nothing is left in the fake."""
    runs = grid(6)
    monkeypatch.setenv("FAKE_TRAIN_STEP_S", "0.5")
    monkeypatch.setenv("FAKE_TRAIN_FAIL", "r4")
    fake_cloud.set_faults(preempt={runs[1].run_id: 3}, wait_polls=2)
    assert run_until_done(controller(runs, tmp_path / "w", payload)) == 1
    cloud_state = fake_cloud.state()
    assert cloud_state["high_water"] == 2 and cloud_state["preempted"]
    for run in runs:
        record = read_result(tmp_path / "w" / run.name / "result.json")
        history = attempts.read_attempts(tmp_path / "w" / run.name)
        if run.name == "r4":
            assert record["status"] == "failed" and len(history) == 1
            assert history[0].exit["returncode"] == 1
        elif run.name == "r1":
            assert record["status"] == "complete" and [a.number for a in history] == [1, 2]
            assert history[0].lost["reason"].startswith("preempted")
            assert record["train"]["resumed_from_step"] >= 3
        else:
            assert record["status"] == "complete" and len(history) == 1
            assert record["train"]["resumed_from_step"] == 0
    log = (tmp_path / "w" / "r1" / "_launch" / "attempt-2" / "worker-0.log").read_text()
    assert "resumed from step" in log and "step 6/6" in log
    assert max(fake_cloud.creates_per_name().values()) == 1


@pytest.mark.slow
def test_quota_errors_back_off_and_failed_creates_and_deletes_leave_nothing(
    fake_cloud, payload, tmp_path
):
    runs = grid(2)
    fake_cloud.set_faults(quota_errors=2, create_fails_leaving=1, delete_failures=2)
    logs: list[str] = []
    assert run_until_done(controller(runs, tmp_path / "w", payload, logs=logs)) == 0
    assert sum("next create in" in line for line in logs) == 3  # 2 quota, 1 INTERNAL
    assert any("delete" in line and "failed" in line for line in logs)
    for run in runs:
        assert read_result(tmp_path / "w" / run.name / "result.json")["status"] == "complete"
    # The create that failed but left its resource (the third create: two quota errors first)
    # is followed at once by a describe that finds it and a delete of it.
    calls = [(verb, rest[0]) for verb, *rest in fake_cloud.state()["calls"] if verb != "list"]
    third = [i for i, (verb, _) in enumerate(calls) if verb == "create"][2]
    leaving = calls[third][1]
    assert calls[third + 1 : third + 3] == [("describe", leaving), ("delete", leaving)]
    assert fake_cloud.live() == []


def test_a_profile_only_sweep_profiles_on_slices_and_its_profiles_estimate_slice_hours(
    fake_cloud, payload, tmp_path, monkeypatch, capsys
):
    """--profile_only on slices: each attempt runs `rsjax profile --batch_per_device N
    --jax_distributed`, a "profiled" record is done (slice deleted, not retried), and the
    profiles feed the --dry_run estimate of the same sweep."""
    runs = [Run(f"r{i}", {"num_train_steps": 3600 * (i + 1)}, "fashion_mnist:tiny", sweep="t")
            for i in range(2)]  # fmt: skip
    monkeypatch.setenv("FAKE_RUN_IDS", json.dumps({run.name: run.run_id for run in runs}))
    qr = cloud.QueuedResources(SPEC)
    ctl = slices.Controller(
        runs, str(tmp_path / "p"), qr, payload, FAST, profile_batch_per_device=16
    )
    script = ctl.script(runs[0], 1)
    assert '/bin/rsjax" profile --config=fashion_mnist:tiny' in script
    assert "--batch_per_device=16" in script and "--jax_distributed" in script
    assert run_until_done(ctl) == 0
    for run in runs:
        assert state.result_status(tmp_path / "p" / run.name) == "profiled"
        log = (tmp_path / "p" / run.name / "_launch" / "attempt-1" / "worker-0.log").read_text()
        assert "profiling from batch 64" in log
        assert [a.number for a in attempts.read_attempts(tmp_path / "p" / run.name)] == [1]
    assert max(fake_cloud.creates_per_name().values()) == 1
    capsys.readouterr()
    args = launch_args(payload, profiles=str(tmp_path / "p"), max_slices=2)
    assert tpu_vm.launch(runs, args) == 0
    out = capsys.readouterr().out
    # 0.5 s per 64 images at the runs' batch (128: 1 s per step) x 3600 and 7200 steps.
    assert "estimated 3.0 slice-hours of train steps for 2 of 2 runs" in out
    assert "at --max_slices 2: at least 2.0 h of wall time" in out


@pytest.mark.slow
def test_launch_env_reaches_every_run_and_bad_env_is_one_line(fake_cloud, payload, tmp_path):
    """--env KEY=VALUE is exported on every worker (TFDS_DATA_DIR: where the data lives, outside
    the config, so the run ids stay those of the sweep file)."""
    runs = grid(2)
    ids = [run.run_id for run in runs]
    ctl = controller(runs, tmp_path / "w", payload)
    ctl.env = startup.parse_env(["TFDS_DATA_DIR=gs://b/tfds"])
    assert run_until_done(ctl) == 0
    for run in runs:
        metrics = read_result(tmp_path / "w" / run.name / "result.json")["metrics"]
        assert metrics["tfds_data_dir"] == str(tmp_path / "cloud" / "bucket" / "b" / "tfds")
    assert [run.run_id for run in runs] == ids
    for bad in (["NOEQUALS"], ["1BAD=x"], ["A-B=x"]):
        with pytest.raises(ValueError, match="KEY=VALUE"):
            startup.parse_env(bad)


@pytest.mark.slow
def test_the_budget_stops_new_creates(fake_cloud, payload, tmp_path):
    runs = grid(3)
    limits = slices.Limits(
        max_slices=1, max_failures=1, poll_s=0.2, heartbeat_s=0.3, budget_slice_hours=1e-9
    )
    logs: list[str] = []
    assert run_until_done(controller(runs, tmp_path / "w", payload, limits, logs)) == 1
    assert any("budget spent" in line for line in logs)
    statuses = [state.result_status(tmp_path / "w" / r.name) for r in runs]
    assert statuses.count("complete") == 1 and statuses.count(None) == 2


def _controller_process(workdir, payload, n_runs, tmp_path, tag):
    script = tmp_path / f"controller_{tag}.py"
    script.write_text(textwrap.dedent(f"""
        import pathlib, sys
        sys.path.insert(0, {str(REPO)!r})
        from tests.test_slices import FAST, SPEC, grid
        from rsjax.sweep import cloud, shipping, slices
        payload = shipping.Payload(pathlib.Path({str(payload.wheel)!r}),
                                   pathlib.Path({str(payload.lock)!r}))
        ctl = slices.Controller(grid({n_runs}), {str(workdir)!r}, cloud.QueuedResources(SPEC),
                                payload, FAST)
        sys.exit(ctl.run())
    """))  # fmt: skip
    with open(tmp_path / f"controller_{tag}.log", "w") as log:
        return subprocess.Popen([sys.executable, str(script)], stdout=log, stderr=subprocess.STDOUT)


@pytest.mark.slow
def test_a_killed_controller_restarts_and_two_controllers_make_one_slice_per_attempt(
    fake_cloud, payload, tmp_path, monkeypatch
):
    """Two controllers start together on one sweep; one is SIGKILLed mid-sweep and restarted:
    every attempt was created once (ALREADY_EXISTS is adopted), and every run completes once."""
    monkeypatch.setenv("FAKE_TRAIN_STEP_S", "0.5")
    workdir = tmp_path / "w"
    first = _controller_process(workdir, payload, 4, tmp_path, "a")
    second = _controller_process(workdir, payload, 4, tmp_path, "b")
    deadline = time.monotonic() + 60
    while not fake_cloud.state().get("high_water") and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)
    first.send_signal(signal.SIGKILL)
    first.wait()
    restarted = _controller_process(workdir, payload, 4, tmp_path, "c")
    assert second.wait(timeout=120) == 0 and restarted.wait(timeout=120) == 0
    assert fake_cloud.state()["high_water"] <= 2
    # One name per run (attempt 1): a second controller's create of it got ALREADY_EXISTS.
    assert len(fake_cloud.creates_per_name()) == 4
    for run in grid(4):
        assert state.result_status(workdir / run.name) == "complete"
        assert [a.number for a in attempts.read_attempts(workdir / run.name)] == [1]


def test_sweep_down_deletes_every_slice_of_the_sweep_and_no_other(fake_cloud, payload, tmp_path):
    ctl = controller(grid(2), tmp_path / "w", payload)
    other = controller(grid(1, sweep="other"), tmp_path / "other", payload)
    fake_cloud.set_faults(wait_polls=1000)  # the slices never start
    state.write_sweep(ctl.workdir, ctl.runs)
    assert len(ctl.tick().created) == 2 and len(other.tick().created) == 1
    args = argparse.Namespace(workdir=str(tmp_path / "w"), project="proj", zone="us-central2-b")
    fake_cloud.set_faults(delete_failures=1)
    assert tpu_vm.down(args) == 0
    assert len(fake_cloud.live()) == 1  # the other sweep's
    assert slices.down(str(tmp_path / "other"), other.qr) == 0


def test_a_complete_runs_slice_waits_for_its_workers_last_uploads(fake_cloud, payload, tmp_path):
    """A run whose record is complete while its attempt has no exit.json (worker 0 still copying
    its last log up) keeps its slice, counted live, for exit_grace_s; a run whose attempt has
    ended loses its slice at once."""
    now = [time.time()]
    limits = dataclasses.replace(FAST, exit_grace_s=60.0)
    ctl = slices.Controller(
        grid(2), str(tmp_path / "w"), cloud.QueuedResources(SPEC), payload, limits,
        clock=lambda: now[0],
    )  # fmt: skip
    fake_cloud.set_faults(wait_polls=1000)  # the slices never boot: the test writes the records
    state.write_sweep(ctl.workdir, ctl.runs)
    assert len(ctl.tick().created) == 2
    header = {"schema": 1, "config": {}, "model": {}, "metrics": {}, "versions": {}}
    for run in ctl.runs:
        RunRecord.start(tmp_path / "w" / run.name, header).complete(metrics={"top1": 0.5})
    ended = attempts.attempt_dir(ctl.run_dir(ctl.runs[1]), 1) / attempts.EXIT_FILE
    attempts.write_json(ended, {"returncode": 0, "ended_at": now[0], "step": 6})
    tick = ctl.tick()
    assert len(tick.deleted) == 1 and ctl.runs[1].run_id in tick.deleted[0]
    assert tick.complete == 2 and tick.live == 1 and not tick.finished
    now[0] += 61.0
    tick = ctl.tick()
    assert len(tick.deleted) == 1 and tick.live == 0
    assert ctl.tick().finished and not fake_cloud.live()


def test_status_and_logs_read_attempts_on_a_gs_workdir(fake_bucket, capsys):
    runs = grid(3)
    workdir = "gs://bucket/sweep"
    state.write_sweep(workdir, runs)
    now = time.time()
    attempts.claim(f"{workdir}/r0", 1, "x-a1")
    attempts.record_lost(f"{workdir}/r0", 1, "preempted (SUSPENDED)")
    attempts.claim(f"{workdir}/r0", 2, "x-a2")
    attempts.write_json(
        attempts.attempt_dir(f"{workdir}/r0", 2) / attempts.HEARTBEAT_FILE,
        {"started_at": now - 1800, "time": now - 40, "step": 1200, "beats": 60},
    )
    (attempts.attempt_dir(f"{workdir}/r0", 2) / attempts.log_name(1)).write_text("step 1200/9000\n")
    attempts.claim(f"{workdir}/r1", 1, "x-b1")
    sweep_commands.status(argparse.Namespace(workdir=workdir, all=True))
    out = capsys.readouterr().out
    assert "1 running, 1 queued, 1 pending; 0.50 slice-hours" in out  # live: up to now
    assert "attempt 2: step 1200, heartbeat 40 s ago; preempted x1" in out
    assert "attempt 1: queued since" in out
    sweep_commands.logs(argparse.Namespace(run_dir=f"{workdir}/r0", worker=1, attempt=None))
    assert capsys.readouterr().out == "step 1200/9000\n"
    with pytest.raises(UsageError, match="no attempt 5"):
        sweep_commands.logs(argparse.Namespace(run_dir=f"{workdir}/r0", worker=1, attempt=5))


def test_no_pathlib_for_workdir_paths_in_rsjax_sweep():
    """Workdir paths go through etils.epath (gs://); pathlib is for local files only: the
    shipped wheel and lock and the checkout (shipping), sweep files (loader)."""
    local_files = {"shipping.py", "loader.py"}
    for path in (REPO / "rsjax" / "sweep").glob("*.py"):
        if path.name not in local_files:
            assert "pathlib" not in path.read_text(), f"{path.name} uses pathlib"


def launch_args(payload, **overrides) -> argparse.Namespace:
    args = dict(
        workdir="gs://b/fig3", project="proj", zone="us-central2-b", accelerator_type="v4-32",
        runtime_version="tpu-ubuntu2204-base", provisioning="spot", valid_until="6h",
        max_slices=8, max_failures=2, budget_slice_hours=None, heartbeat_timeout_s=1800.0,
        poll_s=60.0, wheel=str(payload.wheel), lock=str(payload.lock), dry_run=True,
        profile_only=False, profile_batch_per_device=128, profiles=None,
    )  # fmt: skip
    return argparse.Namespace(**{**args, **overrides})


def test_dry_run_prints_every_create_with_labels_and_script(payload, capsys):
    from rsjax.sweep.loader import load_sweep

    runs = load_sweep(str(REPO / "sweeps" / "paper_fig3.py"))
    args = launch_args(payload)
    assert tpu_vm.launch(runs, args) == 0
    out = capsys.readouterr().out
    assert out.count("queued-resources create") == len(runs) == 144
    assert out.count("#!/bin/bash") == len(runs)
    assert out.count("--labels=rsjax-attempt=1,rsjax-run=") == len(runs) and "--spot" in out
    with pytest.raises(UsageError, match="--accelerator_type"):
        tpu_vm.launch(runs, argparse.Namespace(**{**vars(args), "accelerator_type": None}))


def test_bad_launch_flags_and_shipments_are_one_line_before_anything_launches(
    payload, tmp_path, monkeypatch
):
    runs = [Run("a", {"model.depth": 101}, "imagenet:resnetrs50_i160")]
    for bad, match in (
        ({"wheel": str(tmp_path / "nope.whl")}, "is not a wheel file"),
        ({"lock": str(tmp_path / "nope.txt")}, "does not exist"),
        ({"max_slices": 0}, "at least 1"),
        ({"budget_slice_hours": -1.0}, "must be positive"),
        ({"project": None}, "--project"),
        ({"dry_run": False}, "gcloud is not on PATH"),
        ({"profiles": str(tmp_path / "none")}, "--profiles .*: no such directory"),
        ({"profiles": str(tmp_path), "dry_run": False}, "read by --dry_run only"),
    ):
        monkeypatch.setenv("PATH", str(tmp_path))  # no gcloud here
        with pytest.raises(UsageError, match=match):
            tpu_vm.launch(runs, launch_args(payload, **bad))
    unpinned = tmp_path / "unpinned.txt"
    unpinned.write_text("flax==0.12.8\n")
    with pytest.raises(UsageError, match="pins no jax version"):
        tpu_vm.launch(runs, launch_args(payload, lock=str(unpinned)))
    monkeypatch.setattr(shipping, "checkout", lambda: None)  # an installed rsjax, no checkout
    with pytest.raises(UsageError, match="pass --wheel"):
        tpu_vm.launch(runs, launch_args(payload, wheel=None))


def test_the_checkout_is_found_and_its_lock_shipped_by_default(payload):
    assert shipping.checkout() == REPO
    shipped = shipping.payload(wheel=str(payload.wheel))
    assert shipped.lock == REPO / "requirements" / "lock.txt"
    assert shipped.files == [str(payload.wheel), str(shipped.lock)]


@pytest.mark.slow
def test_real_two_process_runs_on_fake_slices(
    fake_cloud, payload, small_fmnist, tmp_path, monkeypatch
):
    """Acceptance 3 with real training: 6 `fashion_mnist:tiny` runs, each a 2-process x 2-device
    `rsjax train --jax_distributed` started by the startup script on a 2-worker fake slice,
    --max_slices 2: r1 is preempted mid-run and completes as attempt 2 from its checkpoint; r4
    diverges (learning rate 1e30: a non-finite loss) and is not retried past --max_failures 1."""
    monkeypatch.setenv("FAKE_GCLOUD_VENV", sys.prefix)  # the real rsjax
    data = {
        "data.manual_dir": small_fmnist["manual_dir"],
        "data.data_dir": small_fmnist["data_dir"],
    }
    common = {**data, "num_train_steps": 120, "checkpoint_every_steps": 10, "log_every_steps": 5}
    diverge = {"optim.base_learning_rate": 1e30}
    runs = [
        Run(f"r{i}", {**common, "seed": i, **(diverge if i == 4 else {})}, "fashion_mnist:tiny",
            sweep="fake")
        for i in range(6)
    ]  # fmt: skip
    fake_cloud.set_faults(preempt={runs[1].run_id: 30})
    limits = slices.Limits(max_slices=2, max_failures=1, poll_s=0.5, heartbeat_s=0.5)
    start = time.monotonic()
    assert run_until_done(controller(runs, tmp_path / "w", payload, limits), timeout_s=900) == 1
    print(f"fake-cloud sweep of 6 real runs: {time.monotonic() - start:.0f} s")
    assert fake_cloud.state()["high_water"] == 2 and fake_cloud.state()["preempted"]
    for run in runs:
        run_dir = tmp_path / "w" / run.name
        record = read_result(run_dir / "result.json")
        numbers = [a.number for a in attempts.read_attempts(run_dir)]
        if run.name == "r4":
            assert record["status"] == "failed" and numbers == [1], record.get("error")
        else:
            assert record["status"] == "complete", (run.name, record.get("error"))
            assert numbers == ([1, 2] if run.name == "r1" else [1])
            assert record["profile"]["num_processes"] == 2
            resumed = record["train"]["resumed_from_step"]
            assert resumed > 0 if run.name == "r1" else resumed == 0
        # Only process 0 wrote the record and metrics; both workers' logs came back.
        assert (run_dir / "_launch" / f"attempt-{numbers[-1]}" / "worker-1.log").exists()


def test_the_tpu_commands_have_help_and_bad_input_is_one_line(capsys, tmp_path, monkeypatch):
    from rsjax import cli

    for command in (["sweep", "down"], ["sweep", "logs"], ["sweep", "launch"]):
        try:
            code = cli.main([*command, "--help"])
        except SystemExit as e:
            code = e.code
        assert code == 0
        out = capsys.readouterr().out
        assert "rsjax sweep" in out and ("Example" in out or "--max_slices" in out)
    monkeypatch.setenv("PATH", str(tmp_path))  # no gcloud
    for argv, message in (
        (["sweep", "down", "gs://b/s"], "needs --project, --zone"),
        (["sweep", "down", "gs://b/s", "--project", "p", "--zone", "z"], "gcloud is not on PATH"),
        (["sweep", "logs", str(tmp_path)], "has no slice attempts"),
        ([ "sweep", "launch", str(REPO / "sweeps" / "paper_table7.py"), "--workdir", "gs://b/s",
           "--launcher", "tpu-vm", "--project", "p", "--zone", "z", "--accelerator_type",
           "v4-32", "--max_slices", "0"], "at least 1"),
    ):  # fmt: skip
        assert cli.main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
