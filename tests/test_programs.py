"""One train program: `rsjax profile` times the step `rsjax train` compiles, and nothing else
assembles a train step."""

import pathlib
import re

import jax
import pytest

from rsjax import cli
from rsjax.train import programs
from tests.conftest import small_fmnist_config

REPO = pathlib.Path(__file__).resolve().parents[1]


class Built(BaseException):
    """Stops an entry point right after it built its program (not an Exception: the CLI's
    handler of failed runs lets it through)."""


def lowered_text(program: programs.Program) -> str:
    data = program.abstract_batch(program.config.global_batch_size)
    schedule = jax.eval_shape(lambda: program.schedule(programs.Durations(100, 10, 0)))
    return program.train_step.lower(program.abstract_state, data, schedule).as_text()


@pytest.fixture
def built_programs(monkeypatch):
    """Programs built by the entry points, each stopped right after building (nothing runs)."""
    seen = []
    real = programs.build

    def build(*args, **kwargs):
        seen.append(real(*args, **kwargs))
        raise Built

    monkeypatch.setattr(programs, "build", build)
    return seen


def test_profile_and_train_compile_the_same_step(small_fmnist, tmp_path, built_programs):
    depth = ["--config.model.depth=26", "--config.eval_batch_size=400"]  # 8 devices split 400
    data = [f"--config.data.{k}={small_fmnist[k]}" for k in ("manual_dir", "data_dir")]
    with pytest.raises(Built):
        cli.main(["train", "--config", "fashion_mnist", *depth, *data, "--workdir", str(tmp_path)])
    # The fashion_mnist preset trains on batches of 128 over the 8 simulated devices.
    with pytest.raises(Built):
        cli.main(["profile", "--config", "fashion_mnist", *depth, "--batch_per_device", "16"])
    trained, profiled = built_programs
    assert trained.model == profiled.model and trained.model.blocks_per_stage == (2, 2, 2, 2)
    assert trained.mesh.shape == profiled.mesh.shape == {"data": 8, "model": 1}
    assert lowered_text(trained) == lowered_text(profiled)


def test_the_fingerprint_sees_a_different_recipe(small_fmnist):
    """The comparison can fail: a step with another label smoothing lowers differently."""
    mesh = programs.sharding.make_mesh(1, 1)
    config = small_fmnist_config(small_fmnist, **{"mesh.data": 1})
    other = small_fmnist_config(small_fmnist, **{"mesh.data": 1, "label_smoothing": 0.2})
    shape = (28, 28, 1)
    assert lowered_text(programs.build(config, mesh, shape)) != lowered_text(
        programs.build(other, mesh, shape)
    )


def test_no_other_module_builds_a_train_step():
    """`rsjax.train.step.train_step` is called from the program builder only."""
    pattern = re.compile(
        r"(?<!def )(?<![.\w])train_step\s*\("  # a bare call
        r"|from rsjax\.train\.step import[^\n]*\btrain_step\b"
        r"|\bstep\.train_step\b"
    )
    offenders = []
    for folder in ("rsjax", "benchmarks", "tests"):
        for path in (REPO / folder).rglob("*.py"):
            if path.relative_to(REPO).as_posix() in (
                "rsjax/train/programs.py",
                "rsjax/train/step.py",
            ):
                continue
            text = path.read_text()
            if path.name == "test_programs.py":
                text = text.split("def test_no_other_module_builds_a_train_step")[0]
            if pattern.search(text):
                offenders.append(str(path.relative_to(REPO)))
    assert not offenders, offenders
