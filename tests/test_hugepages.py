"""The huge-page malloc re-exec of the `rsjax` command (rsjax.hugepages)."""

import os
import subprocess
import sys

from rsjax import hugepages


def test_with_tunable_appends_and_respects_user_settings():
    assert hugepages.with_tunable(None) == "glibc.malloc.hugetlb=1"
    assert hugepages.with_tunable("") == "glibc.malloc.hugetlb=1"
    assert (
        hugepages.with_tunable("glibc.malloc.check=3")
        == "glibc.malloc.check=3:glibc.malloc.hugetlb=1"
    )
    assert hugepages.with_tunable("glibc.malloc.hugetlb=0") is None
    assert hugepages.with_tunable("glibc.malloc.check=3:glibc.malloc.hugetlb=2") is None


def test_not_applicable_when_opted_out_or_already_set():
    assert not hugepages.applicable({hugepages.OPT_OUT: "0"})
    assert not hugepages.applicable({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"})


def test_advice_only_when_the_tunable_would_help():
    assert hugepages.advice({hugepages.OPT_OUT: "0"}) is None
    assert hugepages.advice({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}) is None
    if hugepages.applicable({}):  # Linux, glibc, transparent huge pages on: this machine
        assert hugepages.ENABLED in hugepages.advice({})


def test_reexec_sets_the_tunable_once_and_keeps_argv():
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", hugepages.OPT_OUT)}
    code = (
        "import os, sys; from rsjax import hugepages; hugepages.maybe_reexec(); "
        "print(os.environ.get('GLIBC_TUNABLES'), sys.argv[1:])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, "a", "--b=1"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    expected = "glibc.malloc.hugetlb=1" if hugepages.applicable(env) else "None"
    assert out == f"{expected} ['a', '--b=1']"
    opted_out = subprocess.run(
        [sys.executable, "-c", code],
        env={**env, hugepages.OPT_OUT: "0"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert opted_out == "None []"
