"""The startup script every worker of a slice runs at boot: install rsjax, run one attempt.

Rendered per attempt and passed to the queued resource as `startup-script` metadata, so no SSH
session is held by the launcher. On each worker it:
  1. installs Python 3.11 (Ubuntu 22.04's universe package; the TPU images ship 3.10) and a venv
     with the sweep's shipped lock and wheel (`rsjax.sweep.shipping`, uploaded to
     WORKDIR/_launch/ship) plus `jax[tpu]` at the locked JAX version: the block between the
     `# BEGIN install` and `# END install` lines (a test stand-in replaces it with a local venv);
  2. runs `python -m rsjax.sweep.slice_worker RUN_DIR K WORKER -- rsjax train ... --jax_distributed`
     (heartbeat, logs, exit record, and the slice's own deletion when training ends); a
     profile-only attempt runs `rsjax profile ... --jax_distributed` instead.
The worker's id comes from the TPU metadata server (`agent-worker-number`); RSJAX_WORKER_ID,
RSJAX_COORDINATOR and RSJAX_NUM_WORKERS override it and JAX's auto-detection (for stand-ins).
"""

import dataclasses
import re
import shlex
from collections.abc import Mapping, Sequence

from rsjax.sweep import cloud, shipping
from rsjax.sweep.grid import Run

VENV = "/opt/rsjax-venv"
SHIP_DIR = "/opt/rsjax-ship"
METADATA = "http://metadata.google.internal/computeMetadata/v1/instance/attributes"
BEGIN_INSTALL = "# BEGIN install"
END_INSTALL = "# END install"


@dataclasses.dataclass(frozen=True)
class Attempt:
    """What one attempt's script needs: the run, where its state lives, and its slice."""

    run: Run
    run_dir: str  # WORKDIR/RUN_NAME (gs://...)
    attempt: int
    resource: str  # the queued resource's name (the slice deletes itself by it)
    ship_dir: str  # WORKDIR/_launch/ship: the wheel and lock
    heartbeat_s: float = 30.0
    profile_batch_per_device: int | None = None  # profile (from this batch), do not train


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def parse_env(items: Sequence[str]) -> dict[str, str]:
    """`--env KEY=VALUE` flags as a dict; ValueError for an item that is not one."""
    env = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not _ENV_NAME.fullmatch(key):
            raise ValueError(f"--env {item!r} is not KEY=VALUE with KEY a variable name")
        env[key] = value
    return env


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


def train_args(run: Run, run_dir: str, profile_batch_per_device: int | None = None) -> list[str]:
    """The arguments of the run's `rsjax` command (before the distributed flags): `rsjax train`,
    or `rsjax profile --batch_per_device N` for a profile-only attempt."""
    common = [f"--config={run.base}", f"--workdir={run_dir}", *config_flags(run)]
    if profile_batch_per_device is None:
        return ["train", *common]
    return ["profile", *common, f"--batch_per_device={profile_batch_per_device}"]


def render(
    attempt: Attempt,
    payload: shipping.Payload,
    qr: cloud.QueuedResources,
    env: Mapping[str, str] | None = None,
    extra: str = "train",
) -> str:
    """The bash startup script of `attempt` (see the module docstring); `env` is exported before
    the install (e.g. TFDS_DATA_DIR=gs://B/tensorflow_datasets: where every run reads its data,
    outside the configs, so no run id changes)."""
    q = shlex.quote
    exports = "".join(f"export {key}={q(value)}\n" for key, value in (env or {}).items())
    wheel, lock = payload.wheel.name, payload.lock.name
    jax_version = shipping.locked_version(payload.lock, "jax")
    delete = shlex.join(qr.argv("delete", attempt.resource, "--force", "--quiet", "--async"))
    train = '"$VENV/bin/rsjax" ' + shlex.join(
        train_args(attempt.run, attempt.run_dir, attempt.profile_batch_per_device)
    )
    return f"""#!/bin/bash
# rsjax: attempt {attempt.attempt} of run {attempt.run.name} ({attempt.run.run_id}) on this worker.
set -euo pipefail
{exports}RUN_DIR={q(attempt.run_dir)}
SHIP={q(attempt.ship_dir)}
VENV={VENV}
WORKER_ID="${{RSJAX_WORKER_ID:-$(curl -sf -H 'Metadata-Flavor: Google' \
  {METADATA}/agent-worker-number)}}"
{BEGIN_INSTALL}
if [ ! -x "$VENV/bin/rsjax" ]; then
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3.11 python3.11-venv
  python3.11 -m venv "$VENV"
  mkdir -p {SHIP_DIR}
  gcloud storage cp "$SHIP/{wheel}" "$SHIP/{lock}" {SHIP_DIR}/
  "$VENV/bin/pip" install -q -r {SHIP_DIR}/{lock} {q(f"jax[tpu]=={jax_version}")} \\
    {q(f"{SHIP_DIR}/{wheel}[{extra}]")}
fi
{END_INSTALL}
DISTRIBUTED=(--jax_distributed)
if [ -n "${{RSJAX_COORDINATOR:-}}" ]; then
  DISTRIBUTED+=(--coordinator_address "$RSJAX_COORDINATOR" --num_processes "$RSJAX_NUM_WORKERS"
    --process_id "$WORKER_ID")
fi
exec "$VENV/bin/python" -m rsjax.sweep.slice_worker "$RUN_DIR" {attempt.attempt} "$WORKER_ID" \\
  --heartbeat_s {attempt.heartbeat_s:g} --delete {q(delete)} \\
  -- {train} "${{DISTRIBUTED[@]}}"
"""
