"""Joining a multi-process (multi-host) JAX run: `jax.distributed.initialize` from flags.

On a Cloud TPU slice every worker runs the same command and the cluster is auto-detected (no
flags). Elsewhere the three flags name it: the coordinator (process 0's "host:port"), the number
of processes and this process's id. CPU processes exchange collectives through gloo (TPUs
ignore that setting). A process that stops sending heartbeats for `heartbeat_timeout_s` is
declared dead by the coordinator and every other process's next collective fails, so a run
whose peer was killed exits instead of hanging.
"""

import dataclasses

import jax

from rsjax.errors import UsageError


@dataclasses.dataclass(frozen=True)
class Cluster:
    """Where this process sits in a multi-process run; all None: auto-detect (Cloud TPU)."""

    coordinator_address: str | None = None  # "host:port" of process 0
    num_processes: int | None = None
    process_id: int | None = None
    heartbeat_timeout_s: int = 100  # a silent peer is dead after this long (seconds)
    initialization_timeout_s: int = 300  # waiting for every process to join (seconds)

    def check(self) -> "Cluster":
        """The cluster itself; UsageError (one line) for flags that cannot describe one."""
        given = [self.coordinator_address, self.num_processes, self.process_id]
        if any(v is not None for v in given) and any(v is None for v in given):
            raise UsageError(
                "--coordinator_address, --num_processes and --process_id go together "
                "(none of them: auto-detect the cluster, as on Cloud TPU)"
            )
        if self.num_processes is not None:
            if self.num_processes < 1:
                raise UsageError(f"--num_processes must be >= 1, got {self.num_processes}")
            if not 0 <= self.process_id < self.num_processes:
                raise UsageError(
                    f"--process_id must be in [0, {self.num_processes}), got {self.process_id}"
                )
            host, _, port = self.coordinator_address.rpartition(":")
            if not host or not port.isdigit():
                raise UsageError(
                    f"--coordinator_address must be HOST:PORT, got {self.coordinator_address!r}"
                )
        if self.heartbeat_timeout_s < 1 or self.initialization_timeout_s < 1:
            raise UsageError("--heartbeat_timeout_s and the initialization timeout must be >= 1")
        return self


def initialize(cluster: Cluster) -> None:
    """Joins the run `cluster` describes. Call before anything touches a JAX device."""
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=cluster.coordinator_address,
        num_processes=cluster.num_processes,
        process_id=cluster.process_id,
        initialization_timeout=cluster.initialization_timeout_s,
        heartbeat_timeout_seconds=cluster.heartbeat_timeout_s,
    )


def barrier(name: str, timeout_s: int = 1800) -> None:
    """Waits until every process of the run reaches `name` (unique per run), through the
    coordinator rather than a device collective; returns at once in a one-process run. Raises
    if `timeout_s` passes first or a peer is declared dead."""
    from orbax.checkpoint import multihost  # the coordination service's barrier, as Orbax uses it

    multihost.get_barrier_sync_fn()(key=name, timeout_ms=timeout_s * 1000)
