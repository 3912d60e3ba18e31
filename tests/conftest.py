"""Shared test setup: 8 simulated CPU devices, quiet TensorFlow, tiny models and datasets.

Only the models' dependencies (jax, flax, numpy) are imported at the top: the model tests
(the Makefile's MODEL_TESTS) also run in a models-only install (`make compat`), where the training
stack (ml_collections, TensorFlow) is absent, so the training helpers import it when called.
"""

from __future__ import annotations

import gzip
import importlib.metadata
import os
import pathlib
import shutil
import tempfile
from typing import TYPE_CHECKING

# Must happen before JAX initialises its backend: sharding tests need 8 devices. The 8 simulated
# devices share 2 cores, so one device can reach a collective long after the others; XLA:CPU
# aborts the whole process when a collective's rendezvous waits longer than its terminate timeout
# (40 s by default), so wait up to 10 minutes instead. (CI aborted twice inside the 4x2 FSDP
# "flat" sharding test, once with each timeout; see test_sharding.as_tree_layout.)
# Older jaxlibs (the models are also checked at the lowest declared one, `make compat`) abort on
# that flag as unknown; the sharding tests that need it run only with the locked jaxlib.
os.environ["XLA_FLAGS"] = " ".join(
    (os.environ.get("XLA_FLAGS", "--xla_force_host_platform_device_count=8"),)
    + (
        ("--xla_cpu_collective_call_terminate_timeout_seconds=600",)
        if tuple(map(int, importlib.metadata.version("jaxlib").split(".")[:2])) >= (0, 10)
        else ()
    )
)
# XLA:CPU gives its execution and intra-op pools max(cores, devices) threads: exactly enough for
# one 8-device collective at a time, as its own source notes, so any other task holding one of
# them (a transfer, a queued launch) stalls that collective. Two collectives' worth of threads
# leaves headroom on a 2-core machine; the sharding tests ran no slower with it (115 s vs 120 s).
os.environ.setdefault("PJRT_NPROC", "16")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rsjax.models import ResNetRS, abstract_variables

if TYPE_CHECKING:
    import ml_collections


def pytest_configure(config: pytest.Config) -> None:
    """One persistent XLA compilation cache for the test session, inherited by its subprocesses
    (and pytest-xdist workers): the programs that many tests compile again in a new process (the
    tiny presets trained on `small_fmnist`, a killed run and its restart) compile once per session.
    Deleted at the end by the process that made it; a cache set in the environment is used as it
    is. With the locked jax only: `make compat`'s lowest versions run without it."""
    if jax.__version_info__[:2] < (0, 10) or os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return
    directory = tempfile.mkdtemp(prefix="rsjax-tests-xla-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = directory
    jax.config.update("jax_compilation_cache_dir", directory)
    config.add_cleanup(lambda: shutil.rmtree(directory, ignore_errors=True))


# The smallest ResNet-RS-shaped model: width x0.125, one block per stage, 7 classes.
TINY_KWARGS = dict(depth=0, stage_sizes=(1, 1, 1, 1), width_multiplier=0.125, num_classes=7)


@pytest.fixture(scope="session")
def tiny_model() -> ResNetRS:
    return ResNetRS(**TINY_KWARGS)


@pytest.fixture(scope="session")
def tiny_variables(tiny_model):
    """(variables, images [2, 32, 32, 3]) of the tiny model; initialised once per session because
    XLA:CPU takes seconds to compile the random initialisers."""
    images = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
    variables = jax.jit(lambda x: tiny_model.init(jax.random.key(1), x, train=False))(images)
    return variables, images


def write_idx(path: pathlib.Path, array: np.ndarray) -> None:
    """Writes a gzipped IDX file (the Fashion-MNIST format) of a uint8 array."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def make_fashion_mnist_files(directory: pathlib.Path, n_train: int, n_test: int) -> pathlib.Path:
    """Small Fashion-MNIST-format files: class-dependent patterns plus noise (learnable)."""
    rng = np.random.default_rng(0)
    directory.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = labels[:, None, None] * 20 + rng.integers(0, 60, (n, 28, 28))
        write_idx(directory / f"{split}-images-idx3-ubyte.gz", np.clip(images, 0, 255))
        write_idx(directory / f"{split}-labels-idx1-ubyte.gz", labels)
    return directory


@pytest.fixture(scope="session")
def small_fmnist(tmp_path_factory) -> dict:
    """A prepared 256/100-example Fashion-MNIST-format dataset: {"manual_dir", "data_dir"}."""
    root = tmp_path_factory.mktemp("fmnist")
    manual = make_fashion_mnist_files(root / "manual", 256, 100)
    return {"manual_dir": str(manual), "data_dir": str(root / "tfds")}


def small_fmnist_config(
    small_fmnist: dict, preset: str = "tiny", **overrides
) -> ml_collections.ConfigDict:
    """A small Fashion-MNIST preset (`tiny`, or `efficientnet_tiny`) over the `small_fmnist`
    files, with dotted-key overrides ("optim.base_learning_rate": 1.0), locked again."""
    from rsjax.configs import apply_overrides
    from rsjax.configs import fashion_mnist as fmnist_config

    return apply_overrides(
        fmnist_config.get_config(preset),
        {
            "data.manual_dir": small_fmnist["manual_dir"],
            "data.data_dir": small_fmnist["data_dir"],
            "data.shuffle_buffer": 256,
            **overrides,
        },
    )


def train_program(
    model: ResNetRS,
    batch: int,
    learning_rate: float,
    resolution: int = 32,
    mesh=None,
    **overrides,
):
    """(program, schedule): the trainer's program (`rsjax.train.programs`) for `model` on
    `batch` images of `resolution` px at a constant `learning_rate`, on `mesh` (default one
    device); `overrides` are dotted config keys ("ema_decay": 0.99)."""
    from rsjax.train import programs, sharding

    mesh = mesh or sharding.make_mesh(1, 1)
    config = programs.model_config(
        model,
        resolution,
        batch,
        **{
            "optim.base_learning_rate": learning_rate * 256 / batch,
            "mesh.data": mesh.shape["data"],
            "mesh.model": mesh.shape["model"],
            **overrides,
        },
    )
    program = programs.build(config, mesh, (resolution, resolution, 3))
    # Durations whose cosine stays within 1e-9 of its peak over a test's few steps: a constant rate.
    flat = programs.Durations(total_steps=10**9, warmup_steps=0, eval_every_steps=0)
    return program, program.schedule(flat)


def random_variables(model, channels=3, seed=0):
    """Variables of the right shapes filled from numpy (avoids compiling the initialisers)."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda s: jnp.asarray(rng.uniform(0.5, 1.0, s.shape), s.dtype),
        abstract_variables(model, channels),
    )


def train_mode_loss_and_grads(model, variables, images):
    """((mean squared logit, (logits, new batch_stats)), grads) in train mode, jitted."""

    def loss(params):
        logits, updates = model.apply(
            {"params": params, "batch_stats": variables["batch_stats"]},
            images,
            train=True,
            mutable=["batch_stats"],
        )
        return jnp.mean(jnp.square(logits)), (logits, updates["batch_stats"])

    return jax.jit(jax.value_and_grad(loss, has_aux=True))(variables["params"])


def assert_trees_close(got, want, tolerance):
    """Leaf by leaf, |got - want| <= tolerance x max |want| of the leaf (fp32 sums reorder)."""
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(g, w, rtol=0, atol=tolerance * float(np.abs(w).max()) + 1e-12)


@pytest.fixture
def fake_bucket(tmp_path, monkeypatch):
    """gs:// paths through etils.epath land in tmp_path/"bucket" (a local stand-in for GCS:
    code that bypasses epath, e.g. builtin open or pathlib on a gs:// string, fails)."""
    from etils.epath import gpath
    from etils.epath import testing as epath_testing

    # With TensorFlow installed epath sends gs:// to tf.io.gfile, past mock_epath's backends.
    monkeypatch.setattr(gpath, "_is_tf_installed", lambda: False)

    root = tmp_path / "bucket"
    root.mkdir()

    def local(path):
        text = os.fspath(path)
        return str(root / text[len("gs://") :]) if text.startswith("gs://") else text

    def remote(text):
        return "gs://" + os.path.relpath(text, root) if text.startswith(str(root)) else text

    def one(fn, path, *args, **kwargs):
        return fn(local(path), *args, **kwargs)

    def two(fn, path, dst, *args, **kwargs):
        return fn(local(path), local(dst), *args, **kwargs)

    def glob(fn, pattern):
        return [remote(p) for p in fn(local(pattern))]

    def walk(fn, top, *args, **kwargs):
        for dirpath, dirnames, filenames in fn(local(top), *args, **kwargs):
            yield remote(dirpath), dirnames, filenames

    names = ("exists", "isdir", "listdir", "makedirs", "mkdir", "open", "remove", "rmtree", "stat")
    with epath_testing.mock_epath(
        **{n: one for n in names}, copy=two, rename=two, replace=two, glob=glob, walk=walk
    ):
        yield root
