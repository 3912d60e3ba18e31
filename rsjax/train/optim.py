"""The paper's optimiser: momentum SGD, linear warmup + cosine decay, coupled L2 weight decay."""

import re
from typing import Any

import flax
import ml_collections
import optax

# BatchNorm modules are named bn1.., shortcut_bn: their scale and bias are never decayed.
_BATCH_NORM_MODULE = re.compile(r"^(bn\d*|.*_bn)$")


def peak_learning_rate(base_lr: float, global_batch: int) -> float:
    """base_lr x B / 256 (Table 8: 0.1 x B / 256)."""
    return base_lr * global_batch / 256


def learning_rate_schedule(peak_lr: float, total_steps: int, warmup_steps: int) -> optax.Schedule:
    """Linear warmup from 0 to `peak_lr` over `warmup_steps`, then cosine decay to 0 at the end."""
    warmup_steps = min(warmup_steps, max(total_steps - 1, 0))
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=peak_lr,
        warmup_steps=warmup_steps,
        decay_steps=max(total_steps, 1),
        end_value=0.0,
    )


def weight_decay_mask(params: Any) -> Any:
    """True for every parameter except BatchNorm scale/bias (tensorflow/tpu decays conv, SE and
    classifier kernels and biases)."""
    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(params))
    mask = {path: not any(_BATCH_NORM_MODULE.match(p) for p in path[:-1]) for path in flat}
    return flax.traverse_util.unflatten_dict(mask)


def make_optimizer(
    optim: ml_collections.ConfigDict, schedule: optax.Schedule
) -> optax.GradientTransformation:
    """L2 gradient term `weight_decay * w` (coupled, before momentum) then SGD with momentum."""
    return optax.chain(
        optax.add_decayed_weights(optim.weight_decay, mask=weight_decay_mask),
        optax.sgd(schedule, momentum=optim.momentum, nesterov=optim.nesterov),
    )
