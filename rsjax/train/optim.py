"""The optimisers and schedules: the paper's momentum SGD with linear warmup + cosine decay, and
EfficientNet's TF1 RMSProp with warmup + exponential staircase decay; coupled L2 weight decay."""

import re
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from rsjax.train.state import resolve_layout

# BatchNorm modules are named bn1.., shortcut_bn: their scale and bias are never decayed.
_BATCH_NORM_MODULE = re.compile(r"^(bn\d*|.*_bn)$")


def peak_learning_rate(base_lr: float, global_batch: int) -> float:
    """base_lr x B / 256 (Table 8: 0.1 x B / 256)."""
    return base_lr * global_batch / 256


@flax.struct.dataclass
class WarmupCosineSchedule:
    """Linear warmup from 0 to `peak_lr` over `warmup_steps`, then cosine decay to 0 at
    `total_steps` (optax's warmup_cosine_decay_schedule with init and end 0).

    A pytree of three scalars: passed to a jitted step as an argument, it is traced, so runs
    that differ only in their length or peak rate share one compiled step.
    """

    peak_lr: Any
    warmup_steps: Any
    total_steps: Any

    def __call__(self, step: Any) -> jax.Array:
        step, warmup = _as_float(step), _as_float(self.warmup_steps)
        decay_steps = jnp.maximum(_as_float(self.total_steps) - warmup, 1.0)
        progress = jnp.clip(step - warmup, 0.0, decay_steps) / decay_steps
        cosine = 0.5 * (1.0 + jnp.cos(jnp.pi * progress))
        return _after_warmup(self.peak_lr, step, warmup, cosine)


def _as_float(value: Any) -> jax.Array:
    return jnp.asarray(value, jnp.float32)


def _after_warmup(peak_lr: Any, step: jax.Array, warmup: jax.Array, factor: jax.Array):
    """peak_lr x (step / warmup during the warmup, `factor` after it)."""
    ramp = step / jnp.maximum(warmup, 1.0)
    return _as_float(peak_lr) * jnp.where(step < warmup, ramp, factor)


@flax.struct.dataclass
class WarmupExponentialSchedule:
    """Linear warmup from 0 to `peak_lr` over `warmup_steps`, then
    peak_lr x decay_rate ** floor(step / decay_every_steps), the staircase counted from step 0
    (tensorflow/tpu EfficientNet's `build_learning_rate`: 0.97 every 2.4 epochs).

    A pytree of four traced scalars, like `WarmupCosineSchedule`.
    """

    peak_lr: Any
    warmup_steps: Any
    decay_every_steps: Any
    decay_rate: Any

    def __call__(self, step: Any) -> jax.Array:
        step, warmup = _as_float(step), _as_float(self.warmup_steps)
        stairs = jnp.floor(step / jnp.maximum(_as_float(self.decay_every_steps), 1.0))
        decayed = _as_float(self.decay_rate) ** stairs
        return _after_warmup(self.peak_lr, step, warmup, decayed)


Schedule = WarmupCosineSchedule | WarmupExponentialSchedule


def make_schedule(
    optim: ml_collections.ConfigDict,
    peak_lr: float,
    total_steps: int,
    warmup_steps: int,
    decay_every_steps: float,
) -> Schedule:
    """The schedule `optim.schedule` names ("cosine" or "exponential") for a run of
    `total_steps` with `warmup_steps` of warmup (at most total - 1)."""
    if optim.schedule == "cosine":
        return learning_rate_schedule(peak_lr, total_steps, warmup_steps)
    return WarmupExponentialSchedule(
        peak_lr=jnp.float32(peak_lr),
        warmup_steps=jnp.int32(min(warmup_steps, max(total_steps - 1, 0))),
        decay_every_steps=jnp.float32(decay_every_steps),
        decay_rate=jnp.float32(optim.decay_rate),
    )


def learning_rate_schedule(
    peak_lr: float, total_steps: int, warmup_steps: int
) -> WarmupCosineSchedule:
    """Linear warmup from 0 to `peak_lr` over `warmup_steps` (at most total - 1), then cosine
    decay to 0 at `total_steps`."""
    warmup_steps = min(warmup_steps, max(total_steps - 1, 0))
    return WarmupCosineSchedule(
        peak_lr=jnp.float32(peak_lr),
        warmup_steps=jnp.int32(warmup_steps),
        total_steps=jnp.int32(max(total_steps, 1)),
    )


def weight_decay_mask(params: Any) -> Any:
    """True for every parameter except BatchNorm scale/bias (tensorflow/tpu decays conv, SE and
    classifier kernels and biases)."""
    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(params))
    mask = {path: not any(_BATCH_NORM_MODULE.match(p) for p in path[:-1]) for path in flat}
    return flax.traverse_util.unflatten_dict(mask)


def make_optimizer(
    optim: ml_collections.ConfigDict, schedule: optax.Schedule, layout: str = "tree"
) -> optax.GradientTransformation:
    """L2 gradient term `weight_decay * w` (coupled, before the optimiser) then `optim.name`:
    "sgd" with (Nesterov) momentum, or "rmsprop" as TF1 implements it (the squared-gradient
    average starts at 1, epsilon inside the square root, momentum on the scaled update).

    With layout "flat" (see `rsjax.train.state`) the optimiser's traces are raveled vectors
    (`optax.flatten`); the update is the same.
    """
    if optim.name == "rmsprop":
        base = optax.rmsprop(
            schedule,
            decay=optim.rmsprop_decay,
            eps=optim.rmsprop_epsilon,
            initial_scale=1.0,
            eps_in_sqrt=True,
            momentum=optim.momentum,
        )
    else:
        base = optax.sgd(schedule, momentum=optim.momentum, nesterov=optim.nesterov)
    return optax.chain(
        optax.add_decayed_weights(optim.weight_decay, mask=weight_decay_mask),
        optax.flatten(base) if resolve_layout(layout) == "flat" else base,
    )
