"""ResNet-RS module: structure, parameter counts, purity, RNG use, mixed precision, bad input."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rsjax.models import (
    BLOCK_LAYOUTS,
    PRESETS,
    ResNetRS,
    abstract_variables,
    create_model,
    list_models,
    stage_drop_rates,
)
from rsjax.models.layers import StochasticDepth
from rsjax.profiling import count_params
from tests.conftest import (
    TINY_KWARGS,
    assert_trees_close,
    random_variables,
    train_mode_loss_and_grads,
)

# timm's trainable parameter counts (1000 classes), which round to the paper's Table 7.
TIMM_PARAMS = {
    50: 35_691_912,
    101: 63_618_696,
    152: 86_621_576,
    200: 93_209_992,
    270: 129_861_448,
    350: 163_956_168,
    420: 191_891_656,
}
TABLE7_PARAMS_M = {50: 36, 101: 64, 152: 87, 200: 93, 270: 130, 350: 164, 420: 192}

TINY = TINY_KWARGS


def apply(model, variables, images, **kwargs):
    """Jitted model.apply (op-by-op execution is far slower on CPU)."""
    return jax.jit(lambda v, x: model.apply(v, x, **kwargs))(variables, images)


def conv_dtypes(model, variables, images):
    """Dtypes of every convolution's input (lax conv or matmul form) in the traced forward pass."""
    closed = jax.make_jaxpr(lambda v, x: model.apply(v, x, train=False))(variables, images)
    found = []

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name in ("conv_general_dilated", "dot_general"):
                found.append(eqn.invars[0].aval.dtype)
            for value in eqn.params.values():
                if hasattr(value, "jaxpr"):
                    walk(value.jaxpr)

    walk(closed.jaxpr)
    return found


@pytest.mark.parametrize("depth", sorted(TIMM_PARAMS))
def test_param_counts_equal_timm_and_round_to_table7(depth):
    params = count_params(create_model(f"resnetrs{depth}"))
    assert params == TIMM_PARAMS[depth]
    assert round(params / 1e6) == TABLE7_PARAMS_M[depth]


def test_layouts_cover_paper_depths():
    assert set(BLOCK_LAYOUTS) == {26, 50, 101, 152, 200, 270, 300, 350, 400, 420}
    assert BLOCK_LAYOUTS[300] == (4, 36, 54, 4) and BLOCK_LAYOUTS[400] == (6, 48, 72, 6)
    assert BLOCK_LAYOUTS[26] == (2, 2, 2, 2)


def test_forward_shapes_grayscale_and_logit_dtype(tiny_model):
    variables = random_variables(tiny_model, channels=1)
    images = jnp.ones((3, 28, 28, 1))
    assert set(variables) == {"params", "batch_stats"}
    logits = apply(tiny_model, variables, images, train=False)
    assert logits.shape == (3, 7) and logits.dtype == jnp.float32


def test_architecture_details(tiny_model, tiny_variables):
    model = tiny_model
    params = abstract_variables(model)["params"]
    stem = params["stem"]
    assert [stem[f"conv{i}"]["kernel"].shape for i in range(1, 5)] == [
        (3, 3, 3, 4),
        (3, 3, 4, 4),
        (3, 3, 4, 8),
        (3, 3, 8, 8),
    ]
    block = params["c3_block0"]  # filters 16 -> output 64
    assert block["conv2"]["kernel"].shape == (3, 3, 16, 16)  # stride sits on the 3x3
    assert block["se"]["reduce"]["kernel"].shape == (64, 16)  # SE reduces 4f -> f
    assert "bias" in block["se"]["reduce"] and "bias" in block["se"]["expand"]
    assert block["shortcut_conv"]["kernel"].shape == (1, 1, 32, 64)
    variables, _ = tiny_variables
    assert not np.any(variables["params"]["c3_block0"]["bn3"]["scale"])  # zero-init last BN
    assert np.all(variables["params"]["c3_block0"]["bn2"]["scale"] == 1)


def test_resnet_d_shortcut_pools_only_when_strided(tiny_model, tiny_variables):
    """c2 (stride 1) projects with a 1x1 conv only; c3 average-pools first (checked via jaxpr)."""
    model = tiny_model
    variables, images = tiny_variables
    jaxpr = jax.make_jaxpr(lambda v, x: model.apply(v, x, train=False))(variables, images)
    text = str(jaxpr)
    # Three strided stages (c3, c4, c5) -> three 2x2 average pools (reduce_window_sum).
    assert text.count("reduce_window_sum") == 3 * 2  # values and the include-pad counts


def test_stem_downsample_none_moves_stride_to_c2():
    conv_model = ResNetRS(**TINY)
    none_model = ResNetRS(**TINY, stem_downsample="none")
    assert none_model.stage_strides() == (2, 2, 2, 2)
    params = abstract_variables(none_model)["params"]
    assert "conv4" not in params["stem"]
    x = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
    feats = {}
    for name, model in (("conv", conv_model), ("none", none_model)):
        v = abstract_variables(model)
        _, state = jax.eval_shape(
            lambda v, x, m=model: m.apply(
                v, x, train=False, capture_intermediates=True, mutable=["intermediates"]
            ),
            v,
            x,
        )
        feats[name] = state["intermediates"]["c2_block0"]["__call__"][0].shape
    assert feats["conv"] == feats["none"] == (1, 16, 16, 32)


def test_width_multiplier_scales_every_conv():
    params = abstract_variables(create_model("resnetrs50", width_multiplier=0.5))["params"]
    assert params["stem"]["conv1"]["kernel"].shape[-1] == 16
    assert params["stem"]["conv4"]["kernel"].shape[-1] == 32
    assert params["c5_block0"]["conv3"]["kernel"].shape[-1] == 1024
    assert params["classifier"]["kernel"].shape == (1024, 1000)


def test_stochastic_depth_rates_per_stage():
    assert np.allclose(stage_drop_rates(0.1, 4), [0.04, 0.06, 0.08, 0.10])
    assert stage_drop_rates(0.2, 4)[-1] == pytest.approx(0.2)


def test_stochastic_depth_layer_drops_whole_samples():
    x = jnp.ones((4000, 2, 2, 3))
    layer = StochasticDepth(rate=0.25)
    y = layer.apply({}, x, deterministic=False, rngs={"dropout": jax.random.key(0)})
    per_sample = np.asarray(y).reshape(4000, -1)
    np.testing.assert_allclose(np.unique(per_sample), [0.0, 1 / 0.75], rtol=1e-6)
    assert np.all(per_sample.min(1) == per_sample.max(1))  # one draw per sample
    assert abs((per_sample[:, 0] == 0).mean() - 0.25) < 0.03
    assert layer.apply({}, x, deterministic=True) is x


def test_pure_and_rng_only_in_train_mode(tiny_variables):
    model = ResNetRS(**TINY, dropout_rate=0.5, stochastic_depth_rate=0.5)
    variables, images = tiny_variables
    eval_a = apply(model, variables, images, train=False)
    eval_b = apply(model, variables, images, train=False)
    np.testing.assert_array_equal(eval_a, eval_b)  # no RNG needed, deterministic

    @jax.jit
    def train_logits(key):
        logits, _ = model.apply(
            variables, images, train=True, mutable=["batch_stats"], rngs={"dropout": key}
        )
        return logits

    def train(seed):
        return np.asarray(train_logits(jax.random.key(seed)))

    np.testing.assert_array_equal(train(3), train(3))
    assert not np.allclose(train(3), train(4))
    with pytest.raises(flax.errors.InvalidRngError):
        jax.eval_shape(
            lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]), variables, images
        )


def test_train_mode_without_regularisers_needs_no_rng_and_updates_stats(tiny_variables):
    model = ResNetRS(**TINY, dropout_rate=0.0)
    variables, images = tiny_variables
    _, state = apply(model, variables, images, train=True, mutable=["batch_stats"])
    before = variables["batch_stats"]["stem"]["bn1"]["mean"]
    assert not np.allclose(state["batch_stats"]["stem"]["bn1"]["mean"], before)


def test_bfloat16_computes_in_bf16_with_fp32_params(tiny_variables):
    model = ResNetRS(**TINY, dtype=jnp.bfloat16)
    variables, images = tiny_variables
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(variables))
    dtypes = conv_dtypes(model, variables, images)
    assert dtypes and all(d == jnp.bfloat16 for d in dtypes)
    logits = apply(model, variables, images, train=False)
    ref = apply(ResNetRS(**TINY), variables, images, train=False)
    assert logits.dtype == jnp.float32
    np.testing.assert_allclose(logits, ref, atol=0.05)


def test_registry():
    names = list_models()
    for depth in (50, 101, 152, 200, 270, 350, 420, 26, 300, 400):
        assert f"resnetrs{depth}" in names
    assert "resnetrs101_w1p5" in names and "resnetrs26_w0p25" in names
    assert "resnetrs50_w1p5" not in list_models(include_widths=False)
    model = create_model("resnetrs101_w0p5", num_classes=10)
    assert (model.depth, model.width_multiplier, model.num_classes) == (101, 0.5, 10)
    assert PRESETS["resnetrs420"].kwargs["dropout_rate"] == 0.4
    assert PRESETS["resnetrs200"].kwargs["stochastic_depth_rate"] == 0.1
    with pytest.raises(ValueError, match="Unknown model 'resnet50'"):
        create_model("resnet50")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(depth=51), "Unknown ResNet-RS depth 51"),
        (dict(stage_sizes=(3, 0, 1)), "stage_sizes"),
        (dict(width_multiplier=0.0), "width_multiplier"),
        (dict(width_multiplier=-1.0), "width_multiplier"),
        (dict(se_ratio=0.0), "se_ratio"),
        (dict(se_ratio=-0.25), "se_ratio"),
        (dict(dropout_rate=1.0), "dropout_rate"),
        (dict(dropout_rate=-0.1), "dropout_rate"),
        (dict(stochastic_depth_rate=1.5), "stochastic_depth_rate"),
        (dict(stem_downsample="maxpool"), "stem_downsample"),
        (dict(num_classes=0), "num_classes"),
        (dict(stem_stride=4), "stem_stride"),
        (dict(conv_impl="cudnn"), "conv_impl"),
    ],
)
def test_bad_configuration_is_a_clear_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ResNetRS(**kwargs)


def test_custom_stage_sizes_need_no_known_depth():
    assert ResNetRS(depth=7, stage_sizes=(1, 2)).blocks_per_stage == (1, 2)


@pytest.mark.parametrize(
    "shape, message",
    [((32, 32, 3), "rank 4"), ((1, 1, 32, 32, 3), "rank 4"), ((2, 16, 64, 3), "too small")],
)
def test_bad_images_fail_before_compilation(shape, message, tiny_model, tiny_variables):
    model = tiny_model
    images = jax.ShapeDtypeStruct(shape, jnp.float32)
    # eval_shape only traces: the error comes from the model's own check, not from XLA.
    with pytest.raises(ValueError, match=message):
        jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), images)
    variables, _ = tiny_variables
    with pytest.raises(ValueError, match=message):
        jax.eval_shape(lambda x: model.apply(variables, x, train=False), images)


def test_minimum_image_size_is_usable(tiny_model, tiny_variables):
    assert tiny_model.min_image_size() == 17
    images = jnp.ones((1, 17, 17, 3))
    assert apply(tiny_model, tiny_variables[0], images, train=False).shape == (1, 7)


def test_conv_impls_agree_on_the_whole_network():
    """Matmul-form convs give the XLA path's logits and parameter gradients (fp32)."""
    images = jax.random.normal(jax.random.key(0), (4, 37, 37, 3))
    variables = random_variables(ResNetRS(**TINY))
    (_, (logits_xla, _)), grads_xla = train_mode_loss_and_grads(
        ResNetRS(**TINY, conv_impl="xla", dropout_rate=0.0), variables, images
    )
    (_, (logits_mm, _)), grads_mm = train_mode_loss_and_grads(
        ResNetRS(**TINY, conv_impl="matmul", dropout_rate=0.0), variables, images
    )
    np.testing.assert_allclose(logits_mm, logits_xla, rtol=1e-4, atol=1e-5)
    assert_trees_close(grads_mm, grads_xla, 1e-4)


def test_stem_stride_one_halves_the_output_stride():
    strided, unstrided = ResNetRS(**TINY), ResNetRS(**TINY, stem_stride=1)
    assert unstrided.num_downsamplings() == strided.num_downsamplings() - 1
    assert (strided.min_image_size(), unstrided.min_image_size()) == (17, 9)
    x = jax.ShapeDtypeStruct((1, 28, 28, 1), jnp.float32)
    variables = abstract_variables(unstrided, channels=1)
    _, state = jax.eval_shape(
        lambda v, x: unstrided.apply(
            v, x, train=False, capture_intermediates=True, mutable=["intermediates"]
        ),
        variables,
        x,
    )
    assert state["intermediates"]["stem"]["__call__"][0].shape[1:3] == (14, 14)


def test_block_layouts_equal_the_bundled_table11():
    """layouts.BLOCK_LAYOUTS is code; the paper's Table 11 is the bundled CSV: they agree."""
    from rsjax import paper_tables

    rows = paper_tables.load("table11_block_layouts")
    assert len(rows) >= 7
    for row in rows:
        stages = tuple(int(row[c]) for c in ("c2", "c3", "c4", "c5"))
        assert BLOCK_LAYOUTS[row["depth"]] == stages, row


def test_registry_defaults_are_the_last_table8_row_of_each_depth():
    from rsjax import paper_tables
    from rsjax.models import get_preset

    last = {r["depth"]: r for r in paper_tables.load("table8_hparams")}
    for depth, row in last.items():
        preset = get_preset(f"resnetrs{depth}")
        assert preset.default_resolution == row["image_resolution"]
        assert preset.kwargs["dropout_rate"] == row["dropout_rate"]
        assert preset.kwargs["stochastic_depth_rate"] == row["stochastic_depth_rate"]


@pytest.mark.parametrize("depth, params", [(50, 25_557_032), (101, 44_549_160), (152, 60_192_808)])
def test_the_vanilla_resnet_of_table_5_has_torchvisions_parameter_counts(depth, params):
    """`resnet_d=False, se_ratio=None`: the original ResNet (7x7 stem + max-pool, strided 1x1
    shortcuts, no SE); torchvision's and timm's resnet50/101/152 hold exactly these counts."""
    from rsjax.profiling import flops_per_image

    model = ResNetRS(depth=depth, se_ratio=None, resnet_d=False, dropout_rate=0.0)
    variables = abstract_variables(model)
    assert count_params(model, variables=variables) == params
    assert variables["params"]["stem"]["conv1"]["kernel"].shape == (7, 7, 3, 64)
    assert "conv2" not in variables["params"]["stem"]
    if depth == 50:  # 4.09 GMACs at 224 px (torchvision), counted with padding taps
        assert 4.05e9 < flops_per_image(model, 224, variables=variables) / 2 < 4.15e9
        logits = jax.eval_shape(
            lambda v, x: model.apply(v, x, train=False),
            variables,
            jax.ShapeDtypeStruct((2, 224, 224, 3), jnp.float32),
        )
        assert logits.shape == (2, 1000)
    resnet_d = ResNetRS(depth=depth, se_ratio=None, dropout_rate=0.0)
    assert count_params(resnet_d) != params  # ResNet-D's stem and shortcuts differ
