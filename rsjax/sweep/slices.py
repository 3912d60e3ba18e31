"""The TPU launcher: a stateless controller that runs a sweep on up to N queued-resource slices.

Each tick it rebuilds its whole view from two sources, so it can be killed and restarted at any
point, and two controllers on one sweep agree:
  - the sweep's queued resources (`rsjax.sweep.cloud`, found by their `rsjax-sweep` label);
  - every run's gs:// record (result.json) and attempt records (`rsjax.sweep.attempts`).
Then, per run:
  - done (result "complete", or "profiled" for a profile-only sweep): any QR left for it is
    deleted, once its attempt has ended (worker 0 uploads its last log and exit.json, then
    deletes its own slice) or `exit_grace_s` after the record completed;
  - its current attempt's QR is SUSPENDED / FAILED (a preempted spot slice, or one never
    provisioned), or ACTIVE with a heartbeat older than `heartbeat_timeout_s` (hung): recorded as
    lost and deleted; the next tick creates the next attempt, which resumes from the checkpoint;
  - the attempt ended (exit.json) but its slice is still there: deleted;
  - no live QR and fewer than `max_failures` failed attempts: a candidate for a new attempt.
Candidates get slices while fewer than `max_slices` are live, partially trained runs first, then
the longest; a quota or capacity error backs off `backoff_s` and is not a failure; no create
starts once `budget_slice_hours` are spent. The QR name is a pure function of (sweep, run,
attempt), and an attempt is claimed in the workdir before its create, so two controllers never
make two slices for one attempt (the second create gets ALREADY_EXISTS). The loop ends when every
run is complete or given up and the sweep holds no QR.
"""

import dataclasses
import datetime
import os
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence

from etils import epath

from rsjax.results.schema import existing_result
from rsjax.sweep import attempts, cloud, shipping, startup, state
from rsjax.sweep.grid import Run


@dataclasses.dataclass(frozen=True)
class Limits:
    max_slices: int = 1  # slices live at once (size it to the quota)
    max_failures: int = 2  # failed attempts of one run before it is given up
    budget_slice_hours: float | None = None  # no creates once this many are spent
    heartbeat_timeout_s: float = 1800.0  # an ACTIVE slice silent this long is hung
    backoff_s: float = 120.0  # after a quota or capacity error, before the next create
    poll_s: float = 60.0  # between ticks
    heartbeat_s: float = 30.0  # how often workers report
    claim_grace_s: float = 600.0  # a claimed attempt without a QR is being created this long
    exit_grace_s: float = 120.0  # a complete run's workers upload their last log this long


@dataclasses.dataclass
class RunView:
    """What one tick knows of one run."""

    run: Run
    status: str | None  # result.json's status, None if absent
    finished_at: float | None  # when result.json last ended (seconds since the epoch)
    history: list[attempts.AttemptRecord]
    resources: list[cloud.Resource]  # the run's QRs (any attempt)

    @property
    def last_attempt(self) -> int:
        numbers = [a.number for a in self.history] + [r.attempt for r in self.resources]
        return max(numbers, default=0)

    @property
    def current(self) -> attempts.AttemptRecord | None:
        return next((a for a in self.history if a.number == self.last_attempt), None)

    @property
    def failures(self) -> int:
        return sum(
            1
            for a in self.history
            if (a.exit and a.exit["returncode"] != 0 and not _was_preempted(a, self))
            or (a.lost and a.lost["reason"].startswith("create failed"))
        )

    @property
    def preemptions(self) -> int:
        return sum(1 for a in self.history if a.lost and not a.lost["reason"].startswith("create"))


def _was_preempted(record: attempts.AttemptRecord, view: RunView) -> bool:
    # Only the newest attempt's outcome is in result.json; older non-zero exits count as failures.
    return record.number == view.last_attempt and view.status == "preempted"


@dataclasses.dataclass
class Tick:
    """What one tick did and saw (returned for logging and tests)."""

    live: int = 0
    created: list[str] = dataclasses.field(default_factory=list)
    deleted: list[str] = dataclasses.field(default_factory=list)
    complete: int = 0
    given_up: list[str] = dataclasses.field(default_factory=list)
    slice_hours: float = 0.0
    finished: bool = False  # nothing left to do and no QR left


class Controller:
    """Runs `runs` of the sweep in `workdir` on slices of `spec` (see the module docstring)."""

    def __init__(
        self,
        runs: Sequence[Run],
        workdir: str,
        qr: cloud.QueuedResources,
        payload: shipping.Payload,
        limits: Limits = Limits(),
        log: Callable[[str], None] = print,
        clock: Callable[[], float] = time.time,
        env: Mapping[str, str] | None = None,
        profile_batch_per_device: int | None = None,
    ) -> None:
        self.runs = list(runs)
        # Profile-only (`--profile_only`): each attempt runs `rsjax profile` from this batch per
        # device, and a "profiled" record is done too.
        self.profile_batch_per_device = profile_batch_per_device
        self.done_statuses = state.DONE_STATUSES[profile_batch_per_device is not None]
        self.env = dict(env or {})  # exported on every worker (startup.render)
        self.workdir = workdir.rstrip("/")
        self.qr = qr
        self.payload = payload
        self.limits = limits
        self.log = log
        self.clock = clock
        self.sweep = cloud.sweep_label(self.workdir)
        self.backoff_until = 0.0
        self.scripts = tempfile.mkdtemp(prefix="rsjax-startup-")
        self.cost = {run.name: _cost(run) for run in self.runs}

    def run_dir(self, run: Run) -> str:
        return f"{self.workdir}/{run.name}"

    def ship_dir(self) -> str:
        return f"{self.workdir}/{attempts.LAUNCH_DIR}/ship"

    def script(self, run: Run, number: int) -> str:
        """The startup script of the run's attempt `number`."""
        attempt = startup.Attempt(
            run=run,
            run_dir=self.run_dir(run),
            attempt=number,
            resource=cloud.resource_name(self.qr.spec.prefix, self.sweep, run.run_id, number),
            ship_dir=self.ship_dir(),
            heartbeat_s=self.limits.heartbeat_s,
            profile_batch_per_device=self.profile_batch_per_device,
        )
        return startup.render(attempt, self.payload, self.qr, self.env)

    def ship(self) -> None:
        """Uploads the wheel and lock to WORKDIR/_launch/ship (once per launch)."""
        target = epath.Path(self.ship_dir())
        target.mkdir(parents=True, exist_ok=True)
        for local in (self.payload.wheel, self.payload.lock):
            (target / local.name).write_bytes(local.read_bytes())

    def views(self, resources: Sequence[cloud.Resource]) -> list[RunView]:
        by_run: dict[str, list[cloud.Resource]] = {}
        for resource in resources:
            by_run.setdefault(resource.run_id, []).append(resource)
        views = []
        for run in self.runs:
            record = existing_result(epath.Path(self.run_dir(run)))
            views.append(
                RunView(
                    run=run,
                    status=record["status"] if record else None,
                    finished_at=_epoch(record.get("finished")) if record else None,
                    history=attempts.read_attempts(self.run_dir(run)),
                    resources=by_run.get(run.run_id, []),
                )
            )
        return views

    def tick(self) -> Tick:
        """One pass: reconcile every run with its slices, then create what fits."""
        tick = Tick()
        resources = self.qr.list(self.sweep)
        if resources is None:
            return tick  # the cloud's view is unknown: change nothing this tick
        now = self.clock()
        views = self.views(cloud.live(resources))
        candidates = []
        for view in views:
            tick.slice_hours += sum(a.slice_hours(now) for a in view.history)
            live = self._reconcile(view, now, tick)
            if view.status in self.done_statuses:
                tick.complete += 1
                tick.live += live  # a finished run's slice, its workers' last uploads under way
            elif live:
                tick.live += 1
            elif view.failures >= self.limits.max_failures:
                tick.given_up.append(view.run.name)
            else:
                candidates.append(view)
        budget = self.limits.budget_slice_hours
        over_budget = budget is not None and tick.slice_hours >= budget
        if candidates and over_budget:
            self.log(f"[tpu] budget spent ({tick.slice_hours:.2f} slice-hours): no new slices")
        candidates.sort(key=lambda v: (v.last_attempt == 0, -self.cost[v.run.name]))
        for view in candidates:
            if tick.live >= self.limits.max_slices or over_budget or now < self.backoff_until:
                break
            if self._create(view, tick):
                tick.live += 1
        tick.finished = tick.live == 0 and not candidates and not tick.deleted
        if over_budget and tick.live == 0:
            tick.finished = True
        return tick

    def _reconcile(self, view: RunView, now: float, tick: Tick) -> bool:
        """Deletes the run's QRs that should not exist; True if a slice is live for it."""
        live = False
        for resource in view.resources:
            reason = self._why_delete(view, resource, now)
            if reason is None:
                live = True
                continue
            current = view.current
            if (
                reason not in ("complete", "ended", "stale attempt")
                and current is not None
                and current.number == resource.attempt
                and not current.ended
            ):
                attempts.record_lost(self.run_dir(view.run), resource.attempt, reason)
                view.history = attempts.read_attempts(self.run_dir(view.run))
            self.log(f"[tpu] {view.run.name}: deleting {resource.name} ({reason})")
            if self.qr.delete(resource.name):
                tick.deleted.append(resource.name)
            else:
                live = True  # still costs: counts against max_slices until it is gone
        current = view.current
        if not live and current is not None and not current.ended and not view.resources:
            # Claimed, but no QR: being created by a controller right now, or gone without a
            # word (deleted by hand, or its controller died between claim and create).
            if (
                current.heartbeat is None
                and self._claim_age(current, now) < self.limits.claim_grace_s
            ):
                return True
            attempts.record_lost(self.run_dir(view.run), current.number, "vanished")
            view.history = attempts.read_attempts(self.run_dir(view.run))
        return live

    def _claim_age(self, record: attempts.AttemptRecord, now: float) -> float:
        return now - record.claim["claimed_at"] if record.claim else float("inf")

    def _why_delete(self, view: RunView, resource: cloud.Resource, now: float) -> str | None:
        current = view.current
        if view.status in self.done_statuses:
            uploading = resource.attempt == view.last_attempt and not (current and current.ended)
            since = now - (view.finished_at or 0.0)
            return None if uploading and since < self.limits.exit_grace_s else "complete"
        if resource.attempt != view.last_attempt:
            return "stale attempt"
        if current is not None and current.ended:
            return "ended"
        if resource.state in cloud.LOST:
            return f"preempted ({resource.state})"
        if resource.state == cloud.ACTIVE and current is not None:
            beat = current.heartbeat["time"] if current.heartbeat else None
            since = beat if beat is not None else (current.claim or {}).get("claimed_at")
            if since is not None and now - since > self.limits.heartbeat_timeout_s:
                return "hung (no heartbeat)"
        return None

    def _create(self, view: RunView, tick: Tick) -> bool:
        number = view.last_attempt + 1
        run_dir = self.run_dir(view.run)
        name = cloud.resource_name(self.qr.spec.prefix, self.sweep, view.run.run_id, number)
        script = self.script(view.run, number)
        path = os.path.join(self.scripts, f"{name}.sh")
        with open(path, "w") as f:
            f.write(script)
        attempts.claim(run_dir, number, name)
        outcome = self.qr.create(name, cloud.labels(self.sweep, view.run.run_id, number), path)
        if outcome in (cloud.CreateOutcome.CREATED, cloud.CreateOutcome.EXISTS):
            word = "created" if outcome == cloud.CreateOutcome.CREATED else "adopted"
            self.log(f"[tpu] {view.run.name}: attempt {number} {word} as {name}")
            tick.created.append(name)
            return True
        if outcome == cloud.CreateOutcome.RETRY:
            attempts.unclaim(run_dir, number)
            self.backoff_until = self.clock() + self.limits.backoff_s
            wait = self.limits.backoff_s
            self.log(f"[tpu] quota, capacity or a server error: next create in {wait:.0f} s")
            return False
        attempts.record_lost(run_dir, number, "create failed")
        return False

    def run(self, max_ticks: int | None = None) -> int:
        """Ticks until finished; 0 when every run is complete, else 1."""
        state.write_sweep(self.workdir, self.runs)
        self.ship()
        ticks = 0
        while True:
            tick = self.tick()
            ticks += 1
            self.log(
                f"[tpu] {tick.complete}/{len(self.runs)} complete, {tick.live} live, "
                f"{len(tick.given_up)} given up, {tick.slice_hours:.2f} slice-hours"
            )
            if tick.finished or (max_ticks is not None and ticks >= max_ticks):
                break
            time.sleep(self.limits.poll_s)
        if tick.given_up:
            self.log(f"[tpu] given up after {self.limits.max_failures} failures: "
                     + ", ".join(tick.given_up))  # fmt: skip
        return 0 if tick.complete == len(self.runs) else 1


def _epoch(iso: str | None) -> float | None:
    """An ISO 8601 time (the records' `finished`) as seconds since the epoch; None if absent."""
    return datetime.datetime.fromisoformat(iso).timestamp() if iso else None


def _cost(run: Run) -> float:
    """A run's relative length for ordering: epochs x pixels per image x depth (from its
    overrides; missing factors count as 1)."""
    o = run.overrides
    return (
        float(o.get("num_epochs", 1) or 1)
        * float(o.get("data.image_size", 1) or 1) ** 2
        * float(o.get("model.depth", 1) or 1)
    )


def down(workdir: str, qr: cloud.QueuedResources, log: Callable[[str], None] = print) -> int:
    """Deletes every QR labelled with the sweep of `workdir` (needs nothing but the URL); 0 when
    none is left."""
    sweep = cloud.sweep_label(workdir.rstrip("/"))
    resources = qr.list(sweep)
    if resources is None:
        return 1
    left = [r.name for r in resources if not qr.delete(r.name)]
    log(f"[tpu] {sweep}: deleted {len(resources) - len(left)} queued resources"
        + (f", {len(left)} still there: {', '.join(left)}" if left else ""))  # fmt: skip
    return 1 if left else 0
