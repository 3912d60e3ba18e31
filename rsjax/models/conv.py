"""Square, bias-free 2-D convolutions, computed the way the backend runs fastest.

Every implementation takes the same arguments and gives the same values (up to fp32 rounding):

  x: [B, H, W, C_in], kernel: [k, k, C_in, C_out], stride s, symmetric padding (k - 1) // 2
  -> [B, ceil(H / s), ceil(W / s), C_out] for odd k.

Implementations:
  "xla":    `lax.conv_general_dilated` (what TPU and GPU are built for).
  "matmul": 1x1 as a channel contraction; k x k as im2col (k^2 shifted, strided slices
            concatenated on channels) followed by one contraction (`channel_matmul`). The weight
            gradient is then patches^T @ dy from the saved patches, and autodiff computes the
            input gradient as col2im (the transposed slices summed into the padded input).
            XLA:CPU's own weight-gradient convolutions are several times slower than these
            matmuls (issue 6 measurements). When no gradient is taken (inference, evaluation),
            k x k layers with k*k*C_in <= XLA_FORWARD_MAX_DEPTH take their value from XLA's
            convolution instead, which runs those forwards 1.3-2.9x faster than im2col + matmul
            (`benchmarks/conv_layers.py --mode infer`, RS-50, 160 px, batch 32); their
            gradients still come from the matmul form.
  "auto":   "matmul" on CPU, "xla" on every other backend.
"""

import functools

import jax
import jax.numpy as jnp

from rsjax.backend import resolve_auto

CONCRETE_CONV_IMPLS = ("xla", "matmul")
CONV_IMPLS = ("auto", *CONCRETE_CONV_IMPLS)

# Deepest patch (k * k * C_in) whose forward-only value "matmul" takes from XLA's convolution.
# Measured forward times on the 2-core CPU (RS-50, 160 px, batch 32; XLA vs im2col + matmul):
# every 3x3 layer up to k*k*C_in = 2304 (c4's 256 channels) was faster with XLA (stem 286 vs
# 406 ms in all, c2 49 vs 101 ms, c4 26 vs 33 ms); c5's 4608-deep patches were slower (51 vs 31
# ms at stride 1, 34 vs 28 ms at stride 2). 1x1 layers are faster as contractions at every size.
XLA_FORWARD_MAX_DEPTH = 2304


def resolve_impl(impl: str) -> str:
    """The concrete implementation ("xla" or "matmul") that `impl` means on the default backend."""
    return resolve_auto(impl, CONV_IMPLS, on_cpu="matmul", elsewhere="xla", what="conv impl")


def conv2d_xla(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
    """The plain XLA convolution (NHWC, HWIO), symmetric padding (k - 1) // 2."""
    pad = (kernel.shape[0] - 1) // 2
    return jax.lax.conv_general_dilated(
        x,
        kernel,
        window_strides=(stride, stride),
        padding=((pad, pad), (pad, pad)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )


def im2col(x: jax.Array, kernel_size: int, stride: int) -> jax.Array:
    """Patches of a k x k, stride-s convolution: [B, H, W, C] -> [B, H', W', k * k * C].

    The channel axis is ordered (row, column, channel), matching kernel.reshape(k * k * C, -1).
    """
    pad = (kernel_size - 1) // 2
    height, width = x.shape[1:3]
    out_h = (height + 2 * pad - kernel_size) // stride + 1
    out_w = (width + 2 * pad - kernel_size) // stride + 1
    padded = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    span_h, span_w = stride * (out_h - 1) + 1, stride * (out_w - 1) + 1
    taps = [
        padded[:, i : i + span_h : stride, j : j + span_w : stride]
        for i in range(kernel_size)
        for j in range(kernel_size)
    ]
    return taps[0] if len(taps) == 1 else jnp.concatenate(taps, axis=-1)


@jax.custom_vjp
def channel_matmul(x: jax.Array, weights: jax.Array) -> jax.Array:
    """x [B, H, W, K] @ weights [K, D] -> [B, H, W, D], with a backward pass laid out for XLA:CPU.

    Autodiff of the einsum is correct but slow on CPU: XLA transposes dy to [D, B*H*W] for the
    weight gradient and fuses dy's whole producer chain (BatchNorm backward, ReLU mask, residual
    sum) into that strided copy, once per consumer. The custom backward materialises dy once
    (`optimization_barrier`) and computes the weight gradient as (dy^T @ x)^T, which XLA:CPU
    runs without a separate transpose. RS-50 train step, 160 px, batch 16, 2-core CPU: 2.28 s
    against 2.96 s (medians of 8). The values are those of autodiff up to fp32 rounding.
    """
    return jnp.einsum("bhwk,kd->bhwd", x, weights)


def _channel_matmul_fwd(
    x: jax.Array, weights: jax.Array
) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    return channel_matmul(x, weights), (x, weights)


def _channel_matmul_bwd(
    residuals: tuple[jax.Array, jax.Array], dy: jax.Array
) -> tuple[jax.Array, jax.Array]:
    x, weights = residuals
    dy = jax.lax.optimization_barrier(dy)
    dx = jnp.einsum("bhwd,kd->bhwk", dy, weights)
    dy_t = jnp.transpose(dy.reshape(-1, dy.shape[-1]))  # [D, B*H*W]
    dweights = jnp.dot(dy_t, x.reshape(-1, x.shape[-1])).T  # ([D, N] @ [N, K])^T = [K, D]
    return dx, dweights


channel_matmul.defvjp(_channel_matmul_fwd, _channel_matmul_bwd)


def conv2d_im2col(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
    """The same convolution as `conv2d_xla`, values and gradients from channel contractions:
    1x1 on the strided input, k x k on its im2col patches."""
    kernel_size, _, in_features, out_features = kernel.shape
    if kernel_size == 1:
        return channel_matmul(x[:, ::stride, ::stride], kernel[0, 0])
    patches = im2col(x, kernel_size, stride)
    weights = kernel.reshape(kernel_size * kernel_size * in_features, out_features)
    return channel_matmul(patches, weights)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv2d_xla_forward(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
    """Value from XLA's convolution; under differentiation, value and gradients of
    `conv2d_im2col` (the patches are built only when a gradient is taken)."""
    return conv2d_xla(x, kernel, stride)


def _xla_forward_fwd(x: jax.Array, kernel: jax.Array, stride: int):
    return jax.vjp(functools.partial(conv2d_im2col, stride=stride), x, kernel)


def _xla_forward_bwd(stride: int, im2col_vjp, dy: jax.Array) -> tuple[jax.Array, jax.Array]:
    del stride  # part of im2col_vjp
    return im2col_vjp(dy)


conv2d_xla_forward.defvjp(_xla_forward_fwd, _xla_forward_bwd)


def conv2d_matmul(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
    """The CPU implementation (see the module doc): `conv2d_im2col`, except that k x k layers
    with patches up to XLA_FORWARD_MAX_DEPTH deep take their forward-only value from XLA."""
    kernel_size, _, in_features, _ = kernel.shape
    if kernel_size > 1 and kernel_size * kernel_size * in_features <= XLA_FORWARD_MAX_DEPTH:
        return conv2d_xla_forward(x, kernel, stride)
    return conv2d_im2col(x, kernel, stride)


def conv2d(x: jax.Array, kernel: jax.Array, stride: int = 1, impl: str = "auto") -> jax.Array:
    """x [B, H, W, C_in] * kernel [k, k, C_in, C_out] (odd k) -> [B, H', W', C_out]."""
    if kernel.shape[0] != kernel.shape[1] or kernel.shape[0] % 2 == 0:
        raise ValueError(f"kernel must be square with an odd size, got shape {kernel.shape}.")
    if x.shape[-1] != kernel.shape[2]:
        raise ValueError(f"input has {x.shape[-1]} channels, kernel expects {kernel.shape[2]}.")
    if resolve_impl(impl) == "matmul":
        return conv2d_matmul(x, kernel, stride)
    return conv2d_xla(x, kernel, stride)
