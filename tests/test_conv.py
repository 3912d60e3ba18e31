"""Every convolution fast path against the plain XLA convolution: values and gradients."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rsjax.models import conv as conv_lib
from rsjax.models.conv import CONV_IMPLS, conv2d, conv2d_im2col, conv2d_matmul, conv2d_xla

MATMUL_FORMS = [conv2d_im2col, conv2d_matmul]  # pure contractions; XLA forward + contractions

# fp32: both paths sum the same k*k*C_in products in different orders.
RTOL = 1e-5
ATOL = 1e-5

SHAPES = [
    # (batch, height, width, c_in, c_out, kernel, stride)
    (2, 8, 8, 4, 6, 1, 1),
    (2, 9, 7, 4, 6, 1, 2),
    (2, 8, 8, 5, 3, 3, 1),
    (2, 8, 8, 5, 3, 3, 2),
    (3, 9, 11, 3, 8, 3, 2),  # odd sizes: ceil(H / 2) outputs
    (1, 7, 7, 2, 4, 5, 1),
    (1, 10, 10, 2, 4, 5, 2),
]


def _inputs(shape):
    batch, height, width, c_in, c_out, k, _ = shape
    kx, kk = jax.random.split(jax.random.key(sum(shape)))
    x = jax.random.normal(kx, (batch, height, width, c_in), jnp.float32)
    kernel = jax.random.normal(kk, (k, k, c_in, c_out), jnp.float32) / np.sqrt(k * k * c_in)
    return x, kernel


@pytest.mark.parametrize("form", MATMUL_FORMS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_matmul_matches_xla_values(shape, form):
    x, kernel = _inputs(shape)
    stride = shape[-1]
    want = conv2d_xla(x, kernel, stride)
    got = form(x, kernel, stride)
    assert (
        got.shape
        == want.shape
        == (x.shape[0], -(-x.shape[1] // stride), -(-x.shape[2] // stride), kernel.shape[-1])
    )
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("form", MATMUL_FORMS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_matmul_matches_xla_gradients(shape, form):
    x, kernel = _inputs(shape)
    stride = shape[-1]
    cotangent = jax.random.normal(jax.random.key(1), conv2d_xla(x, kernel, stride).shape)

    def grads(fn):
        return jax.grad(lambda x, k: jnp.sum(fn(x, k, stride) * cotangent), argnums=(0, 1))(
            x, kernel
        )

    (dx_want, dk_want), (dx_got, dk_got) = grads(conv2d_xla), grads(form)
    np.testing.assert_allclose(dx_got, dx_want, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(dk_got, dk_want, rtol=RTOL, atol=1e-4)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_channel_matmul_backward_matches_autodiff(dtype):
    # The custom backward (materialised dy, weight gradient as (dy^T x)^T) against autodiff of
    # the same contraction: same values, same dtypes.
    kx, kw, kd = jax.random.split(jax.random.key(7), 3)
    x = jax.random.normal(kx, (2, 5, 6, 12), jnp.float32).astype(dtype)
    weights = jax.random.normal(kw, (12, 7), jnp.float32).astype(dtype)
    dy = jax.random.normal(kd, (2, 5, 6, 7), jnp.float32).astype(dtype)

    def plain(x, w):
        return jnp.einsum("bhwk,kd->bhwd", x, w)

    got_y, got_vjp = jax.vjp(conv_lib.channel_matmul, x, weights)
    want_y, want_vjp = jax.vjp(plain, x, weights)
    tol = 1e-5 if dtype == jnp.float32 else 2e-2
    np.testing.assert_allclose(np.float32(got_y), np.float32(want_y), rtol=tol, atol=tol)
    for got, want in zip(got_vjp(dy), want_vjp(dy), strict=True):
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_allclose(np.float32(got), np.float32(want), rtol=tol, atol=tol * 10)


@pytest.mark.parametrize("stride", [1, 2])
def test_xla_forward_takes_values_from_xla_and_gradients_from_im2col(stride):
    x, kernel = _inputs((2, 9, 9, 5, 4, 3, stride))

    def loss(fn):
        return lambda a, b: jnp.sum(jnp.sin(fn(a, b, stride)))

    np.testing.assert_array_equal(
        conv_lib.conv2d_xla_forward(x, kernel, stride, "symmetric"), conv2d_xla(x, kernel, stride)
    )
    # Under differentiation the value and gradients are conv2d_im2col's (to fp32 rounding), also
    # under jit and jax.checkpoint (the remat policies wrap whole blocks).
    for wrap in (lambda f: f, jax.jit, jax.checkpoint):
        forward = functools.partial(conv_lib.conv2d_xla_forward, padding="symmetric")
        got = jax.value_and_grad(wrap(loss(forward)), argnums=(0, 1))(x, kernel)
        want = jax.value_and_grad(loss(conv2d_im2col), argnums=(0, 1))(x, kernel)
        for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
            np.testing.assert_allclose(g, w, rtol=RTOL, atol=ATOL)  # jit may reorder sums


@pytest.mark.parametrize(
    ("kernel_size", "in_features", "xla_forward"),
    [
        (3, conv_lib.XLA_FORWARD_MAX_DEPTH // 9, True),
        (3, conv_lib.XLA_FORWARD_MAX_DEPTH // 9 + 1, False),
        (1, 8, False),
    ],
)
def test_matmul_forward_choice_by_patch_depth(kernel_size, in_features, xla_forward):
    x = jax.random.normal(jax.random.key(2), (1, 5, 5, in_features))
    kernel = jax.random.normal(jax.random.key(3), (kernel_size, kernel_size, in_features, 2))
    got = conv2d_matmul(x, kernel, 1)
    want = (conv2d_xla if xla_forward else conv2d_im2col)(x, kernel, 1)
    np.testing.assert_array_equal(got, want)  # the same computation: bit-identical


def test_matmul_is_not_trivially_equal():
    """The comparison can fail: a transposed kernel gives different values."""
    x, kernel = _inputs((2, 8, 8, 5, 5, 3, 1))
    wrong = conv2d_im2col(x, jnp.transpose(kernel, (1, 0, 2, 3)), 1)
    assert np.abs(np.asarray(wrong) - np.asarray(conv2d_xla(x, kernel, 1))).max() > 1e-2


def test_bfloat16_matmul_close_to_fp32():
    x, kernel = _inputs((2, 8, 8, 16, 8, 3, 2))
    want = conv2d_xla(x, kernel, 2)
    for form in MATMUL_FORMS:
        got = form(x.astype(jnp.bfloat16), kernel.astype(jnp.bfloat16), 2)
        assert got.dtype == jnp.bfloat16
        np.testing.assert_allclose(np.asarray(got, np.float32), want, rtol=0.05, atol=0.05)


def test_auto_is_matmul_on_cpu():
    assert jax.default_backend() == "cpu"
    assert conv_lib.resolve_impl("auto") == "matmul"
    assert conv_lib.resolve_impl("xla") == "xla"


@pytest.mark.parametrize("impl", CONV_IMPLS)
def test_conv2d_dispatch(impl):
    x, kernel = _inputs((1, 6, 6, 2, 3, 3, 1))
    np.testing.assert_allclose(conv2d(x, kernel, 1, impl), conv2d_xla(x, kernel, 1), atol=ATOL)


@pytest.mark.parametrize(
    ("kernel_shape", "impl", "match"),
    [
        ((3, 3, 2, 4), "cudnn", "impl must be one of"),
        ((2, 2, 2, 4), "auto", "odd size"),
        ((3, 1, 2, 4), "auto", "square"),
        ((3, 3, 5, 4), "auto", "channels"),
    ],
)
def test_conv2d_rejects_bad_arguments(kernel_shape, impl, match):
    with pytest.raises(ValueError, match=match):
        conv2d(jnp.zeros((1, 6, 6, 2)), jnp.zeros(kernel_shape), 1, impl)


def _lax_same(x, kernel, stride, groups=1):
    return jax.lax.conv_general_dilated(
        x, kernel, (stride, stride), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=groups,
    )  # fmt: skip


def test_same_pads_are_tf_same():
    assert conv_lib.same_pads(32, 3, 2) == (0, 1)
    assert conv_lib.same_pads(32, 5, 2) == (1, 2)
    assert conv_lib.same_pads(33, 3, 2) == (1, 1)
    assert conv_lib.same_pads(8, 3, 1) == (1, 1)
    assert conv_lib.same_pads(8, 1, 2) == (0, 0)
    with pytest.raises(ValueError, match="padding must be one of"):
        conv_lib.spatial_pads((1, 8, 8, 1), 3, 1, "valid")


@pytest.mark.parametrize("impl", ["xla", "matmul"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_same_padding_matches_lax_same(shape, impl):
    """padding="same" is TF 'SAME' (lax's "SAME") in every implementation, values and gradients."""
    x, kernel = _inputs(shape)
    stride = shape[-1]

    def loss(fn):
        return lambda a, b: jnp.sum(jnp.sin(fn(a, b)))

    ours = functools.partial(conv2d, stride=stride, impl=impl, padding="same")
    want = functools.partial(_lax_same, stride=stride)
    got_v, got_g = jax.value_and_grad(loss(ours), argnums=(0, 1))(x, kernel)
    want_v, want_g = jax.value_and_grad(loss(want), argnums=(0, 1))(x, kernel)
    np.testing.assert_allclose(got_v, want_v, rtol=RTOL, atol=ATOL)
    for g, w in zip(got_g, want_g, strict=True):
        np.testing.assert_allclose(g, w, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("padding", ["same", "symmetric"])
@pytest.mark.parametrize("impl", ["xla", "matmul"])
@pytest.mark.parametrize("shape", [s for s in SHAPES if s[5] > 1], ids=str)
def test_depthwise_matches_grouped_lax_conv(shape, impl, padding):
    """depthwise_conv2d against lax's grouped convolution (feature_group_count = C), values and
    both gradients, at even and odd sizes, strides 1 and 2, 3x3 and 5x5."""
    batch, height, width, channels, _, k, stride = shape
    kx, kk = jax.random.split(jax.random.key(k * 10 + stride))
    x = jax.random.normal(kx, (batch, height, width, channels))
    kernel = jax.random.normal(kk, (k, k, 1, channels)) / k

    def loss(fn):
        return lambda a, b: jnp.sum(jnp.sin(fn(a, b)))

    def want(a, b):
        pads = conv_lib.spatial_pads(a.shape, k, stride, padding)
        return jax.lax.conv_general_dilated(
            a, b, (stride, stride), pads, dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=channels,
        )  # fmt: skip

    ours = functools.partial(conv_lib.depthwise_conv2d, stride=stride, impl=impl, padding=padding)
    got_v, got_g = jax.value_and_grad(loss(ours), argnums=(0, 1))(x, kernel)
    want_v, want_g = jax.value_and_grad(loss(want), argnums=(0, 1))(x, kernel)
    np.testing.assert_allclose(got_v, want_v, rtol=RTOL, atol=ATOL)
    for g, w in zip(got_g, want_g, strict=True):
        np.testing.assert_allclose(g, w, rtol=RTOL, atol=ATOL)
    if padding == "same":
        np.testing.assert_allclose(
            ours(x, kernel), _lax_same(x, kernel, stride, channels), 1e-5, 1e-5
        )


def test_depthwise_rejects_a_regular_kernel():
    with pytest.raises(ValueError, match=r"depthwise kernel for 4 channels"):
        conv_lib.depthwise_conv2d(jnp.ones((1, 8, 8, 4)), jnp.ones((3, 3, 4, 4)))
