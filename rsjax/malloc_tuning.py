"""The host allocator for XLA:CPU: keep every step's buffers instead of re-faulting them.

XLA:CPU allocates each execution's buffers with `posix_memalign` and frees them when it ends:
one combined temporary buffer (about 2 GB for the ResNet-RS-50 train step at batch 16, 160 px)
plus the outputs, allocated on XLA's worker thread. glibc serves blocks above 32 MiB from a fresh
`mmap` and returns them with `munmap` (a thread's arena always does, whatever the tunables), so
every step faults in and zeroes all of that memory again.

So the `rsjax` command and the benchmark scripts re-execute themselves (`maybe_reexec`) with
jemalloc preloaded when the system has it (`find_jemalloc`; Debian/Ubuntu: `apt-get install
libjemalloc2`; `make test` and `make demo` install it when they can), configured by
`JEMALLOC_CONF` (huge pages, no separate eagerly purged arena for large blocks, freed memory kept
mapped for 30 s so the next step reuses it), and with glibc's huge-page tunable
(`GLIBC_TUNABLES=glibc.malloc.hugetlb=1`) otherwise. The allocator only moves memory around:
results are bit-identical. A setting the user already made (`LD_PRELOAD` with jemalloc,
`MALLOC_CONF`, `glibc.malloc.hugetlb`) is kept as it is; `RSJAX_MALLOC_TUNING=0` opts out. A
library caller's process cannot be re-executed: `rsjax.train.train_and_evaluate` logs `advice()`
instead, and `env $(python -m rsjax.malloc_tuning) CMD` starts CMD with the settings.

The measurements behind these choices (page faults, system time and images/s of each allocator
and tunable tried): docs/host_memory.md.
"""

import glob
import os
import platform
import sys

OPT_OUT = "RSJAX_MALLOC_TUNING"
JEMALLOC_PATTERNS = (
    "/usr/lib/*-linux-gnu/libjemalloc.so.2",  # Debian, Ubuntu
    "/usr/lib64/libjemalloc.so.2",  # Fedora, RHEL
    "/usr/local/lib/libjemalloc.so.2",  # built from source
)
JEMALLOC_CONF = ",".join(
    [
        "thp:always",  # madvise huge pages for its memory (THP in madvise mode is enough)
        "metadata_thp:auto",
        "oversize_threshold:0",  # no dedicated, eagerly purged arena for large blocks
        "dirty_decay_ms:30000",  # freed pages stay mapped for 30 s: the next step reuses them
        "muzzy_decay_ms:30000",
    ]
)
GLIBC_HUGEPAGES_TUNABLE = "glibc.malloc.hugetlb"


def find_jemalloc() -> str | None:
    """Path of the system's `libjemalloc.so.2`, or None."""
    for pattern in JEMALLOC_PATTERNS:
        if matches := sorted(glob.glob(pattern)):
            return matches[0]
    return None


def settings(environ: dict[str, str] | None = None, jemalloc: str | None = None) -> dict[str, str]:
    """The environment variables to add for the tuned allocator; {} when there is nothing to do
    (opted out, not Linux with glibc, or already set). `jemalloc`: library path, None to search."""
    environ = os.environ if environ is None else environ
    if (
        environ.get(OPT_OUT, "1") == "0"
        or sys.platform != "linux"
        or platform.libc_ver()[0] != "glibc"
        or "jemalloc" in environ.get("LD_PRELOAD", "")
    ):
        return {}
    jemalloc = jemalloc or find_jemalloc()
    if jemalloc:
        preload = " ".join(p for p in (environ.get("LD_PRELOAD", ""), jemalloc) if p)
        return {"LD_PRELOAD": preload, "MALLOC_CONF": environ.get("MALLOC_CONF", JEMALLOC_CONF)}
    entries = [e for e in environ.get("GLIBC_TUNABLES", "").split(":") if e]
    if any(e.split("=", 1)[0] == GLIBC_HUGEPAGES_TUNABLE for e in entries):
        return {}
    return {"GLIBC_TUNABLES": ":".join([*entries, f"{GLIBC_HUGEPAGES_TUNABLE}=1"])}


def shell_assignments(environ: dict[str, str] | None = None) -> str:
    """`settings()` as `NAME=value` words for `env` (empty when there is nothing to add)."""
    return " ".join(f"{name}={value}" for name, value in settings(environ).items())


def advice(environ: dict[str, str] | None = None) -> str | None:
    """A one-line hint to start this process with the tuned allocator, or None if it has it (or
    cannot use it, or opted out)."""
    if not (words := shell_assignments(environ)):
        return None
    return (
        f"XLA:CPU steps re-fault their buffers with this allocator; start Python with "
        f"{words} (the rsjax command does; {OPT_OUT}=0 silences this)."
    )


def maybe_reexec() -> None:
    """Re-executes this process (same PID, same argv) with `settings()` when there are any.

    Call it first thing in a command's entry point, before threads start or files are written.
    """
    if not (extra := settings()):
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], {**os.environ, **extra})


if __name__ == "__main__":  # `env $(python -m rsjax.malloc_tuning) cmd`: for Makefiles, shells
    print(shell_assignments())
