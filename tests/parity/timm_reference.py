"""Writes a timm ResNet-RS reference (state dict, inputs, eval and train logits) to an .npz file.

Runs in the reference environment only (`make .venv-ref`: torch + timm), never in the rsjax one;
the rsjax side reads the file in `tests/test_timm_parity.py`. BatchNorm parameters are randomised
and its statistics measured on a calibration batch first (timm zero-initialises the last BN of
each block, which would hide the residual branches from the comparison).

Examples:
  .venv-ref/bin/python tests/parity/timm_reference.py --model resnetrs50 --out /tmp/rs50.npz
  .venv-ref/bin/python tests/parity/timm_reference.py --tiny \
      --out tests/fixtures/timm_tiny_resnetrs.npz
  .venv-ref/bin/python tests/parity/timm_reference.py --tiny tiny_scan \
      --out tests/fixtures/timm_tiny_scan_resnetrs.npz
"""

import argparse
import json
import pathlib
from functools import partial

import numpy as np
import timm
import torch
from timm.layers import get_attn
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
TINY_MODELS = {"tiny": TINY, "tiny_scan": TINY_SCAN}


def build_tiny(spec: dict = TINY) -> torch.nn.Module:
    return ResNet(
        block=Bottleneck,
        stem_type="deep",
        replace_stem_pool=True,
        avg_down=True,
        block_args=dict(attn_layer=partial(get_attn("se"), rd_ratio=0.25)),
        in_chans=spec["in_chans"],
        **spec["timm"],
    )


def randomise(
    model: torch.nn.Module, generator: torch.Generator, calibration: torch.Tensor
) -> None:
    """Random BN affine parameters, then running statistics measured on a calibration batch.

    Conv/linear weights keep timm's init. The last BN of each residual branch (zero-initialised by
    timm) gets a small random gamma, as in trained networks, so that deep presets keep bounded
    activations; running statistics from a real forward pass keep eval mode well-conditioned
    (random statistics would blow activations up exponentially with depth).
    """
    last_bns = {m for name, m in model.named_modules() if name.endswith("bn3")}
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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model", default="resnetrs50", help="timm model name (ignored with --tiny)"
    )
    parser.add_argument(
        "--tiny", nargs="?", const="tiny", choices=sorted(TINY_MODELS),
        help="a small fixture model instead (tiny: layout 2-1-1-1; tiny_scan: 1-3-1-1)",
    )  # fmt: skip
    parser.add_argument("--image-size", type=int, default=160)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
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
        model = timm.create_model(args.model, pretrained=False, drop_rate=0.0)
        rsjax_kwargs = dict(name=args.model)
        batch, channels, size = args.batch, 3, args.image_size
    calibration = torch.randn(8, channels, size, size, generator=generator)
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
