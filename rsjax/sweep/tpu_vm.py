"""Cloud TPU VM launcher: one TPU VM per run, created, set up, trained on, and deleted.

For each run that is not complete (its `WORKDIR/RUN_NAME/result.json`, read through etils.epath
so gs:// works), in order:
  1. create   gcloud compute tpus tpu-vm create VM --accelerator-type ... (--spot); retried
              `--create_retries` times (capacity errors are common), then reported as failed;
  2. ship     gcloud compute tpus tpu-vm scp WHEEL LOCK VM:~ --worker=all   (`shipping`: this
              checkout's wheel, built once per launch, and requirements/lock.txt)
  3. setup    gcloud compute tpus tpu-vm ssh VM --worker=all --command "pip install -r lock.txt
              'jax[tpu]==<locked jax>' ./rsjax-VERSION-py3-none-any.whl[train]"
  4. train    gcloud compute tpus tpu-vm ssh VM --worker=all --command "rsjax train --config BASE
              --workdir WORKDIR/RUN_NAME --config.KEY=VALUE ... --jax_distributed"
  5. delete   gcloud compute tpus tpu-vm delete VM --quiet   (always, also after a failure)
The workdir must be reachable from the VMs and the launcher alike: a gs:// bucket (or a shared
filesystem path). Runs go one after another (a VM per run keeps failures isolated and spot
preemptions cheap: a relaunch resumes the run from its gs:// checkpoint). `--dry_run` prints the
commands instead.
"""

import argparse
import dataclasses
import shlex
import shutil
import subprocess
from collections.abc import Callable, Sequence

from etils import epath

from rsjax.sweep import shipping, state
from rsjax.sweep.grid import Run

Runner = Callable[[list[str]], int]


@dataclasses.dataclass(frozen=True)
class TpuVmOptions:
    project: str
    zone: str
    accelerator_type: str  # e.g. "v4-32"
    runtime_version: str = "tpu-ubuntu2204-base"
    spot: bool = False
    vm_prefix: str = "rsjax"
    payload: shipping.Payload | None = None  # the wheel and lock each VM installs
    create_retries: int = 2


def vm_name(options: TpuVmOptions, run: Run) -> str:
    """A valid VM name (lowercase letters, digits, dashes; <= 63 chars) unique per run."""
    return f"{options.vm_prefix}-{run.run_id}".lower()[:63]


def config_flags(run: Run) -> list[str]:
    """`--config.KEY=VALUE` flags that reproduce the run's config on the command line: its
    identity (name, sweep: the record carries the run id `rsjax sweep plan` prints), then its
    overrides."""
    flags = [f"--config.name={run.name}", f"--config.sweep={run.sweep}"]
    for key, value in run.overrides.items():
        if isinstance(value, list | tuple):
            text = "(" + ",".join(str(v) for v in value) + ("," if len(value) == 1 else "") + ")"
        else:
            text = str(value)
        flags.append(f"--config.{key}={text}")
    return flags


def commands(options: TpuVmOptions, run: Run, workdir: str) -> dict[str, list[str]]:
    """The gcloud argv of each phase (create, ship, setup, train, delete) of one run."""
    if options.payload is None:
        raise ValueError("TpuVmOptions.payload is needed: the wheel and lock to install")
    vm = vm_name(options, run)
    where = [f"--zone={options.zone}", f"--project={options.project}"]
    create = [
        "gcloud", "compute", "tpus", "tpu-vm", "create", vm, *where,
        f"--accelerator-type={options.accelerator_type}", f"--version={options.runtime_version}",
    ]  # fmt: skip
    if options.spot:
        create.append("--spot")
    ssh = ["gcloud", "compute", "tpus", "tpu-vm", "ssh", vm, *where, "--worker=all", "--command"]
    ship = [
        "gcloud", "compute", "tpus", "tpu-vm", "scp", *options.payload.files, f"{vm}:~", *where,
        "--worker=all",
    ]  # fmt: skip
    setup = options.payload.install_command()
    train = shlex.join(
        [
            "rsjax", "train", f"--config={run.base}",
            f"--workdir={epath.Path(workdir) / run.name!s}", *config_flags(run),
            "--jax_distributed",
        ]
    )  # fmt: skip
    delete = ["gcloud", "compute", "tpus", "tpu-vm", "delete", vm, *where, "--quiet"]
    return {
        "create": create,
        "ship": ship,
        "setup": [*ssh, setup],
        "train": [*ssh, train],
        "delete": delete,
    }


def run_on_vm(options: TpuVmOptions, run: Run, workdir: str, execute: Runner) -> str:
    """Creates (with retries), ships, sets up, trains and deletes; "done" or why it failed."""
    argv = commands(options, run, workdir)
    for _ in range(options.create_retries + 1):
        if execute(argv["create"]) == 0:
            break
    else:
        return f"create failed {options.create_retries + 1} times"
    try:
        if execute(argv["ship"]) != 0:
            return "copying the wheel and lock failed"
        if execute(argv["setup"]) != 0:
            return "setup failed"
        if execute(argv["train"]) != 0:
            return "train failed (rerun the launch to resume from the checkpoint)"
        return "done"
    finally:
        execute(argv["delete"])


def _subprocess_runner(argv: list[str]) -> int:
    print("+ " + shlex.join(argv), flush=True)
    return subprocess.call(argv)


def launch(runs: Sequence[Run], args: argparse.Namespace, execute: Runner | None = None) -> int:
    """`rsjax sweep launch --launcher tpu-vm`: every incomplete run on its own VM (or printed)."""
    missing = [f for f in ("project", "zone", "accelerator_type") if not getattr(args, f, None)]
    if missing:
        raise ValueError("--launcher tpu-vm needs " + ", ".join(f"--{m}" for m in missing) + ".")
    if execute is None and not args.dry_run and shutil.which("gcloud") is None:
        raise ValueError("gcloud is not on PATH: install the Google Cloud CLI first.")
    options = TpuVmOptions(
        project=args.project,
        zone=args.zone,
        accelerator_type=args.accelerator_type,
        runtime_version=args.runtime_version,
        spot=args.spot,
        payload=shipping.payload(args.wheel, args.lock),
        create_retries=args.create_retries,
    )
    if args.dry_run:
        for run in runs:
            for phase, argv in commands(options, run, args.workdir).items():
                print(f"# {run.name} {phase}\n{shlex.join(argv)}")
        return 0
    execute = execute or _subprocess_runner
    failures = {}
    for run in runs:
        if state.is_done(epath.Path(args.workdir) / run.name):
            print(f"[tpu-vm] {run.name}: complete, skipped")
            continue
        outcome = run_on_vm(options, run, args.workdir, execute)
        print(f"[tpu-vm] {run.name}: {outcome}", flush=True)
        if outcome != "done":
            failures[run.name] = outcome
    if failures:
        print(
            f"[tpu-vm] {len(failures)} failed: "
            + "; ".join(f"{k}: {v}" for k, v in failures.items())
        )
    return 1 if failures else 0
