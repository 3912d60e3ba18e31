"""Square, bias-free 2-D convolutions, computed the way the backend runs fastest.

Every implementation takes the same arguments and gives the same values (up to fp32 rounding):

  x: [B, H, W, C_in], kernel: [k, k, C_in, C_out], stride s, padding "symmetric" ((k - 1) // 2
  on each side: ResNet-RS, timm) or "same" (TF 'SAME': k - 1 in all at stride 1; at stride 2 on
  an even size one less, taken from the start: EfficientNet)
  -> [B, ceil(H / s), ceil(W / s), C_out] for odd k.

Depthwise convolutions (`depthwise_conv2d`, kernel [k, k, 1, C]) have the same implementations:
"xla" is a grouped convolution, "matmul" the sum of the k^2 shifted, strided slices of the input
times their per-channel weights (elementwise work that XLA:CPU fuses; its grouped convolution's
gradients are 10-25x slower on B0's layers, `benchmarks/conv_layers.py`).

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


PADDINGS = ("symmetric", "same")
Pads = tuple[tuple[int, int], tuple[int, int]]


def same_pads(size: int, kernel_size: int, stride: int) -> tuple[int, int]:
    """TF 'SAME' padding (before, after) of one spatial axis: the output has ceil(size / stride)
    positions; an odd total puts the extra row after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel_size - size, 0)
    return total // 2, total - total // 2


def spatial_pads(x_shape: tuple[int, ...], kernel_size: int, stride: int, padding: str) -> Pads:
    """((top, bottom), (left, right)) of a k x k, stride-s convolution of [B, H, W, C] inputs."""
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}.")
    if padding == "same":
        return tuple(same_pads(n, kernel_size, stride) for n in x_shape[1:3])
    pad = (kernel_size - 1) // 2
    return (pad, pad), (pad, pad)


def resolve_impl(impl: str) -> str:
    """The concrete implementation ("xla" or "matmul") that `impl` means on the default backend."""
    return resolve_auto(impl, CONV_IMPLS, on_cpu="matmul", elsewhere="xla", what="conv impl")


def conv2d_xla(
    x: jax.Array, kernel: jax.Array, stride: int, padding: str = "symmetric", groups: int = 1
) -> jax.Array:
    """The plain XLA convolution (NHWC, HWIO); `groups` = C for a depthwise kernel [k, k, 1, C]."""
    return jax.lax.conv_general_dilated(
        x,
        kernel,
        window_strides=(stride, stride),
        padding=spatial_pads(x.shape, kernel.shape[0], stride, padding),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=groups,
    )


def taps(x: jax.Array, kernel_size: int, stride: int, padding: str = "symmetric") -> list:
    """The k * k shifted, strided slices [B, H', W', C] of a k x k convolution's padded input, in
    (row, column) order."""
    (top, bottom), (left, right) = spatial_pads(x.shape, kernel_size, stride, padding)
    height, width = x.shape[1:3]
    out_h = (height + top + bottom - kernel_size) // stride + 1
    out_w = (width + left + right - kernel_size) // stride + 1
    padded = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    span_h, span_w = stride * (out_h - 1) + 1, stride * (out_w - 1) + 1
    return [
        padded[:, i : i + span_h : stride, j : j + span_w : stride]
        for i in range(kernel_size)
        for j in range(kernel_size)
    ]


def im2col(x: jax.Array, kernel_size: int, stride: int, padding: str = "symmetric") -> jax.Array:
    """Patches of a k x k, stride-s convolution: [B, H, W, C] -> [B, H', W', k * k * C].

    The channel axis is ordered (row, column, channel), matching kernel.reshape(k * k * C, -1).
    """
    slices = taps(x, kernel_size, stride, padding)
    return slices[0] if len(slices) == 1 else jnp.concatenate(slices, axis=-1)


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


def conv2d_im2col(
    x: jax.Array, kernel: jax.Array, stride: int, padding: str = "symmetric"
) -> jax.Array:
    """The same convolution as `conv2d_xla`, values and gradients from channel contractions:
    1x1 on the strided input, k x k on its im2col patches."""
    kernel_size, _, in_features, out_features = kernel.shape
    if kernel_size == 1:
        return channel_matmul(x[:, ::stride, ::stride], kernel[0, 0])
    patches = im2col(x, kernel_size, stride, padding)
    weights = kernel.reshape(kernel_size * kernel_size * in_features, out_features)
    return channel_matmul(patches, weights)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv2d_xla_forward(x: jax.Array, kernel: jax.Array, stride: int, padding: str) -> jax.Array:
    """Value from XLA's convolution; under differentiation, value and gradients of
    `conv2d_im2col` (the patches are built only when a gradient is taken)."""
    return conv2d_xla(x, kernel, stride, padding)


def _xla_forward_fwd(x: jax.Array, kernel: jax.Array, stride: int, padding: str):
    return jax.vjp(functools.partial(conv2d_im2col, stride=stride, padding=padding), x, kernel)


def _xla_forward_bwd(
    stride: int, padding: str, im2col_vjp, dy: jax.Array
) -> tuple[jax.Array, jax.Array]:
    del stride, padding  # part of im2col_vjp
    return im2col_vjp(dy)


conv2d_xla_forward.defvjp(_xla_forward_fwd, _xla_forward_bwd)


def conv2d_matmul(
    x: jax.Array, kernel: jax.Array, stride: int, padding: str = "symmetric"
) -> jax.Array:
    """The CPU implementation (see the module doc): `conv2d_im2col`, except that k x k layers
    with patches up to XLA_FORWARD_MAX_DEPTH deep take their forward-only value from XLA."""
    kernel_size, _, in_features, _ = kernel.shape
    if kernel_size > 1 and kernel_size * kernel_size * in_features <= XLA_FORWARD_MAX_DEPTH:
        return conv2d_xla_forward(x, kernel, stride, padding)
    return conv2d_im2col(x, kernel, stride, padding)


def _check_kernel(kernel: jax.Array) -> None:
    if kernel.shape[0] != kernel.shape[1] or kernel.shape[0] % 2 == 0:
        raise ValueError(f"kernel must be square with an odd size, got shape {kernel.shape}.")


def conv2d(
    x: jax.Array,
    kernel: jax.Array,
    stride: int = 1,
    impl: str = "auto",
    padding: str = "symmetric",
) -> jax.Array:
    """x [B, H, W, C_in] * kernel [k, k, C_in, C_out] (odd k) -> [B, H', W', C_out]."""
    _check_kernel(kernel)
    if x.shape[-1] != kernel.shape[2]:
        raise ValueError(f"input has {x.shape[-1]} channels, kernel expects {kernel.shape[2]}.")
    if resolve_impl(impl) == "matmul":
        return conv2d_matmul(x, kernel, stride, padding)
    return conv2d_xla(x, kernel, stride, padding)


def depthwise_conv2d_taps(
    x: jax.Array, kernel: jax.Array, stride: int, padding: str = "symmetric"
) -> jax.Array:
    """The depthwise convolution as the sum over the k x k taps of slice x kernel[i, j, 0]."""
    kernel_size = kernel.shape[0]
    weights = kernel.reshape(kernel_size * kernel_size, kernel.shape[-1])
    slices = taps(x, kernel_size, stride, padding)
    out = slices[0] * weights[0]
    for slice_, weight in zip(slices[1:], weights[1:], strict=True):
        out = out + slice_ * weight
    return out


def depthwise_conv2d(
    x: jax.Array,
    kernel: jax.Array,
    stride: int = 1,
    impl: str = "auto",
    padding: str = "symmetric",
) -> jax.Array:
    """x [B, H, W, C] * depthwise kernel [k, k, 1, C] (odd k) -> [B, H', W', C]: channel c is
    convolved with kernel[..., 0, c] alone."""
    _check_kernel(kernel)
    if kernel.shape[2] != 1 or kernel.shape[3] != x.shape[-1]:
        raise ValueError(
            f"a depthwise kernel for {x.shape[-1]} channels has shape [k, k, 1, "
            f"{x.shape[-1]}], got {kernel.shape}."
        )
    if resolve_impl(impl) == "matmul":
        return depthwise_conv2d_taps(x, kernel, stride, padding)
    return conv2d_xla(x, kernel, stride, padding, groups=x.shape[-1])
