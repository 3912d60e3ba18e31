"""`rsjax sweep launch --launcher tpu-vm` and `rsjax sweep down`: the queued-resource launcher's
command-line side (the controller itself is `rsjax.sweep.slices`).

The workdir must be reachable from the launcher and the slices alike: a gs:// bucket. The
launcher builds this checkout's wheel (or takes `--wheel`/`--lock`), uploads it to
WORKDIR/_launch/ship, and then ticks until every run is complete or given up; it holds no SSH
session, so it can be stopped (Ctrl-C) and restarted at any time: slices keep training, and the
next launch adopts them. `rsjax sweep down WORKDIR` deletes every slice of the sweep.
"""

import argparse
import shlex
import shutil
from collections.abc import Sequence

from etils import epath

from rsjax.errors import UsageError
from rsjax.sweep import cloud, shipping, slices, startup
from rsjax.sweep.grid import Run


def spec_from_args(args: argparse.Namespace) -> cloud.SliceSpec:
    """The slices' spec from the tpu-vm flags; UsageError naming what is missing."""
    needed = ("project", "zone") + (("accelerator_type",) if hasattr(args, "max_slices") else ())
    missing = [f for f in needed if not getattr(args, f, None)]
    if missing:
        raise UsageError("--launcher tpu-vm needs " + ", ".join(f"--{m}" for m in missing) + ".")
    return cloud.SliceSpec(
        project=args.project,
        zone=args.zone,
        accelerator_type=getattr(args, "accelerator_type", "") or "",
        runtime_version=getattr(args, "runtime_version", "tpu-ubuntu2204-base"),
        provisioning=getattr(args, "provisioning", "spot"),
        valid_until=getattr(args, "valid_until", "6h"),
    )


def limits_from_args(args: argparse.Namespace) -> slices.Limits:
    if args.max_slices < 1 or args.max_failures < 1:
        raise UsageError("--max_slices and --max_failures must be at least 1.")
    if args.budget_slice_hours is not None and args.budget_slice_hours <= 0:
        raise UsageError("--budget_slice_hours must be positive.")
    return slices.Limits(
        max_slices=args.max_slices,
        max_failures=args.max_failures,
        budget_slice_hours=args.budget_slice_hours,
        heartbeat_timeout_s=args.heartbeat_timeout_s,
        poll_s=args.poll_s,
    )


def _check_gcloud(dry_run: bool) -> None:
    if not dry_run and shutil.which("gcloud") is None:
        raise UsageError("gcloud is not on PATH: install the Google Cloud CLI first.")


def launch(runs: Sequence[Run], args: argparse.Namespace) -> int:
    """Runs the sweep on slices (or, with --dry_run, prints every create and startup script)."""
    spec = spec_from_args(args)
    limits = limits_from_args(args)
    profiles = getattr(args, "profiles", None)
    if profiles and not args.dry_run:
        raise UsageError("--profiles is read by --dry_run only")
    if profiles and not epath.Path(profiles).is_dir():
        raise UsageError(f"--profiles {profiles}: no such directory")
    _check_gcloud(args.dry_run)
    if not args.workdir.startswith("gs://") and not args.dry_run:
        print(f"[tpu] note: {args.workdir} is not gs://; the slices must be able to reach it")
    try:
        env = startup.parse_env(getattr(args, "env", None) or [])
    except ValueError as e:
        raise UsageError(str(e)) from None
    payload = shipping.payload(args.wheel, args.lock)
    qr = cloud.QueuedResources(spec)
    controller = slices.Controller(
        runs,
        args.workdir,
        qr,
        payload,
        limits,
        env=env,
        profile_batch_per_device=args.profile_batch_per_device if args.profile_only else None,
    )
    if args.dry_run:
        return dry_run(controller, profiles)
    print(f"[tpu] {len(runs)} runs -> {args.workdir} on up to {limits.max_slices} "
          f"{spec.accelerator_type} slices ({spec.provisioning}); sweep label "
          f"{controller.sweep}; stop everything: rsjax sweep down {args.workdir} "
          f"--project {spec.project} --zone {spec.zone}")  # fmt: skip
    try:
        return controller.run()
    except KeyboardInterrupt:
        print("[tpu] controller stopped; slices keep running (relaunch to adopt them, or "
              f"rsjax sweep down {args.workdir})")  # fmt: skip
        return 130


def dry_run(controller: slices.Controller, profiles: str | None = None) -> int:
    """Prints the first attempt's create command and startup script of every run, then, with
    `profiles` (a --profile_only workdir of the same sweep), each run's slice-hours."""
    qr, sweep = controller.qr, controller.sweep
    for run in controller.runs:
        name = cloud.resource_name(qr.spec.prefix, sweep, run.run_id, 1)
        script = controller.script(run, 1)
        create = qr.create_argv(name, cloud.labels(sweep, run.run_id, 1), f"{name}.sh")
        print(f"# {run.name}: create\n{shlex.join(create)}\n# {name}.sh\n{script}")
    print(f"# {len(controller.runs)} runs, sweep label {sweep}")
    if profiles:
        from rsjax.sweep import estimate

        estimates = estimate.estimate(controller.runs, profiles)
        limits = controller.limits
        print(estimate.format_estimates(estimates, limits.max_slices, limits.budget_slice_hours))
    return 0


def down(args: argparse.Namespace) -> int:
    """`rsjax sweep down WORKDIR`: deletes every queued resource labelled with its sweep."""
    spec = spec_from_args(args)
    _check_gcloud(False)
    return slices.down(args.workdir, cloud.QueuedResources(spec))
