"""Shared test setup: quiet TensorFlow, CPU-only JAX, and the timm parity reference files."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax
import pytest

from rsjax.models import ResNetRS

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
