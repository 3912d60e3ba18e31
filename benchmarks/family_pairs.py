"""ResNet-RS against EfficientNet at the paper's Table 7 pairings, on this machine, in one run.

For each pair (a ResNet-RS and the EfficientNet of about the same ImageNet accuracy in Table 7:
RS-101 at 160 px vs B2 at 260 px, 80.3% vs 80.1%; RS-152 at 224 px vs B4 at 380 px, 82.8% vs
82.9%) it builds the trainer's train step for both (`rsjax.train.programs`: the ResNet-RS recipe's
loss, gradients, SGD + weight decay and EMA, each model's convolutions as `conv_impl="auto"` runs
them here), compiles it once, reads that executable's XLA peak memory, and times the steps in
alternating rounds. Prints a JSON line per model (step seconds median/min/max, images/s,
compiled peak bytes) and per pair: EfficientNet's step time and memory over ResNet-RS's (> 1:
ResNet-RS is faster / smaller), next to the same latency ratios from the paper's Table 7 (TPUv3
and V100).

The paper times batch 128 halved until it fits; on a small CPU one batch for every model is
chosen instead (--batch, default 4), so the ratios compare equal work per step.

Examples:
  .venv/bin/python benchmarks/family_pairs.py                      # both pairs, batch 4
  .venv/bin/python benchmarks/family_pairs.py --pairs resnetrs101@160:efficientnet_b2@260 \\
      --batch 8 --repeats 7
Run it alone: on 2 cores anything else running skews every number.
"""

import argparse
import sys
import time

from common import (
    add_out_flag,
    build_model,
    emit,
    keep_output,
    log,
    make_train_step,
    spread,
    time_calls,
)

from rsjax import malloc_tuning, paper_tables
from rsjax.train.latency import compiled_peak_bytes

DEFAULT_PAIRS = "resnetrs101@160:efficientnet_b2@260,resnetrs152@224:efficientnet_b4@380"


def parse_pairs(text: str) -> list[tuple[tuple[str, int], tuple[str, int]]]:
    """ "rs@r:eff@r,..." -> [((rs preset, px), (efficientnet preset, px)), ...]."""
    pairs = []
    for item in text.split(","):
        sides = item.split(":")
        if len(sides) != 2:
            raise ValueError(f"a pair is RESNET@PX:EFFICIENTNET@PX, got {item!r}")
        parsed = []
        for side in sides:
            name, _, px = side.partition("@")
            if not px.isdigit():
                raise ValueError(f"a model is PRESET@PX, got {side!r}")
            parsed.append((name, int(px)))
        pairs.append(tuple(parsed))
    return pairs


def table7_row(name: str, resolution: int) -> dict | None:
    """Table 7's row of a preset at a resolution (None if the paper has none)."""
    for row in paper_tables.load("table7_pareto"):
        if row["family"] == "resnet_rs" and name == f"resnetrs{row['depth']}":
            if row["image_resolution"] == resolution:
                return row
        elif (
            row["family"] == "efficientnet" and name == "efficientnet_" + row["model"][-2:].lower()
        ):
            return row
    return None


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pairs", default=DEFAULT_PAIRS, help="RS@PX:EFFICIENTNET@PX,...")
    parser.add_argument("--batch", type=int, default=4, help="train batch of every model")
    parser.add_argument("--repeats", type=int, default=5, help="measured rounds")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured rounds first")
    parser.add_argument(
        "--steps", type=int, default=2, help="consecutive steps per model and round"
    )
    add_out_flag(parser)
    args = parser.parse_args(argv)
    keep_output(args)
    try:
        args.pairs = parse_pairs(args.pairs)
    except ValueError as e:
        parser.error(str(e))
    if min(args.batch, args.repeats, args.steps) < 1:
        parser.error("--batch, --repeats and --steps must be >= 1")
    return args


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    for rs, eff in args.pairs:
        measured = {}
        steps = {}
        for name, resolution in (rs, eff):
            start = time.perf_counter()
            train_step = make_train_step(build_model(name), args.batch, resolution)
            train_step.init()
            elapsed = time.perf_counter() - start
            log(f"{name}@{resolution}: compiled and first step in {elapsed:.0f} s")
            measured[name] = {
                "peak_bytes": compiled_peak_bytes(train_step.compiled),
                "seconds": [],
            }
            steps[name] = train_step.step
        for round_index in range(args.warmup + args.repeats):
            for name, step in steps.items():
                seconds = time_calls(step, args.steps)
                if round_index >= args.warmup:
                    measured[name]["seconds"] += seconds
            log(f"round {round_index + 1}/{args.warmup + args.repeats} done")
        for name, resolution in (rs, eff):
            step_s = spread(measured[name]["seconds"])
            emit(
                {
                    "kind": "model",
                    "name": name,
                    "resolution": resolution,
                    "batch": args.batch,
                    "step_s": step_s,
                    "images_per_s": args.batch / step_s["median"],
                    "compiled_peak_bytes": measured[name]["peak_bytes"],
                }
            )
        rs_row, eff_row = table7_row(*rs), table7_row(*eff)
        rs_name, eff_name = rs[0], eff[0]
        emit(
            {
                "kind": "pair",
                "resnet_rs": f"{rs_name}@{rs[1]}",
                "efficientnet": f"{eff_name}@{eff[1]}",
                "batch": args.batch,
                "latency_ratio": (
                    spread(measured[eff_name]["seconds"])["median"]
                    / spread(measured[rs_name]["seconds"])["median"]
                ),
                "memory_ratio": measured[eff_name]["peak_bytes"] / measured[rs_name]["peak_bytes"],
                "paper_tpuv3_latency_ratio": (
                    eff_row["tpuv3_latency_ms"] / rs_row["tpuv3_latency_ms"]
                    if rs_row and eff_row
                    else None
                ),
                "paper_v100_latency_ratio": (
                    eff_row["v100_latency_s"] / rs_row["v100_latency_s"]
                    if rs_row and eff_row
                    else None
                ),
            }
        )


if __name__ == "__main__":
    malloc_tuning.maybe_reexec()  # as the rsjax command does (RSJAX_MALLOC_TUNING=0: off)
    main(sys.argv[1:])
