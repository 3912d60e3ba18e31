"""A stateful stand-in for `gcloud compute tpus queued-resources`, run as `gcloud` on PATH.

State lives in $FAKE_GCLOUD_STATE (JSON, flock-ed for the whole call). Every call first advances
the fake cloud: a queued resource waits `wait_polls` list/describe calls, then turns ACTIVE and
boots its workers: local processes running its startup script, with every gs:// path mapped to
$FAKE_GCLOUD_BUCKET and the `# BEGIN install` ... `# END install` block replaced by the venv
$FAKE_GCLOUD_VENV, so a slice of N workers is a real N-process `rsjax train` on this machine.

Faults, from the state's "faults" (set by the test before the launch):
  wait_polls: N            polls before a new resource becomes ACTIVE (default 1)
  quota_errors: N          the next N creates fail with RESOURCE_EXHAUSTED, creating nothing
  create_fails_leaving: N  the next N creates fail but leave the resource behind (ACCEPTED)
  delete_failures: N       the next N deletes fail, deleting nothing
  preempt: {RUN_ID: STEP}  the first attempt of RUN_ID is preempted (workers SIGKILLed, state
                           SUSPENDED) once its heartbeat reports STEP or later
  workers: N               workers per slice (default 2)
Counters in the state: "high_water" (most resources alive at once), "creates", "deletes".
"""

import contextlib
import fcntl
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

STATE = os.environ["FAKE_GCLOUD_STATE"]
BUCKET = os.environ.get("FAKE_GCLOUD_BUCKET", "")
VENV = os.environ.get("FAKE_GCLOUD_VENV", sys.prefix)
WAITING = "WAITING_FOR_RESOURCES"


def fail(message: str, code: int = 1) -> None:
    print(f"ERROR: (gcloud.compute.tpus.queued-resources) {message}", file=sys.stderr)
    raise SystemExit(code)


def flags(args: list[str]) -> tuple[list[str], dict[str, str]]:
    positional, named = [], {}
    for arg in args:
        if arg.startswith("--"):
            key, _, value = arg[2:].partition("=")
            named[key] = value
        else:
            positional.append(arg)
    return positional, named


def local(text: str) -> str:
    return text.replace("gs://", BUCKET.rstrip("/") + "/") if BUCKET else text


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def boot(name: str, resource: dict, state: dict) -> None:
    """Starts the resource's workers: its startup script with gs:// and the install mapped."""
    script = re.sub(
        r"# BEGIN install\n.*?# END install\n",
        f"VENV={VENV}\n",
        local(resource["script"]),
        flags=re.DOTALL,
    )
    path = os.path.join(os.path.dirname(STATE), f"{name}.sh")
    with open(path, "w") as f:
        f.write(script)
    workers = int(state["faults"].get("workers", 2))
    port = free_port()
    pgids = []
    for w in range(workers):
        env = {
            **os.environ,
            "RSJAX_WORKER_ID": str(w),
            "RSJAX_NUM_WORKERS": str(workers),
            "RSJAX_COORDINATOR": f"127.0.0.1:{port}",
            "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
            "JAX_PLATFORMS": "cpu",
        }
        with open(os.path.join(os.path.dirname(STATE), f"{name}-w{w}.out"), "ab") as log:
            proc = subprocess.Popen(
                ["bash", path], env=env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        pgids.append(proc.pid)
    resource["pgids"] = pgids


def kill(resource: dict) -> None:
    me = os.getpgid(0)
    for pgid in resource.get("pgids", []):
        if pgid != me:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)


def heartbeat_step(resource: dict) -> int | None:
    path = os.path.join(local(resource["run_dir"]), "_launch", "attempt-1", "heartbeat.json")
    try:
        with open(path) as f:
            return json.load(f).get("step")
    except (OSError, ValueError):
        return None


def advance(state: dict, polled: bool) -> None:
    for name, resource in state["resources"].items():
        if resource["state"] in ("ACCEPTED", WAITING) and polled:
            resource["polls"] += 1
            resource["state"] = WAITING
            if resource["polls"] >= int(state["faults"].get("wait_polls", 1)):
                resource["state"] = "ACTIVE"
                boot(name, resource, state)
        if resource["state"] == "ACTIVE" and resource["attempt"] == "1":
            at = state["faults"].get("preempt", {}).get(resource["run_id"])
            step = heartbeat_step(resource)
            if at is not None and step is not None and step >= at:
                kill(resource)
                resource["state"] = "SUSPENDED"
                state.setdefault("preempted", []).append(name)


def as_json(name: str, resource: dict) -> dict:
    return {
        "name": f"projects/p/locations/z/queuedResources/{name}",
        "state": {"state": resource["state"]},
        "tpu": {"nodeSpec": [{"nodeId": name, "node": {"labels": resource["labels"]}}]},
    }


def create(state: dict, name: str, named: dict[str, str]) -> None:
    faults = state["faults"]
    state["creates"] = state.get("creates", 0) + 1
    if name in state["resources"]:
        fail(f"ALREADY_EXISTS: Resource '{name}' already exists")
    if faults.get("quota_errors", 0) > 0:
        faults["quota_errors"] -= 1
        fail("RESOURCE_EXHAUSTED: Quota 'TPUV4_SPOT' exhausted in region")
    labels = dict(item.split("=", 1) for item in named.get("labels", "").split(",") if item)
    script_file = named["metadata-from-file"].split("=", 1)[1]
    with open(script_file) as f:
        script = f.read()
    run_dir = re.search(r"^RUN_DIR=(\S+)$", script, re.MULTILINE)[1].strip("'")
    state["resources"][name] = {
        "state": "ACCEPTED",
        "labels": labels,
        "run_id": labels.get("rsjax-run", ""),
        "attempt": labels.get("rsjax-attempt", ""),
        "script": script,
        "run_dir": run_dir,
        "polls": 0,
        "spot": "spot" in named,
    }
    state["high_water"] = max(state.get("high_water", 0), len(state["resources"]))
    if faults.get("create_fails_leaving", 0) > 0:
        faults["create_fails_leaving"] -= 1
        fail("INTERNAL: the operation failed after the resource was recorded")


def delete(state: dict, name: str) -> None:
    state["deletes"] = state.get("deletes", 0) + 1
    if name not in state["resources"]:
        fail(f"NOT_FOUND: Resource '{name}' was not found")
    if state["faults"].get("delete_failures", 0) > 0:
        state["faults"]["delete_failures"] -= 1
        fail("INTERNAL: delete failed, try again")
    kill(state["resources"].pop(name))


def main(argv: list[str]) -> None:
    if argv[:3] != ["compute", "tpus", "queued-resources"]:
        fail(f"the fake implements queued-resources only, not {' '.join(argv[:3])}", 2)
    verb, (positional, named) = argv[3], flags(argv[4:])
    with open(STATE, "r+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        state = json.load(f)
        state.setdefault("resources", {})
        state.setdefault("faults", {})
        state.setdefault("calls", []).append([verb, *positional, time.time()])
        try:
            advance(state, polled=verb in ("list", "describe"))
            if verb == "create":
                create(state, positional[0], named)
            elif verb == "delete":
                delete(state, positional[0])
            elif verb == "describe":
                if positional[0] not in state["resources"]:
                    fail(f"NOT_FOUND: Resource '{positional[0]}' was not found")
                print(json.dumps(as_json(positional[0], state["resources"][positional[0]])))
            elif verb == "list":
                print(json.dumps([as_json(n, r) for n, r in state["resources"].items()]))
            else:
                fail(f"unknown verb {verb}", 2)
        finally:
            f.seek(0)
            f.truncate()
            json.dump(state, f)


if __name__ == "__main__":
    main(sys.argv[1:])
