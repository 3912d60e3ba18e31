"""3D ResNet(-RS): Model Garden parity on a tiny network (a checked-in fixture), where temporal
order can and cannot matter, parameter counts against Model Garden's, and bad fields."""

import json
import pathlib

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rsjax import profiling
from rsjax.models import create_model, get_preset, list_models
from rsjax.models.resnet3d import ResNet3D, temporal_kernels

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "mg_tiny_resnet3d.npz"
# Model Garden 2.20's trainable parameters of its two 50-layer backbones (no head), printed by
# `tests/parity/mg_resnet3d_reference.py --params`.
MG_BACKBONE_PARAMS = {"resnet3d50": 32_798_272, "resnet3d_rs50": 45_278_372}


def fixture_model(**overrides) -> tuple[ResNet3D, dict, dict]:
    data = np.load(FIXTURE)
    config = json.loads(str(data["config"]))
    kwargs = dict(
        stage_sizes=tuple(config["stage_sizes"]),
        stage_filters=tuple(config["stage_filters"]),
        temporal_kernel_sizes=tuple(tuple(k) for k in config["temporal_kernel_sizes"]),
        temporal_strides=tuple(config["temporal_strides"]),
        self_gating=tuple(config["use_self_gating"]),
        stem="resnet_d" if config["stem_type"] == "v1" else "vanilla",
        stem_temporal_kernel=config["stem_conv_temporal_kernel_size"],
        stem_temporal_stride=config["stem_conv_temporal_stride"],
        stem_pool_temporal_stride=config["stem_pool_temporal_stride"],
        se_ratio=config["se_ratio"],
        bn_momentum=config["norm_momentum"],
        bn_epsilon=config["norm_epsilon"],
        num_classes=data["eval_logits"].shape[-1],
        dropout_rate=0.0,
    )
    model = ResNet3D(**{**kwargs, **overrides})
    flat = {tuple(k[2:].split("/")): jnp.asarray(data[k]) for k in data.files if k.startswith("w/")}
    variables = flax.traverse_util.unflatten_dict(flat)
    return model, variables, {k: data[k] for k in ("clip", "eval_logits", "train_logits")}


def test_logits_equal_model_gardens_in_eval_and_train_mode():
    model, variables, ref = fixture_model()
    shapes = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), ref["clip"])
    assert jax.tree.map(lambda a: a.shape, shapes) == jax.tree.map(jnp.shape, variables)
    eval_logits = model.apply(variables, ref["clip"], train=False)
    np.testing.assert_allclose(eval_logits, ref["eval_logits"], atol=1e-4, rtol=0)
    train_logits, _ = model.apply(variables, ref["clip"], train=True, mutable=["batch_stats"])
    np.testing.assert_allclose(train_logits, ref["train_logits"], atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    "change",
    ["reversed temporal kernel", "stem temporal stride 1", "no temporal stride in c4"],
)
def test_a_wrong_temporal_structure_breaks_parity(change):
    overrides = {
        "stem temporal stride 1": {"stem_temporal_stride": 1},
        "no temporal stride in c4": {"temporal_strides": (1, 1, 1, 1)},
    }.get(change, {})
    model, variables, ref = fixture_model(**overrides)
    if change == "reversed temporal kernel":  # time runs the other way in one block
        kernel = variables["params"]["c2_block0"]["temporal_conv"]["kernel"]
        variables["params"]["c2_block0"]["temporal_conv"]["kernel"] = kernel[::-1]
    logits = model.apply(variables, ref["clip"], train=False)
    assert np.abs(logits - ref["eval_logits"]).max() > 1e-3


def small(**overrides) -> ResNet3D:
    return ResNet3D(stage_sizes=(1, 1, 1, 1), stage_filters=(4, 8, 8, 8), num_classes=5,
                    se_ratio=0.25, **overrides)  # fmt: skip


def test_only_a_temporal_network_sees_frame_order():
    clip = jax.random.normal(jax.random.key(0), (2, 8, 24, 24, 3))
    shuffled = clip[:, jax.random.permutation(jax.random.key(1), 8)]
    blind = small(
        temporal_kernel_sizes=temporal_kernels("none", (1, 1, 1, 1)),
        stem_temporal_kernel=1, stem_temporal_stride=1, stem_pool_temporal_stride=1,
    )  # fmt: skip
    temporal = small(temporal_kernel_sizes=temporal_kernels("none", (1, 1, 1, 1)))  # [5,1,1] stem
    for model, sees_order in ((blind, False), (temporal, True)):
        variables = model.init(jax.random.key(2), clip, train=False)
        a = model.apply(variables, clip, train=False)
        b = model.apply(variables, shuffled, train=False)
        if sees_order:
            assert np.abs(a - b).max() > 1e-4
        else:
            np.testing.assert_allclose(a, b, atol=1e-5)


def test_temporal_kernel_patterns_are_model_gardens_for_50_layers():
    assert temporal_kernels("baseline", (3, 4, 6, 3)) == (
        (3, 3, 3), (3, 1, 3, 1), (3, 1, 3, 1, 3, 1), (1, 3, 1),
    )  # fmt: skip
    assert temporal_kernels("rs", (3, 4, 6, 3)) == ((1,) * 3, (1,) * 4, (3,) * 6, (3,) * 3)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"temporal_kernel_sizes": ((3,), (1,), (1,))}, "one kernel per block"),
        ({"temporal_strides": (1, 0, 1, 1)}, "temporal_strides must be"),
        ({"stem": "x"}, "stem must be one of"),
        ({"self_gating": (True,)}, "self_gating must be"),
        ({"stem_temporal_stride": 0}, "must be >= 1"),
    ],
)
def test_bad_fields_are_one_clear_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        small(**kwargs)


def test_clips_of_the_wrong_rank_or_size_are_refused():
    model = small()
    with pytest.raises(ValueError, match="rank 5"):
        jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False),
                       jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32))  # fmt: skip
    with pytest.raises(ValueError, match="too small"):
        jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False),
                       jax.ShapeDtypeStruct((1, 4, 16, 16, 3), jnp.float32))  # fmt: skip


# Model Garden 2.20's forward FLOPs for one 32 x 224 x 224 clip (TF's profiler, which also
# counts BatchNorm and elementwise ops; `--params --flops 32 224`).
MG_FLOPS_32x224 = {"resnet3d50": 99_320_286_976, "resnet3d_rs50": 94_607_776_196}


@pytest.mark.parametrize("name", ["resnet3d50", "resnet3d_rs50"])
def test_parameters_and_flops_equal_model_gardens(name):
    # Model Garden's RS preset has SE 0.2 where the paper (and `resnet3d_rs50`) has 0.25.
    model = create_model(name, **({"se_ratio": 0.2} if name == "resnet3d_rs50" else {}))
    clip = jax.ShapeDtypeStruct((1, 8, 64, 64, 3), jnp.float32)
    variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), clip)
    head = variables["params"]["classifier"]
    backbone = profiling.count_params(model, variables=variables) - sum(
        int(np.prod(v.shape)) for v in jax.tree.leaves(head)
    )
    assert backbone == MG_BACKBONE_PARAMS[name]
    flops = profiling.flops_per_clip(model, 32, 224)  # 2 x multiply-adds, head included
    assert 0.995 < flops / MG_FLOPS_32x224[name] < 1.0


def test_named_networks():
    assert create_model("resnet3d_rs50", num_classes=10).num_classes == 10
    assert get_preset("resnet3d_rs50").frames == 32
    assert list_models(family="resnet3d") == ["resnet3d50", "resnet3d_rs50"]
    with pytest.raises(ValueError, match="Unknown model"):
        create_model("resnet3d51")
