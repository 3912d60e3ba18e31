"""EfficientNet B0-B7: exact parameter counts (timm's tf_efficientnet_b*), FLOPs against the
paper's Table 7, the scaling rules, 'SAME' padding and the registry presets."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rsjax import paper_tables, profiling
from rsjax.models import (
    EfficientNet,
    abstract_variables,
    create_model,
    efficientnet,
    get_preset,
    list_models,
)
from tests.conftest import random_variables

# timm 1.0.31 `tf_efficientnet_b0` ... `b7` (sum of parameter numel; the list).
TIMM_PARAMS = {
    "b0": 5_288_548,
    "b1": 7_794_184,
    "b2": 9_109_994,
    "b3": 12_233_232,
    "b4": 19_341_616,
    "b5": 30_389_784,
    "b6": 43_040_704,
    "b7": 66_347_960,
}


@pytest.mark.parametrize("variant", sorted(TIMM_PARAMS))
def test_parameter_counts_equal_timm(variant):
    model = create_model(f"efficientnet_{variant}")
    assert isinstance(model, EfficientNet)
    assert profiling.count_params(model) == TIMM_PARAMS[variant]


def test_flops_are_within_6_percent_of_table7():
    """2 x multiply-adds at each model's resolution against Table 7's EfficientNet rows."""
    rows = [r for r in paper_tables.load("table7_pareto") if r["family"] == "efficientnet"]
    assert len(rows) == 8
    ratios = {}
    for row in rows:
        name = "efficientnet_" + row["model"].rsplit("-", 1)[-1].lower()
        preset = get_preset(name)
        assert preset.default_resolution == row["image_resolution"]
        flops = profiling.flops_per_image(create_model(name), preset.default_resolution)
        ratios[name] = flops / (row["flops_b"] * 1e9)
    print({k: round(v, 3) for k, v in ratios.items()})
    assert all(0.94 <= r <= 1.06 for r in ratios.values()), ratios


def test_scaling_rounds_filters_and_repeats_as_tensorflow_tpu():
    assert [efficientnet.round_filters(f, 1.1) for f in (32, 1280, 40, 80)] == [32, 1408, 48, 88]
    assert efficientnet.round_filters(32, 1.2) == 40  # 38.4 -> 40
    assert efficientnet.round_filters(16, 1.0) == 16
    assert efficientnet.round_filters(10, 1.0, divisor=8) == 16  # 8 would be 20% down
    b7 = create_model("efficientnet_b7")
    assert b7.blocks_per_stage == (4, 7, 7, 10, 10, 13, 4)
    assert [s.output_filters for s in b7.stages()] == [32, 48, 80, 160, 224, 384, 640]
    assert create_model("efficientnet_b0").blocks_per_stage == (1, 2, 2, 3, 3, 4, 1)


def test_the_stride_2_convs_pad_as_tf_same():
    """On an even input a 3x3 stride-2 conv pads (0, 1) (TF 'SAME'), not (1, 1): the stem's first
    output row sees input rows 0-2 (symmetric padding: rows -1 to 1), so input row 2 moves it;
    row 3 belongs to output row 1 only."""
    # B0's stem and first stage, and one stride-2 stage: the stem is what is probed.
    model = EfficientNet(num_classes=4, blocks=efficientnet.B0_BLOCKS[:2], head_filters=64)
    x = jax.random.normal(jax.random.key(0), (1, 32, 32, 3))
    variables = random_variables(model)

    @jax.jit
    def stem(images):
        _, state = model.apply(
            variables, images, train=False, capture_intermediates=True, mutable=["intermediates"]
        )
        return state["intermediates"]["stem_conv"]["__call__"][0]

    row2, row3 = x.at[:, 2].add(1.0), x.at[:, 3].add(1.0)
    assert not np.allclose(stem(x)[:, 0], stem(row2)[:, 0])
    np.testing.assert_array_equal(stem(x)[:, 0], stem(row3)[:, 0])
    assert not np.allclose(stem(x)[:, 1], stem(row3)[:, 1])


def test_drop_connect_grows_with_the_block_index_and_skips_need_equal_shapes():
    model = create_model("efficientnet_b0", num_classes=10)
    x = jax.ShapeDtypeStruct((2, 32, 32, 1), jnp.float32)
    variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)
    logits, _ = jax.eval_shape(
        lambda v, x: model.apply(
            v, x, train=True, rngs={"dropout": jax.random.key(1)}, mutable=["batch_stats"]
        ),
        variables,
        x,
    )
    assert logits.shape == (2, 10) and logits.dtype == jnp.float32
    rates = model.block_drop_rates()
    assert len(rates) == 16 and rates[0] == 0.0
    np.testing.assert_allclose(rates, [0.2 * i / 16 for i in range(16)])
    # The params tree names every block; the first block of stage 0 has no expansion conv.
    params = variables["params"]
    assert "expand_conv" not in params["stage0_block0"]
    assert params["stage1_block0"]["depthwise_conv"]["kernel"].shape == (3, 3, 1, 96)
    assert params["stage0_block0"]["se_reduce"]["kernel"].shape == (1, 1, 32, 8)
    assert set(params["stage0_block0"]["se_reduce"]) == {"kernel", "bias"}


def test_presets_carry_their_eval_preprocessing_and_share_the_builder():
    names = list_models(family="efficientnet")
    assert names == [f"efficientnet_b{i}" for i in range(8)]
    b3 = get_preset("efficientnet_b3")
    assert b3.default_resolution == 300 and b3.resize_method == "bicubic"
    assert b3.eval_crop_fraction == pytest.approx(300 / 332)
    assert "efficientnet_b0" not in list_models(family="resnet_rs")
    assert get_preset("resnetrs50").family == "resnet_rs"
    variables = abstract_variables(create_model("efficientnet_b1", num_classes=3))
    assert variables["params"]["classifier"]["kernel"].shape == (1280, 3)
