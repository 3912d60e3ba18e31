"""FLOPs and parameter counting against hand counts, timm's counter and the paper's Table 7."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from rsjax import paper_tables, profiling
from rsjax.models import abstract_variables, create_model


class _TwoLayers(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
        x = nn.Conv(4, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)), use_bias=False)(x)
        return nn.Dense(5)(x.reshape(x.shape[0], -1))

    def min_image_size(self):
        return 8


def test_count_macs_by_hand():
    # conv: 4x4 outputs x 4 channels x (3 x 3 x 2) taps; dense: 64 inputs x 5 outputs.
    model = _TwoLayers()
    assert profiling.flops_per_image(model, 8, channels=2) == 2 * (4 * 4 * 4 * 18 + 64 * 5)


def test_count_macs_multiplies_scan_bodies():
    def body(carry, _):
        return carry @ jnp.ones((6, 6)), None

    jaxpr = jax.make_jaxpr(lambda x: jax.lax.scan(body, x, None, length=7)[0])(jnp.ones((3, 6)))
    assert profiling.count_macs(jaxpr.jaxpr) == 7 * 3 * 6 * 6


def test_resnetrs50_flops_match_timm_counter():
    # timm's FLOP counter: 4.557 GFLOPs for resnetrs50 at 160 (2 x MACs, padding taps included).
    flops = profiling.flops_per_image(create_model("resnetrs50"), 160)
    assert flops == pytest.approx(4.557e9, rel=1e-3)


@pytest.mark.parametrize(
    "row",
    paper_tables.resnet_rs_rows(),
    ids=lambda r: f"rs{r['depth']}@{r['image_resolution']}",
)
def test_flops_within_3_percent_of_table7(row):
    model = create_model(f"resnetrs{row['depth']}")
    flops = profiling.flops_per_image(model, row["image_resolution"])
    assert flops / (row["flops_b"] * 1e9) == pytest.approx(1.0, abs=0.03)


def test_xla_cost_analysis_is_a_few_percent_lower():
    model = create_model("resnetrs50")
    variables = abstract_variables(model)
    ours = profiling.flops_per_image(model, 160, variables=variables)
    xla = profiling.xla_flops_per_image(model, 160, variables=variables)
    assert 0.9 < xla / ours < 1.0


def test_table7_bundle_has_the_eleven_resnet_rs_rows():
    rows = paper_tables.resnet_rs_rows()
    assert len(rows) == 11
    assert (rows[0]["depth"], rows[0]["image_resolution"], rows[0]["flops_b"]) == (50, 160, 4.6)
    with pytest.raises(ValueError, match="Unknown paper table"):
        paper_tables.load("table99")
