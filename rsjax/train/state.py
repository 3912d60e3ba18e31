"""The train state: parameters, BatchNorm statistics, optimiser state and their EMAs.

Two layouts hold the same numbers:
  "tree": the momentum trace and the EMAs are trees shaped like the parameters (and statistics),
          so they follow the parameters' partition rules (what TPU/GPU meshes want).
  "flat": the momentum trace (`optax.flatten`) and the EMAs are single 1-D vectors, in
          `jax.flatten_util.ravel_pytree` order. The step then updates them with a handful of
          fused loops instead of several small kernels per parameter, which XLA:CPU compiles
          faster: RS-50's train step has 1746 kernels instead of 2810, and compiled in a median
          14.3 s instead of 14.9 s in an interleaved A/B (README "Compile time").
  "auto": "flat" on CPU, "tree" on every other backend.
The layout is part of a checkpoint's structure: a run resumes only under the layout it started
with (the trainer records the resolved layout in config.json, so a mismatch is refused clearly).
"""

from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

from rsjax.backend import resolve_auto

STATE_LAYOUTS = ("auto", "tree", "flat")


def resolve_layout(layout: str) -> str:
    """The concrete layout ("tree" or "flat") that `layout` means on the default backend."""
    return resolve_auto(layout, STATE_LAYOUTS, on_cpu="flat", elsewhere="tree", what="state layout")


@flax.struct.dataclass
class TrainState:
    """All arrays a run needs to continue exactly (no functions: it is saved as is).

    `ema_params` / `ema_batch_stats` are the exponential moving averages that evaluation uses
    (the paper's EMA of weights *and* BatchNorm statistics): trees like `params` and
    `batch_stats`, or 1-D vectors of their raveled values in the "flat" layout (read them
    through `averaged_variables`).
    """

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    ema_params: Any
    ema_batch_stats: Any

    @property
    def layout(self) -> str:
        """ "flat" when the EMAs are raveled vectors, else "tree" (known from the structure)."""
        return "flat" if _is_vector(self.ema_params) else "tree"


def create_train_state(
    rng: jax.Array,
    model: nn.Module,
    tx: optax.GradientTransformation,
    image_shape: tuple[int, ...],
    layout: str = "tree",
) -> TrainState:
    """Initialises a state for images of `image_shape` ([H, W, C]); jit it with out_shardings.

    `tx` must match the layout (`optim.make_optimizer(..., layout=...)`).
    """
    layout = resolve_layout(layout)
    variables = model.init(rng, jnp.zeros((1, *image_shape), jnp.float32), train=False)
    params, batch_stats = variables["params"], variables.get("batch_stats", {})
    averaged = (params, batch_stats) if layout == "tree" else (ravel(params), ravel(batch_stats))
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=batch_stats,
        opt_state=tx.init(params),
        ema_params=averaged[0],
        ema_batch_stats=averaged[1],
    )


def ravel(tree: Any) -> jax.Array:
    """All leaves of `tree` concatenated into one 1-D vector (`ravel_pytree` order)."""
    return ravel_pytree(tree)[0]


def _is_vector(x: Any) -> bool:
    """An array (concrete, traced or abstract), as opposed to a dict of them."""
    return hasattr(x, "shape")


def averaged_variables(state: TrainState) -> dict[str, Any]:
    """{"params", "batch_stats"} of the EMA weights, as trees, in either layout."""
    if state.layout == "tree":
        return {"params": state.ema_params, "batch_stats": state.ema_batch_stats}
    return {
        "params": ravel_pytree(state.params)[1](state.ema_params),
        "batch_stats": ravel_pytree(state.batch_stats)[1](state.ema_batch_stats),
    }


def ema_decay(step: jax.Array, decay: float, warmup: bool) -> jax.Array:
    """tf.train.ExponentialMovingAverage's decay: min(decay, (1 + t) / (10 + t)) with warmup."""
    decay = jnp.asarray(decay, jnp.float32)
    if not warmup:
        return decay
    t = jnp.asarray(step, jnp.float32)
    return jnp.minimum(decay, (1.0 + t) / (10.0 + t))


def ema_update(average: Any, value: Any, decay: jax.Array) -> Any:
    """average <- decay * average + (1 - decay) * value, leaf by leaf (`value` is raveled first
    when `average` is a flat vector and `value` a tree)."""
    if _is_vector(average) and not _is_vector(value):
        value = ravel(value)
    return jax.tree.map(lambda a, v: decay * a + (1.0 - decay) * v, average, value)
