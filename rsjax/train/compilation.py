"""Compilation policy: cheap compiles for programs that run once, and the persistent XLA cache.

- `jit_once(fn, **jit_kwargs)`: jit for a program called once per run (the state initialiser).
  On CPU it compiles at XLA backend optimisation level 0: the initialiser of a ResNet-RS (dozens
  of threefry-based initialisers) compiles several times faster, and it runs for milliseconds
  either way. Other backends compile it as usual.
- `forward_compiler_options()`: XLA options for forward-only programs (inference, evaluation).
  On CPU, YNNPACK fusions that take each matmul's elementwise neighbours (BatchNorm, ReLU, the
  residual add) with it (`LIBRARY_FUSION_TYPE_DOT`; XLA's default fuses the matmul alone): faster
  inference with the same logits. The same option slows the train step, so training keeps XLA's
  default. Other backends: no options. Measurements: docs/performance.md.
- `use_persistent_cache(directory)`: JAX's on-disk compilation cache, so that processes that
  compile the same program (a sweep's runs of one model at one resolution, a resumed run) load
  it instead of compiling. The trainer passes the learning-rate schedule as an argument of the
  step (`rsjax.train.optim.WarmupCosineSchedule`), so runs that differ only in their length
  share one compiled step. `JAX_COMPILATION_CACHE_DIR` set in the environment takes precedence.
"""

import os
from collections.abc import Callable
from typing import Any

import jax

CACHE_ENV = "JAX_COMPILATION_CACHE_DIR"
_ONE_SHOT_OPTIONS = {"cpu": {"xla_backend_optimization_level": 0}}
_FORWARD_OPTIONS = {"cpu": {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_DOT"}}


def jit_once(fn: Callable[..., Any], **jit_kwargs: Any) -> Callable[..., Any]:
    """`jax.jit(fn, **jit_kwargs)` compiled for speed of compilation where that matters (CPU).

    The returned function lowers and compiles on every call: call it once. Under another
    transformation (`jax.eval_shape`, an enclosing `jit`) it behaves as plain `jax.jit`.
    """
    jitted = jax.jit(fn, **jit_kwargs)

    def call(*args: Any) -> Any:
        if any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(args)):
            return jitted(*args)
        options = _ONE_SHOT_OPTIONS.get(jax.default_backend())
        return jitted.lower(*args).compile(compiler_options=options)(*args)

    return call


def forward_compiler_options() -> dict[str, Any] | None:
    """`compiler_options` for `jax.jit` of a forward-only program on the default backend."""
    return _FORWARD_OPTIONS.get(jax.default_backend())


def use_persistent_cache(directory: str | os.PathLike) -> str:
    """Turns on JAX's persistent compilation cache in `directory` (or in $JAX_COMPILATION_CACHE_DIR
    when that is set) and returns the directory used. Call it before the first compilation."""
    directory = os.environ.get(CACHE_ENV) or os.fspath(directory)
    jax.config.update("jax_compilation_cache_dir", directory)
    return directory
