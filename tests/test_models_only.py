"""The models install alone: `import rsjax.models` (and the `rsjax models` command) pull in none of
the training or analysis stack. Runs in the full environment and, through `make compat`, in a
models-only install of the wheel at the lowest jax/flax/numpy that pyproject.toml declares."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp

import rsjax
from rsjax.models import create_model

# What a models-only user must not get by importing the models (pyproject.toml's extras).
HEAVY = ("tensorflow", "optax", "orbax", "pandas", "matplotlib", "ml_collections", "tensorboard")


def imported_heavy_modules(code: str) -> list[str]:
    """The HEAVY top-level packages in sys.modules after running `code` in a fresh interpreter."""
    listing = "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    probe = f"{code}\nimport json, sys\n{listing}"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=300
    ).stdout
    return sorted(set(json.loads(out.splitlines()[-1])) & set(HEAVY))


def test_importing_the_models_imports_no_training_or_analysis_stack():
    assert imported_heavy_modules("import rsjax.models, rsjax.profiling, rsjax.zoo") == []


def test_the_models_command_imports_no_training_or_analysis_stack():
    code = "from rsjax import cli\nassert cli.main(['models', 'resnetrs50']) == 0"
    assert imported_heavy_modules(code) == []


def test_the_probe_sees_a_heavy_import():
    """The check can fail: an import of the training stack shows up."""
    assert imported_heavy_modules("import rsjax.models, optax") == ["optax"]


def test_resnetrs50_builds_traces_and_runs():
    model = create_model("resnetrs50")
    images = jnp.zeros((1, 64, 64, 3))
    shapes = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), images)
    params = sum(x.size for x in jax.tree.leaves(shapes["params"]))
    assert 35.6e6 < params < 35.8e6  # Table 7: 35.7M (timm's count: 35,686,056)
    small = create_model("resnetrs50", num_classes=3, width_multiplier=0.25)
    variables = jax.jit(lambda x: small.init(jax.random.key(0), x, train=False))(images)
    logits = jax.jit(lambda v, x: small.apply(v, x, train=False))(variables, images)
    assert logits.shape == (1, 3) and bool(jnp.isfinite(logits).all())


def test_under_make_compat_the_installed_wheel_is_under_test():
    """`make compat` sets RSJAX_EXPECT_INSTALLED: the tests import the wheel, not the checkout."""
    installed = "site-packages" in rsjax.__file__
    assert installed == bool(os.environ.get("RSJAX_EXPECT_INSTALLED")), rsjax.__file__
