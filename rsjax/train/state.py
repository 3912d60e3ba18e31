"""The train state: parameters, BatchNorm statistics, optimiser state and their EMAs."""

from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
    """All arrays a run needs to continue exactly (no functions: it is saved as is).

    `ema_params` / `ema_batch_stats` are the exponential moving averages that evaluation uses
    (the paper's EMA of weights *and* BatchNorm statistics).
    """

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    ema_params: Any
    ema_batch_stats: Any


def create_train_state(
    rng: jax.Array, model: nn.Module, tx: optax.GradientTransformation, image_shape: tuple[int, ...]
) -> TrainState:
    """Initialises a state for images of `image_shape` ([H, W, C]); jit it with out_shardings."""
    variables = model.init(rng, jnp.zeros((1, *image_shape), jnp.float32), train=False)
    params, batch_stats = variables["params"], variables.get("batch_stats", {})
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=batch_stats,
        opt_state=tx.init(params),
        ema_params=params,
        ema_batch_stats=batch_stats,
    )


def ema_decay(step: jax.Array, decay: float, warmup: bool) -> jax.Array:
    """tf.train.ExponentialMovingAverage's decay: min(decay, (1 + t) / (10 + t)) with warmup."""
    decay = jnp.asarray(decay, jnp.float32)
    if not warmup:
        return decay
    t = jnp.asarray(step, jnp.float32)
    return jnp.minimum(decay, (1.0 + t) / (10.0 + t))


def ema_update(average: Any, value: Any, decay: jax.Array) -> Any:
    """average <- decay * average + (1 - decay) * value, leaf by leaf."""
    return jax.tree.map(lambda a, v: decay * a + (1.0 - decay) * v, average, value)
