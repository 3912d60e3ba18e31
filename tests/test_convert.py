"""timm state-dict conversion: key mapping and clear errors for wrong inputs."""

import numpy as np
import pytest

from rsjax.models import create_model, from_timm_state_dict
from rsjax.models.convert import timm_key
from tests.test_timm_parity import FIXTURE, load_reference


@pytest.fixture(scope="module")
def reference():
    model, state_dict, _ = load_reference(FIXTURE)
    return model, state_dict


def test_key_mapping():
    assert timm_key("params", ("stem", "conv1", "kernel")) == "conv1.0.weight"
    assert timm_key("params", ("stem", "bn3", "scale")) == "bn1.weight"
    assert timm_key("batch_stats", ("stem", "bn4", "var")) == "maxpool.1.running_var"
    assert timm_key("params", ("c4_block0", "se", "reduce", "kernel")) == "layer3.0.se.fc1.weight"
    assert (
        timm_key("params", ("c2_block0", "shortcut_conv", "kernel"))
        == "layer1.0.downsample.1.weight"
    )
    assert timm_key("batch_stats", ("c5_block0", "shortcut_bn", "mean")) == (
        "layer4.0.downsample.2.running_mean"
    )
    assert timm_key("params", ("classifier", "bias")) == "fc.bias"


def test_layouts_are_transposed(reference):
    model, state_dict = reference
    variables = from_timm_state_dict(model, state_dict)
    conv = state_dict["layer2.0.conv2.weight"]  # [O, I, kh, kw]
    np.testing.assert_array_equal(
        variables["params"]["c3_block0"]["conv2"]["kernel"], conv.transpose(2, 3, 1, 0)
    )
    np.testing.assert_array_equal(
        variables["params"]["classifier"]["kernel"], state_dict["fc.weight"].T
    )
    np.testing.assert_array_equal(
        variables["batch_stats"]["stem"]["bn1"]["var"], state_dict["conv1.1.running_var"]
    )


def test_missing_key(reference):
    model, state_dict = reference
    broken = {k: v for k, v in state_dict.items() if k != "layer3.0.bn2.running_mean"}
    with pytest.raises(ValueError, match=r"missing 'layer3.0.bn2.running_mean'"):
        from_timm_state_dict(model, broken)


def test_unexpected_key(reference):
    model, state_dict = reference
    broken = {**state_dict, "layer5.0.conv1.weight": np.zeros((1, 1, 1, 1))}
    with pytest.raises(ValueError, match=r"unexpected key.*layer5.0.conv1.weight"):
        from_timm_state_dict(model, broken)


def test_mis_shaped_key(reference):
    model, state_dict = reference
    broken = {**state_dict, "fc.weight": np.zeros((11, 64 * 4 // 2))}
    with pytest.raises(ValueError, match=r"'fc.weight' has shape"):
        from_timm_state_dict(model, broken)


def test_wrong_model_for_the_weights(reference):
    model, state_dict = reference
    with pytest.raises(ValueError, match=r"needs|missing"):
        from_timm_state_dict(model.clone(num_classes=1000), state_dict)


def test_efficientnet_key_mapping():
    from rsjax.models.convert import efficientnet_timm_key as key

    assert key("params", ("stem_conv", "kernel")) == "conv_stem.weight"
    assert key("batch_stats", ("head_bn", "var")) == "bn2.running_var"
    assert key("params", ("classifier", "bias")) == "classifier.bias"
    # Blocks with an expansion conv: conv_pw, bn1, conv_dw, bn2, conv_pwl, bn3.
    assert key("params", ("stage2_block1", "expand_conv", "kernel")) == "blocks.2.1.conv_pw.weight"
    assert key("params", ("stage2_block1", "project_bn", "scale")) == "blocks.2.1.bn3.weight"
    assert key("params", ("stage1_block0", "se_reduce", "bias")) == "blocks.1.0.se.conv_reduce.bias"
    # The unexpanded first stage: conv_dw, bn1, conv_pw (the projection), bn2.
    assert key("params", ("stage0_block0", "project_conv", "kernel"), expanded=False) == (
        "blocks.0.0.conv_pw.weight"
    )
    assert key("batch_stats", ("stage0_block0", "depthwise_bn", "mean"), expanded=False) == (
        "blocks.0.0.bn1.running_mean"
    )


def test_efficientnet_depthwise_kernels_become_hwio():
    from tests.test_timm_parity import EFFICIENTNET_FIXTURES

    model, state_dict, _ = load_reference(EFFICIENTNET_FIXTURES[0])
    params = from_timm_state_dict(model, state_dict)["params"]
    dw = state_dict["blocks.1.0.conv_dw.weight"]  # [C, 1, k, k]
    assert dw.shape == (24, 1, 5, 5)
    np.testing.assert_array_equal(
        params["stage1_block0"]["depthwise_conv"]["kernel"], dw.transpose(2, 3, 1, 0)
    )
    broken = {k: v for k, v in state_dict.items() if k != "blocks.0.0.conv_pw.weight"}
    with pytest.raises(ValueError, match=r"missing 'blocks.0.0.conv_pw.weight'"):
        from_timm_state_dict(model, broken)
    with pytest.raises(ValueError, match=r"is it a timm model of this family"):
        from_timm_state_dict(create_model("resnetrs50"), state_dict)
