"""Model cost: parameter counts and FLOPs per image, without allocating or compiling the model.

FLOPs follow the paper's convention: 2 x multiply-adds of every convolution and dense layer,
padding taps included (a 3x3 conv costs 9 x C_in MACs per output element even at the border).
XLA's cost analysis is reported beside it as a cross-check; it skips taps that fall on padding and
so reads a few percent lower.
"""

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.extend import core as jax_core

from rsjax.models.resnet_rs import abstract_variables


def count_params(model: nn.Module, channels: int = 3, variables: Any = None) -> int:
    """Trainable parameters (the "params" collection; BatchNorm statistics excluded)."""
    variables = variables or abstract_variables(model, channels)
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(variables["params"]))


def flops_per_image(
    model: nn.Module, resolution: int, channels: int = 3, variables: Any = None
) -> int:
    """Forward FLOPs (2 x MACs of convs and dense layers, padding taps included) for one image.

    Counted on the model's XLA-convolution form (`conv_impl="xla"`: the same shapes, and a
    depthwise convolution stays one operation rather than k * k elementwise products).
    `variables` (e.g. from `abstract_variables`) saves re-tracing the init when given.
    """
    if getattr(model, "conv_impl", "xla") != "xla":
        model = model.clone(conv_impl="xla")
    variables = variables or abstract_variables(model, channels)
    return forward_flops(model, variables, (1, resolution, resolution, channels))


def flops_per_clip(
    model: nn.Module, frames: int, resolution: int, channels: int = 3, variables: Any = None
) -> int:
    """Forward FLOPs (as `flops_per_image`) of a video model for one clip [frames, S, S, C];
    `variables` (e.g. from `abstract_variables`) saves re-tracing the init when given."""
    variables = variables or abstract_variables(model, channels)
    return forward_flops(model, variables, (1, frames, resolution, resolution, channels))


def forward_flops(model: nn.Module, variables: Any, input_shape: tuple[int, ...]) -> int:
    """2 x the multiply-adds of `model`'s eval forward pass on one input of `input_shape`."""
    inputs = jax.ShapeDtypeStruct(input_shape, jnp.float32)
    closed = jax.make_jaxpr(lambda v, x: model.apply(v, x, train=False))(variables, inputs)
    return 2 * count_macs(closed.jaxpr)


def xla_flops_per_image(
    model: nn.Module, resolution: int, channels: int = 3, variables: Any = None
) -> float:
    """FLOPs of the forward pass for one image by XLA's cost analysis (lowered, not compiled).

    Convolutions are lowered as XLA convolutions (`conv_impl="xla"`), whose count skips taps on
    padding; the matmul form would count them, like `flops_per_image`.
    """
    if getattr(model, "conv_impl", "xla") != "xla":
        model = model.clone(conv_impl="xla")
    variables = variables or abstract_variables(model, channels)
    images = jax.ShapeDtypeStruct((1, resolution, resolution, channels), jnp.float32)
    lowered = jax.jit(lambda v, x: model.apply(v, x, train=False)).lower(variables, images)
    return float(lowered.cost_analysis()["flops"])


def count_macs(jaxpr: jax_core.Jaxpr) -> int:
    """Multiply-adds of every conv_general_dilated and dot_general in `jaxpr`, sub-jaxprs included.

    A scan body counts `length` times; of a cond's branches the most expensive counts.
    """
    total = 0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "conv_general_dilated":
            total += _conv_macs(eqn)
        elif name == "dot_general":
            total += _dot_macs(eqn)
        elif name == "cond":
            total += max(count_macs(branch.jaxpr) for branch in eqn.params["branches"])
        else:
            repeat = eqn.params.get("length", 1) if name == "scan" else 1
            for sub in _sub_jaxprs(eqn.params):
                total += repeat * count_macs(sub)
    return total


def _sub_jaxprs(params: dict[str, Any]) -> list[jax_core.Jaxpr]:
    found = []
    for value in params.values():
        if isinstance(value, jax_core.ClosedJaxpr):
            found.append(value.jaxpr)
        elif isinstance(value, jax_core.Jaxpr):
            found.append(value)
    return found


def _conv_macs(eqn: Any) -> int:
    out_shape = eqn.outvars[0].aval.shape
    kernel_shape = eqn.invars[1].aval.shape
    out_feature_dim = eqn.params["dimension_numbers"].rhs_spec[0]
    # Each output element sums over kernel spatial taps x input features of its group.
    return math.prod(out_shape) * math.prod(kernel_shape) // kernel_shape[out_feature_dim]


def _dot_macs(eqn: Any) -> int:
    (lhs_contract, _), _ = eqn.params["dimension_numbers"]
    lhs_shape = eqn.invars[0].aval.shape
    return math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs_shape[d] for d in lhs_contract)
