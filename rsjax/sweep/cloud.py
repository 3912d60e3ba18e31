"""Cloud TPU queued resources through `gcloud`: names, labels, and the create/list/delete verbs.

A queued resource (QR) asks the Cloud TPU scheduler for one slice and holds it until deleted:

  gcloud compute tpus queued-resources create NAME --node-id=NAME --accelerator-type=v4-32
      --runtime-version=... --spot|--reserved --labels=K=V,... --valid-until-duration=6h
      --metadata-from-file=startup-script=FILE --zone=Z --project=P
  gcloud compute tpus queued-resources list --format=json ...   (filtered here by label)
  gcloud compute tpus queued-resources describe NAME --format=json ...
  gcloud compute tpus queued-resources delete NAME --force --quiet ...

Every QR of a sweep carries the labels `rsjax-sweep` (from the sweep's workdir URL alone, so
`rsjax sweep down WORKDIR` finds them with no other state), `rsjax-run` (the run id) and
`rsjax-attempt`. Its name is a pure function of (sweep, run, attempt): two controllers that
decide on the same attempt ask for the same name, and the second gets ALREADY_EXISTS.
"""

import dataclasses
import hashlib
import json
import re
import subprocess
import time
from collections.abc import Callable, Sequence

# https://cloud.google.com/compute/docs/labeling-resources: keys and values at most 63
# characters of lowercase letters, digits, '_' and '-'; keys start with a letter.
LABEL_RE = re.compile(r"[a-z][a-z0-9_-]{0,62}")
LABEL_VALUE_RE = re.compile(r"[a-z0-9_-]{0,63}")
# Resource names (TPU nodes and QRs): a lowercase letter, then letters, digits or '-', at most 63,
# not ending in '-'.
NAME_RE = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")
SWEEP_LABEL = "rsjax-sweep"
RUN_LABEL = "rsjax-run"
ATTEMPT_LABEL = "rsjax-attempt"

# QR states (the `state.state` field): waiting for a slice, running on one, gone wrong.
WAITING = frozenset({"CREATING", "ACCEPTED", "PROVISIONING", "WAITING_FOR_RESOURCES"})
ACTIVE = "ACTIVE"
LOST = frozenset({"SUSPENDING", "SUSPENDED", "FAILED"})  # preempted, or never provisioned
DELETING = "DELETING"

# Lines of gcloud's stderr that mean "try again later" (quota, capacity, a server-side error),
# not "this request is wrong" (INVALID_ARGUMENT, PERMISSION_DENIED: a failed attempt).
_RETRYABLE = re.compile(
    r"RESOURCE_EXHAUSTED|[Qq]uota|[Ss]tockout|capacity|UNAVAILABLE|INTERNAL|DEADLINE_EXCEEDED|429"
)
_EXISTS = re.compile(r"ALREADY_EXISTS|already exists")
_NOT_FOUND = re.compile(r"NOT_FOUND|not found|was not found")

Runner = Callable[[list[str]], subprocess.CompletedProcess]


def _slug(text: str, limit: int) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    slug = slug[:limit].rstrip("-")
    return slug if slug[:1].isalpha() else ("s" + slug)[:limit].rstrip("-")


def sweep_label(workdir: str) -> str:
    """The `rsjax-sweep` label value of the sweep in `workdir`: a readable prefix of its last
    path part and 8 hex digits of sha256 of the whole URL (distinct sweeps, same last part)."""
    digest = hashlib.sha256(workdir.rstrip("/").encode()).hexdigest()[:8]
    tail = workdir.rstrip("/").rsplit("/", 1)[-1]
    return f"{_slug(tail, 20)}-{digest}"


def resource_name(prefix: str, sweep: str, run_id: str, attempt: int) -> str:
    """The QR (and TPU node) name of `attempt` of run `run_id`: "PREFIX-SWEEP-RUNID-aK", at most
    63 characters (the prefix and sweep label are shortened, never the run id or attempt)."""
    tail = f"-{run_id}-a{attempt}"
    head = _slug(f"{prefix}-{sweep}", 63 - len(tail))
    name = head + tail
    if not NAME_RE.fullmatch(name):
        raise ValueError(f"not a valid resource name: {name!r}")
    return name


def labels(sweep: str, run_id: str, attempt: int) -> dict[str, str]:
    """The labels of one attempt's QR (each checked against GCP's rules)."""
    result = {SWEEP_LABEL: sweep, RUN_LABEL: run_id, ATTEMPT_LABEL: str(attempt)}
    for key, value in result.items():
        if not (LABEL_RE.fullmatch(key) and LABEL_VALUE_RE.fullmatch(value)):
            raise ValueError(f"not a valid label: {key}={value}")
    return result


@dataclasses.dataclass(frozen=True)
class Resource:
    """One queued resource as `list`/`describe` report it."""

    name: str
    state: str
    labels: dict[str, str]

    @property
    def attempt(self) -> int:
        return int(self.labels.get(ATTEMPT_LABEL, "0"))

    @property
    def run_id(self) -> str:
        return self.labels.get(RUN_LABEL, "")


@dataclasses.dataclass(frozen=True)
class SliceSpec:
    """What every QR of a sweep asks for."""

    project: str
    zone: str
    accelerator_type: str  # e.g. "v4-32"
    runtime_version: str = "tpu-ubuntu2204-base"
    provisioning: str = "spot"  # "spot", "reserved" or "on-demand"
    valid_until: str = "6h"  # how long the scheduler may wait for capacity before giving up
    prefix: str = "rsjax"


class CreateOutcome:
    CREATED = "created"
    EXISTS = "exists"  # another controller asked for this attempt first: adopt it
    RETRY = "retry"  # quota or capacity: back off, it is not the run's fault
    FAILED = "failed"


def _run(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True)


class QueuedResources:
    """The gcloud verbs on the QRs of one project and zone; `runner` executes an argv."""

    def __init__(self, spec: SliceSpec, runner: Runner = _run, log: Callable = print) -> None:
        self.spec = spec
        self.runner = runner
        self.log = log

    def argv(self, verb: str, *args: str) -> list[str]:
        return [
            "gcloud", "compute", "tpus", "queued-resources", verb, *args,
            f"--zone={self.spec.zone}", f"--project={self.spec.project}",
        ]  # fmt: skip

    def create_argv(self, name: str, labels_: dict[str, str], startup_script: str) -> list[str]:
        """The create command; `startup_script` is the path of the rendered script file."""
        provisioning = {"spot": ["--spot"], "reserved": ["--reserved"], "on-demand": []}
        return self.argv(
            "create", name, f"--node-id={name}",
            f"--accelerator-type={self.spec.accelerator_type}",
            f"--runtime-version={self.spec.runtime_version}",
            *provisioning[self.spec.provisioning],
            f"--valid-until-duration={self.spec.valid_until}",
            "--labels=" + ",".join(f"{k}={v}" for k, v in sorted(labels_.items())),
            f"--metadata-from-file=startup-script={startup_script}",
        )  # fmt: skip

    def create(self, name: str, labels_: dict[str, str], startup_script: str) -> str:
        """A `CreateOutcome`; a failed create that left a resource behind is deleted (cost
        guard)."""
        done = self.runner(self.create_argv(name, labels_, startup_script))
        if done.returncode == 0:
            return CreateOutcome.CREATED
        if _EXISTS.search(done.stderr):
            return CreateOutcome.EXISTS
        self.log(f"[tpu] create {name} failed: {_last_line(done.stderr)}")
        if self.describe(name) is not None:
            self.delete(name)
        return CreateOutcome.RETRY if _RETRYABLE.search(done.stderr) else CreateOutcome.FAILED

    def list(self, sweep: str) -> list[Resource] | None:
        """The sweep's QRs (every state but gone), or None when gcloud failed (view unknown).
        Filtered here, not by `--filter`: a QR's labels sit on its node spec."""
        done = self.runner(self.argv("list", "--format=json"))
        if done.returncode != 0:
            self.log(f"[tpu] list failed: {_last_line(done.stderr)}")
            return None
        found = [_resource(item) for item in json.loads(done.stdout or "[]")]
        return [r for r in found if r.labels.get(SWEEP_LABEL) == sweep]

    def describe(self, name: str) -> Resource | None:
        """The QR `name`, or None when it does not exist (or gcloud could not say)."""
        done = self.runner(self.argv("describe", name, "--format=json"))
        if done.returncode != 0:
            return None
        return _resource(json.loads(done.stdout))

    def delete(self, name: str, attempts: int = 5, wait_s: float = 1.0) -> bool:
        """Deletes `name` and checks it is gone (describe until not found), retrying failed
        deletes; True once it is gone."""
        for attempt in range(attempts):
            done = self.runner(self.argv("delete", name, "--force", "--quiet"))
            if done.returncode != 0 and not _NOT_FOUND.search(done.stderr):
                self.log(f"[tpu] delete {name} failed: {_last_line(done.stderr)}")
            if self.describe(name) is None:
                return True
            time.sleep(wait_s * (attempt + 1))
        self.log(f"[tpu] {name} still exists after {attempts} deletes: delete it by hand")
        return False


def _resource(item: dict) -> Resource:
    """A Resource from gcloud's JSON: "name" is a full path; the labels are the QR's own or its
    node spec's (`tpu.nodeSpec[].node.labels`, where `--labels` puts them)."""
    name = item.get("name", "").rsplit("/", 1)[-1]
    state = item.get("state", {})
    state = state.get("state", "") if isinstance(state, dict) else str(state)
    labels_ = dict(item.get("labels") or {})
    for spec in (item.get("tpu") or {}).get("nodeSpec") or []:
        labels_.update((spec.get("node") or {}).get("labels") or {})
    return Resource(name=name, state=state, labels=labels_)


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "(no message)"


def live(resources: Sequence[Resource]) -> list[Resource]:
    """The QRs that hold or wait for a slice (everything not being deleted)."""
    return [r for r in resources if r.state != DELETING]
