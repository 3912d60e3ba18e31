"""Writes a timm reference (state dict, inputs, eval and train logits) to an .npz file: ResNet-RS
(`resnetrs*`) or EfficientNet (`tf_efficientnet_b*`).

Runs in the reference environment only (`make .venv-ref`: torch + timm), never in the rsjax one;
the rsjax side reads the file in `tests/test_timm_parity.py`. BatchNorm parameters are randomised
and its statistics measured on a calibration batch first (timm zero-initialises the last BN of
each block, which would hide the residual branches from the comparison).

Examples:
  .venv-ref/bin/python tests/parity/timm_reference.py --model tf_efficientnet_b0 \
      --image-size 224 --out /tmp/b0.npz
  .venv-ref/bin/python tests/parity/timm_reference.py --tiny tiny_efficientnet_even \
      --out tests/fixtures/timm_tiny_efficientnet_even.npz
  .venv-ref/bin/python tests/parity/timm_reference.py --model resnetrs50 --out /tmp/rs50.npz
  .venv-ref/bin/python tests/parity/timm_reference.py --tiny \
      --out tests/fixtures/timm_tiny_resnetrs.npz
  .venv-ref/bin/python tests/parity/timm_reference.py --tiny tiny_scan \
      --out tests/fixtures/timm_tiny_scan_resnetrs.npz
"""

import argparse
import json
import pathlib
import re
from functools import partial

import numpy as np
import timm
import torch
from timm.layers import get_attn
from timm.models._efficientnet_builder import decode_arch_def, round_channels
from timm.models.efficientnet import EfficientNet
from timm.models.resnet import Bottleneck, ResNet

# A small ResNet-RS-shaped model (width x0.125, layout [2, 1, 1, 1], 10 classes) for the golden
# fixture. `rsjax` is what tests/test_timm_parity.py passes to rsjax.models.ResNetRS.
TINY = dict(
    timm=dict(layers=(2, 1, 1, 1), channels=(8, 16, 32, 64), stem_width=4, num_classes=10),
    rsjax=dict(depth=0, stage_sizes=(2, 1, 1, 1), width_multiplier=0.125, num_classes=10),
    batch=4,
    in_chans=3,
    image_size=37,  # odd size: exercises the ceil-mode ResNet-D pooling
)


# A second small model whose c3 holds three blocks: blocks 1 and 2 are identical, so rsjax's
# `scan_blocks=True` layout really scans (a stage scans its blocks after the first when there are
# at least two of them).
TINY_SCAN = dict(
    timm=dict(layers=(1, 3, 1, 1), channels=(8, 16, 32, 64), stem_width=4, num_classes=10),
    rsjax=dict(depth=0, stage_sizes=(1, 3, 1, 1), width_multiplier=0.125, num_classes=10),
    batch=4,
    in_chans=3,
    image_size=33,
)
# A small EfficientNet (tensorflow/tpu block strings, `rsjax.models.EfficientNet(blocks=...)`):
# an unexpanded block with a skip, a 5x5 stride-2 stage whose second block has a skip, a 3x3
# stride-2 stage. At an even size every stride-2 conv pads asymmetrically ('SAME': (0, 1) for
# 3x3, (1, 2) for 5x5), at an odd size symmetrically: one fixture of each.
_TINY_EFFICIENTNET_ARCH = [
    ["ds_r1_k3_s1_e1_c8_se0.25"],
    ["ir_r2_k5_s2_e3_c16_se0.25"],
    ["ir_r1_k3_s2_e6_c24_se0.25"],
]
_TINY_EFFICIENTNET_RSJAX = dict(
    family="efficientnet",
    # BlockArgs fields: repeats, kernel, stride, expand ratio, input and output filters.
    blocks=[[1, 3, 1, 1, 8, 8], [2, 5, 2, 3, 8, 16], [1, 3, 2, 6, 16, 24]],
    stem_filters=8,
    head_filters=32,
    num_classes=10,
)
TINY_EFFICIENTNET_EVEN = dict(
    timm_efficientnet=dict(stem_size=8, num_features=32, num_classes=10),
    rsjax=_TINY_EFFICIENTNET_RSJAX,
    batch=4,
    in_chans=3,
    image_size=32,
)
TINY_EFFICIENTNET_ODD = dict(TINY_EFFICIENTNET_EVEN, image_size=33)
TINY_MODELS = {
    "tiny": TINY,
    "tiny_scan": TINY_SCAN,
    "tiny_efficientnet_even": TINY_EFFICIENTNET_EVEN,
    "tiny_efficientnet_odd": TINY_EFFICIENTNET_ODD,
}


def build_tiny(spec: dict = TINY) -> torch.nn.Module:
    if "timm_efficientnet" in spec:  # what timm's tf_efficientnet_* builder passes
        return EfficientNet(
            block_args=decode_arch_def(_TINY_EFFICIENTNET_ARCH),
            round_chs_fn=partial(round_channels, multiplier=1.0, divisor=8),
            act_layer=torch.nn.SiLU,
            norm_layer=partial(torch.nn.BatchNorm2d, eps=1e-3),
            pad_type="same",
            in_chans=spec["in_chans"],
            **spec["timm_efficientnet"],
        )
    return ResNet(
        block=Bottleneck,
        stem_type="deep",
        replace_stem_pool=True,
        avg_down=True,
        block_args=dict(attn_layer=partial(get_attn("se"), rd_ratio=0.25)),
        in_chans=spec["in_chans"],
        **spec["timm"],
    )


def _is_last_bn(name: str) -> bool:
    """The BN closing a residual branch: ResNet's and EfficientNet's `bn3`, and `bn2` of an
    EfficientNet's unexpanded first-stage blocks (`blocks.0.{j}`)."""
    return name.endswith("bn3") or re.fullmatch(r"blocks\.0\.\d+\.bn2", name) is not None


def randomise(
    model: torch.nn.Module, generator: torch.Generator, calibration: torch.Tensor
) -> None:
    """Random BN affine parameters, then running statistics measured on a calibration batch.

    Conv/linear weights keep timm's init. The last BN of each residual branch (zero-initialised by
    timm) gets a small random gamma, as in trained networks, so that deep presets keep bounded
    activations; running statistics from a real forward pass keep eval mode well-conditioned
    (random statistics would blow activations up exponentially with depth).
    """
    last_bns = {m for name, m in model.named_modules() if _is_last_bn(name)}
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            n = module.num_features
            low, high = (0.1, 0.5) if module in last_bns else (0.5, 1.5)
            module.weight.data = low + (high - low) * torch.rand(n, generator=generator)
            module.bias.data = 0.1 * torch.randn(n, generator=generator)
            module.reset_running_stats()
            module.momentum = None  # cumulative average: the calibration batch's statistics
    model.train()
    with torch.no_grad():
        model(calibration)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = 0.1


# timm name -> rsjax preset, where they differ.
RSJAX_NAMES = {f"tf_efficientnet_b{i}": f"efficientnet_b{i}" for i in range(8)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model", default="resnetrs50", help="timm model name (ignored with --tiny)"
    )
    parser.add_argument(
        "--tiny", nargs="?", const="tiny", choices=sorted(TINY_MODELS),
        help="a small fixture model instead (tiny: layout 2-1-1-1; tiny_scan: 1-3-1-1; "
        "tiny_efficientnet_even/_odd: 3 stages at 32 and 33 px)",
    )  # fmt: skip
    parser.add_argument("--image-size", type=int, default=160)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--calibration-batch", type=int, default=32,
        help="random images whose batch statistics become BN's running statistics (not --tiny)",
    )  # fmt: skip
    parser.add_argument("--out", required=True, type=pathlib.Path)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    if args.tiny:
        spec = TINY_MODELS[args.tiny]
        model = build_tiny(spec)
        rsjax_kwargs = spec["rsjax"]
        batch, channels, size = spec["batch"], spec["in_chans"], spec["image_size"]
    else:
        model = timm.create_model(args.model, pretrained=False, drop_rate=0.0, drop_path_rate=0.0)
        rsjax_kwargs = dict(name=RSJAX_NAMES.get(args.model, args.model))
        batch, channels, size = args.batch, 3, args.image_size
    # The fixtures were written with 8; full models get 32, which keeps deep nets' eval-mode
    # logits near unit scale (tf_efficientnet_b3: |logits| max 2.9 instead of 11).
    calibration_batch = 8 if args.tiny else args.calibration_batch
    calibration = torch.randn(calibration_batch, channels, size, size, generator=generator)
    randomise(model, generator, calibration)
    state_dict = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}

    images = torch.randn(batch, channels, size, size, generator=generator)
    with torch.no_grad():
        model.eval()
        logits_eval = model(images).numpy()
        model.train()  # batch statistics; drop_rate is 0 so no dropout
        logits_train = model(images).numpy()

    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        args.out,
        images_nhwc=images.permute(0, 2, 3, 1).numpy(),
        logits_eval=logits_eval,
        logits_train=logits_train,
        meta=np.array(
            json.dumps(
                dict(
                    rsjax=rsjax_kwargs,
                    timm_version=timm.__version__,
                    torch_version=torch.__version__,
                )
            )
        ),
        **{f"state_dict/{k}": v for k, v in state_dict.items()},
    )
    print(
        f"wrote {args.out}: {len(state_dict)} tensors, logits {logits_eval.shape}, "
        f"|logits| max {np.abs(logits_eval).max():.3f}"
    )


if __name__ == "__main__":
    main()
