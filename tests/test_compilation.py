"""Compilation policy: one-shot compiles, forward-only options, the schedule as a step argument."""

import functools

import jax
import ml_collections
import numpy as np
import optax
import pytest

from rsjax.train import compilation, optim
from rsjax.train.state import create_train_state


@pytest.mark.slow
def test_jit_once_initialises_like_jit(tiny_model):
    tx = optim.make_optimizer(
        ml_collections.ConfigDict(
            {"name": "sgd", "weight_decay": 4e-5, "momentum": 0.9, "nesterov": True}
        ),
        optax.constant_schedule(0.1),
    )
    init = functools.partial(create_train_state, model=tiny_model, tx=tx, image_shape=(32, 32, 3))
    reference = jax.jit(init)(jax.random.key(3))
    cheap = compilation.jit_once(init)(jax.random.key(3))
    assert jax.tree.structure(cheap) == jax.tree.structure(reference)
    # Level-0 code may round transcendental initialisers differently in the last bit.
    for a, b in zip(jax.tree.leaves(cheap), jax.tree.leaves(reference), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-6)


def test_forward_options_give_the_default_logits(tiny_model, tiny_variables):
    variables, images = tiny_variables
    forward = functools.partial(tiny_model.apply, train=False)
    options = compilation.forward_compiler_options()
    if jax.default_backend() == "cpu":
        assert options  # the YNNPACK dot fusions are what inference runs with here
    fused = jax.jit(forward, compiler_options=options)(variables, images)
    reference = jax.jit(forward)(variables, images)
    np.testing.assert_allclose(np.asarray(fused), np.asarray(reference), rtol=1e-5, atol=1e-5)


def test_jit_once_traces_under_eval_shape():
    # The benchmarks lower the step for the initialiser's abstract state (eval_shape traces it).
    double = compilation.jit_once(lambda x: {"twice": 2 * x})
    abstract = jax.eval_shape(double, jax.ShapeDtypeStruct((3, 5), np.float32))
    assert abstract["twice"].shape == (3, 5) and abstract["twice"].dtype == np.float32
    np.testing.assert_array_equal(double(np.ones((2,), np.float32))["twice"], [2.0, 2.0])


def test_schedule_is_a_step_argument_compiled_once():
    calls = []

    @jax.jit
    def lr_at(schedule, step):
        calls.append(1)  # runs once per trace
        return schedule(step)

    short = optim.learning_rate_schedule(0.4, total_steps=47, warmup_steps=4)
    long = optim.learning_rate_schedule(0.1, total_steps=4680, warmup_steps=468)
    for schedule, total, warmup, peak in ((short, 47, 4, 0.4), (long, 4680, 468, 0.1)):
        reference = optax.warmup_cosine_decay_schedule(0.0, peak, warmup, total, 0.0)
        for step in (0, warmup // 2, warmup, total // 2, total, total + 5):
            assert float(lr_at(schedule, step)) == pytest.approx(
                float(reference(step)), rel=1e-5, abs=1e-7
            )
    assert len(calls) == 1


def test_persistent_cache_directory_env_wins(monkeypatch, tmp_path):
    previous = jax.config.jax_compilation_cache_dir
    try:
        monkeypatch.delenv(compilation.CACHE_ENV, raising=False)
        assert compilation.use_persistent_cache(tmp_path / "a") == str(tmp_path / "a")
        monkeypatch.setenv(compilation.CACHE_ENV, str(tmp_path / "b"))
        assert compilation.use_persistent_cache(tmp_path / "a") == str(tmp_path / "b")
        assert jax.config.jax_compilation_cache_dir == str(tmp_path / "b")
    finally:
        jax.config.update("jax_compilation_cache_dir", previous)
