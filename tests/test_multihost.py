"""Multi-process runs on this machine: `rsjax train --jax_distributed` as 2 processes x 2 CPU
devices (gloo collectives), the way every worker of a TPU slice runs it."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from rsjax.results import read_result
from tests.test_train import REPO, config_flags

PROCESSES, DEVICES = 2, 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mesh_flags(flags: list[str]) -> list[str]:
    """`flags` with the batch sharded over all devices, the eval batch too (20: a divisor of the
    100 test images over 4 devices), and 2 input shards (the same global batches on 1 or 2
    processes)."""
    flags = [f for f in flags if not f.startswith(("--config.mesh.data=", "--config.eval_batch"))]
    return [*flags, "--config.mesh.data=-1", "--config.eval_batch_size=20",
            "--config.data.input_shards=2"]  # fmt: skip


def child_env(devices: int) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
    }


def launch(
    flags: list[str],
    workdir,
    port: int,
    heartbeat_s: int = 100,
    prelude: str = "",
    command: str = "train",
) -> list[subprocess.Popen]:
    """One `rsjax train` (or `command`) process per id, all on `workdir`, joined through
    127.0.0.1:`port`; `prelude` (Python) runs in each process before the command."""
    flags, env = mesh_flags(flags), child_env(DEVICES)
    run_cli = "import sys\nfrom rsjax.cli import main\nsys.exit(main(sys.argv[1:]))"
    python = ["-c", f"{prelude}\n{run_cli}"]
    return [
        subprocess.Popen(
            [
                sys.executable,
                *(python if prelude else ["-m", "rsjax.cli"]),
                command,
                *flags,
                "--workdir",
                str(workdir),
                "--jax_distributed",
                "--coordinator_address",
                f"127.0.0.1:{port}",
                "--num_processes",
                str(PROCESSES),
                "--process_id",
                str(i),
                "--heartbeat_timeout_s",
                str(heartbeat_s),
            ],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(PROCESSES)
    ]


def final_params(workdir) -> list[np.ndarray]:
    """The newest checkpoint's arrays, restored onto this (one-process) test's first device
    whatever topology saved them."""
    manager = ocp.CheckpointManager(
        workdir / "checkpoints", item_handlers=ocp.StandardCheckpointHandler()
    )
    step, device = manager.latest_step(), jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
        manager.item_metadata(step),
    )
    restored = manager.restore(step, args=ocp.args.StandardRestore(target))
    return [np.asarray(x) for x in jax.tree.leaves(restored)]


def finish(procs: list[subprocess.Popen], timeout: float = 600) -> list[str]:
    outs = [p.communicate(timeout=timeout)[0] for p in procs]
    codes = [p.returncode for p in procs]
    assert codes == [0] * len(procs), [f"process {i}: {o[-2000:]}" for i, o in enumerate(outs)]
    return outs


@pytest.mark.slow
def test_two_processes_train_together_and_only_process_0_writes(small_fmnist, tmp_path):
    flags = config_flags(small_fmnist, steps=12, checkpoint_every=4)
    finish(launch(flags, tmp_path, free_port()))
    record = read_result(tmp_path / "result.json")
    assert record["status"] == "complete"
    assert record["profile"]["num_processes"] == PROCESSES
    assert record["profile"]["num_devices"] == PROCESSES * DEVICES
    # One writer: every logged train step appears once in metrics.jsonl.
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train_steps = [x["step"] for x in lines if x.get("kind") == "train"]
    assert train_steps and len(train_steps) == len(set(train_steps)), train_steps
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()) == [
        "12", "4", "8"
    ]  # fmt: skip


@pytest.mark.slow
def test_two_processes_profile_one_step_over_all_devices_and_only_process_0_writes(tmp_path):
    """`rsjax profile --jax_distributed` (a profile-only attempt on a slice): each process feeds
    its share of the batch to one step over all 4 devices; one record, process 0's."""
    flags = ["--config", "fashion_mnist:tiny", "--config.mesh.data=-1", "--batch_per_device=4",
             "--steps=2", "--warmup=1"]  # fmt: skip
    procs = launch(flags, tmp_path, free_port(), command="profile")
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[-2000:] for o in outs]
    profile = read_result(tmp_path / "result.json")["profile"]
    assert (profile["batch"], profile["num_devices"]) == (16, PROCESSES * DEVICES)
    assert profile["normalized_step_s"] > 0


# Process 0 finishes compiling its steps 70 s after process 1: longer than the CPU collectives
# (gloo) wait for a peer to join a computation (30 s; 60 s for the first).
SLOW_COMPILE = """
import time, jax
from rsjax.train import programs
compile_steps = programs.Program.compile_steps
def slow(self, schedule):
    steps = compile_steps(self, schedule)
    if jax.process_index() == 0:
        time.sleep(70)
    return steps
programs.Program.compile_steps = slow
"""


@pytest.mark.slow
def test_a_process_that_compiles_70_s_later_than_its_peer_does_not_break_the_run(
    small_fmnist, tmp_path
):
    """The processes meet at a barrier after compiling, so the first step's collectives start
    together however long each process took to compile."""
    flags = config_flags(small_fmnist, steps=4, checkpoint_every=4)
    finish(launch(flags, tmp_path, free_port(), prelude=SLOW_COMPILE))
    assert read_result(tmp_path / "result.json")["status"] == "complete"


def train_losses(workdir) -> dict[int, float]:
    lines = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    return {x["step"]: x["loss"] for x in lines if x.get("kind") == "train"}


def train_one_process(flags: list[str], workdir, data_axis: int) -> None:
    """`flags` as one process with 4 CPU devices, `data_axis` of them on the data axis."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "rsjax.cli", "train", *mesh_flags(flags),
         f"--config.mesh.data={data_axis}", "--workdir", str(workdir)],
        cwd=REPO, env=child_env(PROCESSES * DEVICES), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    finish([proc])


def largest_difference(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    assert len(a) == len(b)
    return max(float(np.abs(x - y).max()) for x, y in zip(a, b, strict=True))


@pytest.mark.slow
def test_two_processes_of_two_devices_equal_one_process_of_four(small_fmnist, tmp_path):
    """3 steps as 2 processes x 2 devices and as 1 process x 4 devices, with 2 input shards
    (the same global batches): the losses equal to 1e-6 at every step. The sums over devices
    run in another order in each (gloo across processes), and this tiny network's gradients
    amplify round-off (by step 12 the losses of two reduction orders differ by up to 1e-2), so
    the parameters' tolerance is measured, not guessed: the 2-process state must be as close to
    the 4-device one as one process with a 2-device data axis (same batches, another reduction
    order) is, within a factor 2."""
    flags = config_flags(small_fmnist, steps=3, checkpoint_every=3)
    finish(launch(flags, tmp_path / "two", free_port()))
    train_one_process(flags, tmp_path / "one", data_axis=4)
    train_one_process(flags, tmp_path / "axis2", data_axis=2)
    assert read_result(tmp_path / "one" / "result.json")["profile"]["num_processes"] == 1
    two, one = train_losses(tmp_path / "two"), train_losses(tmp_path / "one")
    assert sorted(two) == sorted(one) == [1, 2, 3]
    np.testing.assert_allclose([two[s] for s in one], [one[s] for s in one], rtol=1e-6)
    state = {d: final_params(tmp_path / d) for d in ("two", "one", "axis2")}
    ours, envelope = (largest_difference(state[d], state["one"]) for d in ("two", "axis2"))
    print(f"largest state difference to 1 x 4 devices: 2 x 2 {ours:.1e}, data axis 2 "
          f"{envelope:.1e}")  # fmt: skip
    assert ours <= 2 * envelope + 1e-6


@pytest.mark.slow
def test_a_killed_process_ends_its_peer_and_a_relaunch_resumes_bit_identically(
    small_fmnist, tmp_path
):
    """SIGKILL of process 1 after the first checkpoint: process 0 exits non-zero within the
    heartbeat bound instead of hanging; relaunching both resumes and matches a run that was
    never interrupted, bit for bit."""
    heartbeat_s, bound_s = 10, 120
    flags = config_flags(small_fmnist, steps=40, checkpoint_every=4)
    finish(launch(flags, tmp_path / "straight", free_port(), heartbeat_s))

    killed = tmp_path / "killed"
    procs = launch(flags, killed, free_port(), heartbeat_s)
    deadline = time.time() + 600
    while not (killed / "checkpoints" / "4").exists():
        assert all(p.poll() is None for p in procs), [p.stdout.read()[-2000:] for p in procs]
        assert time.time() < deadline
        time.sleep(0.2)
    procs[1].send_signal(signal.SIGKILL)
    killed_at = time.time()
    try:
        out = procs[0].communicate(timeout=bound_s)[0]
    except subprocess.TimeoutExpired:
        procs[0].kill()
        pytest.fail(f"process 0 still running {bound_s} s after its peer was killed")
    waited = time.time() - killed_at
    procs[1].wait()
    assert procs[0].returncode != 0, out[-3000:]
    print(f"process 0 exited {procs[0].returncode} {waited:.1f} s after its peer's SIGKILL")

    outs = finish(launch(flags, killed, free_port(), heartbeat_s))
    assert "resumed from step" in outs[0], outs[0][-3000:]
    assert read_result(killed / "result.json")["train"]["resumed_from_step"] > 0
    a, b = final_params(tmp_path / "straight"), final_params(killed)
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert (x == y).all()
