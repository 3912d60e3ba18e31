"""The allocator settings and the re-exec of the `rsjax` command (rsjax.malloc_tuning)."""

import os
import platform
import subprocess
import sys

import pytest

from rsjax import malloc_tuning

LINUX_GLIBC = sys.platform == "linux" and platform.libc_ver()[0] == "glibc"
needs_glibc = pytest.mark.skipif(not LINUX_GLIBC, reason="the tuning applies to Linux with glibc")
JEMALLOC = "/opt/lib/libjemalloc.so.2"


@needs_glibc
def test_jemalloc_is_preloaded_with_its_settings_and_user_values_are_kept():
    assert malloc_tuning.settings({}, jemalloc=JEMALLOC) == {
        "LD_PRELOAD": JEMALLOC,
        "MALLOC_CONF": malloc_tuning.JEMALLOC_CONF,
    }
    kept = malloc_tuning.settings(
        {"LD_PRELOAD": "/x/libfoo.so", "MALLOC_CONF": "narenas:2"}, jemalloc=JEMALLOC
    )
    assert kept == {"LD_PRELOAD": f"/x/libfoo.so {JEMALLOC}", "MALLOC_CONF": "narenas:2"}
    assert malloc_tuning.settings({"LD_PRELOAD": JEMALLOC}, jemalloc=JEMALLOC) == {}


@needs_glibc
def test_without_jemalloc_glibc_gets_huge_pages_unless_the_user_set_them(monkeypatch):
    monkeypatch.setattr(malloc_tuning, "find_jemalloc", lambda: None)
    assert malloc_tuning.settings({}) == {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}
    assert malloc_tuning.settings({"GLIBC_TUNABLES": "glibc.malloc.check=3"}) == {
        "GLIBC_TUNABLES": "glibc.malloc.check=3:glibc.malloc.hugetlb=1"
    }
    assert malloc_tuning.settings({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}) == {}


def test_opt_out_and_advice():
    assert malloc_tuning.settings({malloc_tuning.OPT_OUT: "0"}, jemalloc=JEMALLOC) == {}
    assert malloc_tuning.advice({malloc_tuning.OPT_OUT: "0"}) is None
    if LINUX_GLIBC:
        assert malloc_tuning.shell_assignments({}) in malloc_tuning.advice({})


def _child_env(**extra: str) -> dict[str, str]:
    drop = ("GLIBC_TUNABLES", "LD_PRELOAD", "MALLOC_CONF", malloc_tuning.OPT_OUT)
    return {**{k: v for k, v in os.environ.items() if k not in drop}, **extra}


def test_reexec_applies_the_settings_once_and_keeps_argv():
    code = (
        "import os, sys; from rsjax import malloc_tuning; malloc_tuning.maybe_reexec(); "
        "print([os.environ.get(k) for k in ('LD_PRELOAD', 'MALLOC_CONF', 'GLIBC_TUNABLES')], "
        "sys.argv[1:])"
    )
    env = _child_env()
    out = subprocess.run(
        [sys.executable, "-c", code, "a", "--b=1"], env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    expected = malloc_tuning.settings(env)
    values = [expected.get(k) for k in ("LD_PRELOAD", "MALLOC_CONF", "GLIBC_TUNABLES")]
    assert out.stdout.strip() == f"{values} ['a', '--b=1']"
    opted_out = subprocess.run(
        [sys.executable, "-c", code],
        env=_child_env(**{malloc_tuning.OPT_OUT: "0"}),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert opted_out == "[None, None, None] []"


def test_module_prints_env_words_for_makefiles():
    env = _child_env()
    out = subprocess.run(
        [sys.executable, "-m", "rsjax.malloc_tuning"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert out == malloc_tuning.shell_assignments(env)
