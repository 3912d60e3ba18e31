"""The EfficientNet family in the train program: `model.family`, TF1 RMSProp, the exponential
staircase schedule, the ImageNet presets of the comparison (Table 10, Section 7.2) and what the
records say about the family."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from rsjax import configs
from rsjax.configs import imagenet
from rsjax.errors import UsageError
from rsjax.models import EfficientNet, ResNetRS
from rsjax.train import optim


def _optim(**overrides) -> ml_collections.ConfigDict:
    c = configs.load("imagenet:efficientnet_b0").optim
    return ml_collections.ConfigDict({**c.to_dict(), **overrides})


def test_exponential_schedule_is_a_staircase_from_step_zero():
    """0.97 every 2.4 epochs counted from step 0 (not from the end of warmup), linear warmup."""
    schedule = optim.make_schedule(
        _optim(), peak_lr=1.0, total_steps=10_000, warmup_steps=50, decay_every_steps=24.0
    )
    assert isinstance(schedule, optim.WarmupExponentialSchedule)
    np.testing.assert_allclose(schedule(25), 0.5)
    np.testing.assert_allclose(schedule(50), 0.97**2)  # floor(50 / 24) = 2 stairs
    np.testing.assert_allclose(schedule(71), 0.97**2)
    np.testing.assert_allclose(schedule(72), 0.97**3, rtol=1e-6)
    np.testing.assert_allclose(schedule(2400), 0.97**100, rtol=1e-5)
    cosine = optim.make_schedule(_optim(schedule="cosine"), 1.0, 100, 10, 24.0)
    assert isinstance(cosine, optim.WarmupCosineSchedule)


def _tf1_rmsprop(grads, lr, decay=0.9, momentum=0.9, eps=1e-3):
    """tf.compat.v1.train.RMSPropOptimizer's dense update, written out: ms starts at 1."""
    w, ms, mom = np.zeros_like(grads[0]), np.ones_like(grads[0]), np.zeros_like(grads[0])
    for g in grads:
        ms = decay * ms + (1 - decay) * g * g
        mom = momentum * mom + lr * g / np.sqrt(ms + eps)
        w = w - mom
    return w


def test_rmsprop_is_tf1s():
    grads = [np.array([0.3, -2.0, 0.01], np.float32) * (1 + k) for k in range(4)]
    tx = optim.make_optimizer(_optim(weight_decay=0.0), optax_constant(0.1))
    params = {"w": jnp.zeros(3)}
    state = tx.init(params)
    for g in grads:
        updates, state = tx.update({"w": jnp.asarray(g)}, state, params)
        params = jax.tree.map(lambda p, u: p + u, params, updates)
    np.testing.assert_allclose(params["w"], _tf1_rmsprop(grads, 0.1), rtol=1e-5)
    # Planted difference: optax's default (ms from 0, eps outside the root) is not TF1's.
    import optax

    other = optax.rmsprop(0.1, decay=0.9, eps=1e-3, momentum=0.9)
    state, p = other.init({"w": jnp.zeros(3)}), {"w": jnp.zeros(3)}
    for g in grads:
        u, state = other.update({"w": jnp.asarray(g)}, state, p)
        p = jax.tree.map(lambda a, b: a + b, p, u)
    assert not np.allclose(p["w"], _tf1_rmsprop(grads, 0.1), rtol=1e-3)


def optax_constant(value: float):
    return lambda step: jnp.float32(value)


def test_efficientnet_presets_carry_table_10_and_section_7_2():
    c = configs.validate(configs.load("imagenet:efficientnet_b3"))
    assert (c.model.family, c.model.width_multiplier, c.model.depth_multiplier) == (
        "efficientnet",
        1.2,
        1.4,
    )
    assert (c.optim.name, c.optim.schedule, c.optim.base_learning_rate) == (
        "rmsprop",
        "exponential",
        0.016,
    )
    assert (c.optim.decay_rate, c.optim.decay_epochs, c.optim.weight_decay) == (0.97, 2.4, 1e-5)
    assert c.model.bn_momentum == 0.99 and c.model.dropout_rate == 0.3
    assert c.data.image_size == 300 and c.data.eval_crop_fraction == pytest.approx(300 / 332)
    assert c.data.randaugment_magnitude == 15.0
    assert isinstance(configs.build_model(c), EfficientNet)
    rs = configs.load("imagenet:efficientnet_b3_rs_recipe")
    assert (rs.optim.name, rs.optim.schedule, rs.optim.weight_decay) == ("sgd", "cosine", 4e-5)
    assert configs.build_model(rs) == configs.build_model(c).clone(bn_momentum=0.9)
    # EfficientNet-RS: B{i}'s network at every Table 8 resolution below its own.
    names = imagenet.efficientnet_presets()
    assert [n for n in names if n.startswith("efficientnet_rs_b2_")] == [
        "efficientnet_rs_b2_i160",
        "efficientnet_rs_b2_i192",
        "efficientnet_rs_b2_i224",
        "efficientnet_rs_b2_i256",
    ]
    b7 = configs.load("imagenet:efficientnet_rs_b7_i320")
    assert b7.data.image_size == 320 and b7.data.randaugment_magnitude == 15.0
    assert configs.build_model(b7) == configs.build_model(configs.load("imagenet:efficientnet_b7"))
    assert [imagenet.randaugment_magnitude_7_2(r) for r in (224, 225, 320, 321)] == [10, 15, 15, 20]


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"model.family": "vit"}, "model.family must be one of"),
        ({"model.family": "efficientnet"}, "model.depth=50 is a ResNet-RS field"),
        ({"model.family": "efficientnet", "model.depth": 0, "model.scan_blocks": True},
         "model.scan_blocks=True is a ResNet-RS field"),
        ({"model.depth_multiplier": 1.4}, "is an EfficientNet field"),
        ({"optim.name": "adam"}, "optim.name must be one of"),
        ({"optim.schedule": "step"}, "optim.schedule must be one of"),
        ({"optim.schedule": "exponential", "optim.decay_epochs": 0.0}, "decay_epochs > 0"),
        ({"optim.name": "rmsprop", "optim.rmsprop_epsilon": 0.0}, "rmsprop_epsilon > 0"),
    ],
)  # fmt: skip
def test_bad_family_and_recipe_values_are_one_clear_error(overrides, message):
    config = configs.load("imagenet:resnetrs50_i160", overrides)
    with pytest.raises(UsageError, match=message):
        configs.validate(config)


def test_new_keys_keep_earlier_run_ids():
    """Runs recorded before model.family and the recipe keys keep their ids: at their neutral
    values the keys are left out of the id, and other values change it."""
    base = configs.load("fashion_mnist")
    legacy = base.to_dict()
    for key in ("family", "depth_multiplier"):
        legacy["model"].pop(key)
    for key in ("name", "rmsprop_decay", "rmsprop_epsilon", "schedule", "decay_rate",
                "decay_epochs"):  # fmt: skip
        legacy["optim"].pop(key)
    assert configs.run_id(legacy) == configs.run_id(base)
    assert configs.run_id(configs.load("fashion_mnist", {"optim.name": "rmsprop"})) != (
        configs.run_id(base)
    )
    assert isinstance(configs.build_model(base), ResNetRS)


def test_the_record_and_the_results_row_name_the_family():
    from rsjax.results.collection import flatten
    from rsjax.train.trainer import record_header

    for preset, family in (("efficientnet_tiny", "efficientnet"), ("tiny", "resnet_rs")):
        config = configs.validate(configs.load(f"fashion_mnist:{preset}"))
        record = record_header(config, configs.build_model(config), channels=1)
        record.update(status="completed")
        assert record["model"]["family"] == family
        row = flatten(record)
        assert row["family"] == family
        assert row["params"] == record["model"]["params"] > 0
    record["model"].pop("family")  # a record from before the field: ResNet-RS
    assert flatten(record)["family"] == "resnet_rs"
