"""Packaging: pyproject.toml declares ranges and extras, requirements/lock.txt pins the one proven
environment, the CLI names a missing extra, and the wheel installs models-only (slow tier)."""

import importlib.metadata
import os
import pathlib
import re
import subprocess
import sys
import tomllib
import zipfile

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from rsjax import cli, extras

REPO = pathlib.Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
LOCK = REPO / "requirements" / "lock.txt"
REF_LOCK = REPO / "requirements" / "reference-lock.txt"


def locked(path: pathlib.Path) -> dict[str, str]:
    """{canonical name: version} of a lock file, whose lines are comments or NAME==VERSION."""
    pins = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            match = re.fullmatch(r"([A-Za-z0-9._-]+)==([A-Za-z0-9.+!-]+)", line.strip())
            assert match, f"{path.name}: not an exact pin: {line!r}"
            pins[canonicalize_name(match[1])] = match[2]
    return pins


def extra_requirements(extra: str) -> list[Requirement]:
    """The requirements of `extra`, with rsjax[...] self-references expanded."""
    found = []
    for text in PYPROJECT["optional-dependencies"][extra]:
        requirement = Requirement(text)
        if requirement.name == "rsjax":
            for inner in sorted(requirement.extras):
                found += extra_requirements(inner)
        else:
            found.append(requirement)
    return found


def test_each_extra_declares_the_distributions_of_its_modules():
    """rsjax.extras (what the CLI checks) and pyproject.toml (what pip installs) agree."""
    providers = importlib.metadata.packages_distributions()
    for extra, modules in extras.EXTRAS.items():
        declared = {canonicalize_name(r.name) for r in extra_requirements(extra)}
        for module in modules:
            dists = {canonicalize_name(d) for d in providers[module.split(".")[0]]}
            assert dists & declared, f"{module} ({dists}) is not in rsjax[{extra}]: {declared}"


def test_pyproject_holds_ranges_and_the_lock_satisfies_them():
    pins = locked(LOCK)
    texts = list(PYPROJECT["dependencies"])
    for extra in PYPROJECT["optional-dependencies"]:
        texts += [str(r) for r in extra_requirements(extra)]
    for text in texts:
        requirement = Requirement(text)
        assert "==" not in text, f"pyproject.toml pins {text!r}: exact versions go in the lock"
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is required but not locked"
        assert requirement.specifier.contains(pins[name], prereleases=True), (text, pins[name])


def test_the_environment_is_exactly_the_lock():
    """make builds .venv from requirements/lock.txt: nothing more, nothing less, same versions."""
    pins = locked(LOCK)
    installed = {
        canonicalize_name(d.metadata["Name"]): d.version for d in importlib.metadata.distributions()
    }
    installed.pop("rsjax")
    assert installed == pins


def test_the_reference_stack_is_locked_with_torch_pinned():
    pins = locked(REF_LOCK)
    assert {"torch", "timm", "numpy"} <= set(pins)
    assert pins["numpy"] == locked(LOCK)["numpy"]  # parity fixtures pass arrays across stacks


@pytest.mark.parametrize(
    "argv, extra",
    [
        (["train", "--help"], "train"),
        (["train", "--config", "fashion_mnist", "--workdir", "w"], "train"),
        (["profile", "--config", "fashion_mnist"], "train"),
        (["sweep", "plan", "sweeps/fmnist_fig3.py"], "train"),
        (["pseudo-label", "--teacher", "t", "--out", "o"], "train"),
        (["results", "report", "results.csv"], "analysis"),
        (["plot", "fig4", "--out", "figures"], "analysis"),
    ],
)
def test_a_command_without_its_extra_names_it_in_one_line(argv, extra, monkeypatch, capsys):
    absent = {"train": "tensorflow", "analysis": "matplotlib"}[extra]
    real = extras._importable
    monkeypatch.setattr(extras, "_importable", lambda module: module != absent and real(module))
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and f"pip install 'rsjax[{extra}]'" in lines[0], lines
    assert f"missing: {absent}" in lines[0]


def test_with_every_extra_installed_nothing_is_missing():
    assert {extra: extras.missing_modules(extra) for extra in extras.EXTRAS} == {
        "train": [],
        "analysis": [],
    }


def run(argv, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=900, **kwargs)


@pytest.mark.slow
def test_the_wheel_installs_the_models_alone(tmp_path):
    """The built wheel carries the paper tables, the CLI and the extras; installed without extras
    (at the locked versions) the models work, TensorFlow is absent, and training commands name
    the extra to install."""
    build = run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(REPO)]
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = tmp_path.glob("rsjax-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        info = next(n for n in names if n.endswith(".dist-info/METADATA"))
        metadata = archive.read(info).decode()
        entry_points = archive.read(info.replace("METADATA", "entry_points.txt")).decode()
    tables = {f"rsjax/paper_tables/{p.name}" for p in (REPO / "rsjax/paper_tables").glob("*.csv")}
    assert len(tables) == 9 and tables <= names
    assert "rsjax = rsjax.cli:main" in entry_points
    provided = set(re.findall(r"^Provides-Extra: (\S+)$", metadata, re.MULTILINE))
    assert provided == set(PYPROJECT["optional-dependencies"])

    venv = tmp_path / "venv"
    assert run([sys.executable, "-m", "venv", str(venv)]).returncode == 0
    python, pip = venv / "bin" / "python", [str(venv / "bin" / "python"), "-m", "pip"]
    install = run([*pip, "install", "-q", "-c", str(LOCK), str(wheel)])
    assert install.returncode == 0, install.stderr
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env.pop("PYTHONPATH", None)
    models = run(
        [str(python), "-c", "\n".join(
            (
                "import jax, jax.numpy as jnp, rsjax",
                "from rsjax.models import create_model",
                "assert 'site-packages' in rsjax.__file__, rsjax.__file__",
                "m = create_model('resnetrs50')",
                "x = jnp.zeros((1, 64, 64, 3))",
                "s = jax.eval_shape(lambda x: m.init(jax.random.key(0), x, train=False), x)",
                "v = m.init(jax.random.key(0), x, train=False)",
                "print(m.apply(v, x, train=False).shape)",
            )
        )],
        env=env,
        cwd=tmp_path,
    )  # fmt: skip
    assert models.returncode == 0 and models.stdout.strip() == "(1, 1000)", models.stderr
    no_tf = run([str(python), "-c", "import tensorflow"], env=env, cwd=tmp_path)
    assert no_tf.returncode != 0 and "No module named 'tensorflow'" in no_tf.stderr
    rsjax_bin = str(venv / "bin" / "rsjax")
    for argv, extra in (
        (["train", "--help"], "train"),
        (["train", "--config", "fashion_mnist", "--workdir", "w"], "train"),
        (["results", "collect", "runs", "-o", "r.csv"], "analysis"),
    ):
        result = run([rsjax_bin, *argv], env=env, cwd=tmp_path)
        assert result.returncode == 2, (argv, result.stderr)
        assert len(result.stderr.splitlines()) == 1, result.stderr
        assert f"pip install 'rsjax[{extra}]'" in result.stderr
    zoo = run([rsjax_bin, "models", "resnetrs50"], env=env, cwd=tmp_path)
    assert zoo.returncode == 0 and "resnetrs50" in zoo.stdout, zoo.stderr
