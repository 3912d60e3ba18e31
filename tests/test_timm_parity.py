"""Numerical parity with timm's ResNet-RS and tf_efficientnet (same weights -> same logits).

The golden fixtures (tests/fixtures/timm_tiny_*.npz, written by tests/parity/timm_reference.py
in the torch environment) are checked in every run without torch. The live comparison for full
presets (`parity` marker) reads reference files that `make parity` writes with timm just before;
their paths come in RSJAX_TIMM_REFERENCES (comma-separated).
"""

import json
import os
import pathlib

import jax
import numpy as np
import pytest

from rsjax.models import EfficientNet, ResNetRS, create_model, efficientnet, from_timm_state_dict
from rsjax.models.conv import CONCRETE_CONV_IMPLS

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
FIXTURE = FIXTURES / "timm_tiny_resnetrs.npz"  # layout 2-1-1-1
SCAN_FIXTURE = FIXTURES / "timm_tiny_scan_resnetrs.npz"  # 1-3-1-1: c3 scans two blocks
# Three MBConv stages at an even size (asymmetric 'SAME' padding at stride 2) and an odd one.
EFFICIENTNET_FIXTURES = [
    FIXTURES / "timm_tiny_efficientnet_even.npz",
    FIXTURES / "timm_tiny_efficientnet_odd.npz",
]
TOLERANCE = 1e-4  # max abs logit difference, fp32 (the bound)


def load_reference(
    path: pathlib.Path, conv_impl: str = "auto", scan_blocks: bool = False
) -> tuple[ResNetRS | EfficientNet, dict, dict]:
    """(rsjax model, timm state dict, arrays) from a reference .npz (conv_impl and scan_blocks
    are ResNet-RS options)."""
    ref = np.load(path)
    meta = json.loads(str(ref["meta"]))
    state_dict = {k.split("/", 1)[1]: ref[k] for k in ref.files if k.startswith("state_dict/")}
    kwargs = dict(meta["rsjax"])
    name = kwargs.pop("name", None)
    if kwargs.pop("family", None) == "efficientnet":
        blocks = tuple(efficientnet.BlockArgs(*b) for b in kwargs.pop("blocks"))
        model = EfficientNet(blocks=blocks, conv_impl=conv_impl, **kwargs)
    elif name and name.startswith("efficientnet"):
        model = create_model(name, conv_impl=conv_impl, **kwargs)
    else:
        kwargs.update(conv_impl=conv_impl, scan_blocks=scan_blocks)
        model = create_model(name, **kwargs) if name else ResNetRS(**kwargs)
    arrays = {k: ref[k] for k in ("images_nhwc", "logits_eval", "logits_train")}
    return model, state_dict, arrays


def deterministic(model: ResNetRS | EfficientNet) -> ResNetRS | EfficientNet:
    """`model` without dropout and stochastic depth, as timm's reference ran in train mode."""
    if isinstance(model, EfficientNet):
        return model.clone(dropout_rate=0.0, drop_connect_rate=0.0)
    return model.clone(dropout_rate=0.0, stochastic_depth_rate=0.0)


def max_logit_errors(
    path: pathlib.Path, conv_impl: str = "auto", scan_blocks: bool = False
) -> tuple[float, float]:
    """Max abs logit difference to timm in eval mode and in train mode (batch statistics)."""
    model, state_dict, arrays = load_reference(path, conv_impl, scan_blocks)
    variables = from_timm_state_dict(model, state_dict)
    images = arrays["images_nhwc"]
    eval_logits = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, images)
    train_model = deterministic(model)
    train_logits, _ = jax.jit(
        lambda v, x: train_model.apply(v, x, train=True, mutable=["batch_stats"])
    )(variables, images)
    return (
        float(np.abs(np.asarray(eval_logits) - arrays["logits_eval"]).max()),
        float(np.abs(np.asarray(train_logits) - arrays["logits_train"]).max()),
    )


@pytest.mark.parametrize("scan_blocks", [False, True])
@pytest.mark.parametrize("conv_impl", CONCRETE_CONV_IMPLS)
@pytest.mark.parametrize("path", [FIXTURE, SCAN_FIXTURE], ids=lambda p: p.stem)
def test_golden_fixture_matches_timm(path, conv_impl, scan_blocks):
    eval_err, train_err = max_logit_errors(path, conv_impl, scan_blocks)
    assert eval_err < TOLERANCE, eval_err
    assert train_err < TOLERANCE, train_err


@pytest.mark.parametrize("conv_impl", CONCRETE_CONV_IMPLS)
@pytest.mark.parametrize("path", EFFICIENTNET_FIXTURES, ids=lambda p: p.stem)
def test_efficientnet_golden_fixture_matches_timm(path, conv_impl):
    eval_err, train_err = max_logit_errors(path, conv_impl)
    assert eval_err < TOLERANCE, eval_err
    assert train_err < TOLERANCE, train_err


@pytest.mark.parametrize("conv_impl", CONCRETE_CONV_IMPLS)
@pytest.mark.parametrize(
    "attribute, replacement",
    [("conv_padding", lambda kernel, stride: "symmetric"), ("BN_EPSILON", 1e-5)],
    ids=["symmetric_padding", "bn_eps_1e-5"],
)
def test_efficientnet_fixture_catches_padding_and_bn_epsilon(
    monkeypatch, attribute, replacement, conv_impl
):
    """The even-size fixture fails with PyTorch-style symmetric padding (which the odd size
    cannot tell from 'SAME') and with BatchNorm's usual epsilon instead of TF's 1e-3."""
    even, odd = EFFICIENTNET_FIXTURES
    monkeypatch.setattr(efficientnet, attribute, replacement)
    eval_err, train_err = max_logit_errors(even, conv_impl)
    assert eval_err > TOLERANCE and train_err > TOLERANCE, (eval_err, train_err)
    if attribute == "conv_padding":
        assert max(max_logit_errors(odd, conv_impl)) < TOLERANCE


def test_the_scan_fixture_really_scans():
    """With scan_blocks=True the 1-3-1-1 model holds c3's blocks 1 and 2 as one stacked subtree
    (what the scanned comparison above exercises); the 2-1-1-1 fixture has no such stage."""
    model, state_dict, _ = load_reference(SCAN_FIXTURE, scan_blocks=True)
    params = from_timm_state_dict(model, state_dict)["params"]
    assert "c3_blocks" in params and "c3_block1" not in params
    assert {leaf.shape[0] for leaf in jax.tree.leaves(params["c3_blocks"])} == {2}
    model, state_dict, _ = load_reference(FIXTURE, scan_blocks=True)
    assert not any(k.endswith("_blocks") for k in from_timm_state_dict(model, state_dict)["params"])


def test_golden_fixture_is_sensitive_to_weights():
    """The comparison can fail: perturbing one deep weight moves the logits past the tolerance."""
    model, state_dict, arrays = load_reference(FIXTURE)
    state_dict = dict(state_dict)
    state_dict["layer4.0.conv2.weight"] = state_dict["layer4.0.conv2.weight"] * 1.05
    variables = from_timm_state_dict(model, state_dict)
    logits = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, arrays["images_nhwc"])
    assert np.abs(np.asarray(logits) - arrays["logits_eval"]).max() > TOLERANCE


def _live_references() -> list[pathlib.Path]:
    paths = os.environ.get("RSJAX_TIMM_REFERENCES", "")
    return [pathlib.Path(p) for p in paths.split(",") if p]


def _live_cases() -> list[tuple[pathlib.Path, str]]:
    """(reference, conv_impl): every reference with each convolution implementation."""
    return [(path, impl) for path in _live_references() for impl in CONCRETE_CONV_IMPLS]


@pytest.mark.parity
@pytest.mark.parametrize(
    "path, conv_impl", _live_cases(), ids=lambda v: v.stem if hasattr(v, "stem") else v
)
def test_live_timm_parity(path, conv_impl):
    eval_err, train_err = max_logit_errors(path, conv_impl)
    print(f"{path.stem} ({conv_impl}): max |logit diff| eval {eval_err:.2e}, train {train_err:.2e}")
    assert eval_err < TOLERANCE
    assert train_err < TOLERANCE


@pytest.mark.parity
def test_live_references_were_given():
    """`make parity` must hand over at least one reference; an empty run is a failure."""
    assert _live_references(), "RSJAX_TIMM_REFERENCES is empty: run `make parity`"
