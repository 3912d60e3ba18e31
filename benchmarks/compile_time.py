"""Lower and compile times of the rsjax train step per depth, unrolled and with scan_blocks.

For each depth: the trainer's train step (`rsjax.train.programs`) is lowered for abstract
inputs (no initialisation) and compiled, unrolled and with `scan_blocks=True`; one JSON line per
(depth, layout) with seconds (median, min, max over --repeats fresh compiles: jax's caches are
cleared between repeats).

Examples:
  .venv/bin/python benchmarks/compile_time.py                            # RS-50 and RS-420
  .venv/bin/python benchmarks/compile_time.py --depths=50,152 --resolution=224 --repeats=3
Run it alone: on 2 cores anything else running skews every number.
"""

import argparse
import sys
import time

import jax
from common import add_out_flag, build_model, emit, keep_output, log, lower_train_step, spread

from rsjax import malloc_tuning
from rsjax.models import BLOCK_LAYOUTS

# The resolution each depth is trained at in Table 8 (largest), used when --resolution is 0.
TABLE8_RESOLUTION = {50: 160, 101: 192, 152: 256, 200: 256, 270: 256, 350: 320, 420: 320}


def measure(depth: int, scan: bool, batch: int, resolution: int) -> tuple[float, float]:
    """(lower seconds, compile seconds) of one fresh train step."""
    jax.clear_caches()
    model = build_model(f"resnetrs{depth}", scan_blocks=scan)
    start = time.perf_counter()
    lowered = lower_train_step(model, batch, resolution)
    lowered_at = time.perf_counter()
    lowered.compile()
    return lowered_at - start, time.perf_counter() - lowered_at


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--depths", default="50,420", help="comma-separated ResNet-RS depths")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument(
        "--resolution", type=int, default=0, help="pixels; 0 uses each depth's Table 8 size"
    )
    parser.add_argument("--repeats", type=int, default=1, help="fresh compiles per setting")
    parser.add_argument("--layouts", default="scan,unrolled", help="scan and/or unrolled")
    add_out_flag(parser)
    args = parser.parse_args(argv)
    keep_output(args)
    depths = [int(d) for d in args.depths.split(",")]
    unknown = [d for d in depths if d not in BLOCK_LAYOUTS]
    if unknown:
        parser.error(f"unknown depths {unknown}; known: {sorted(BLOCK_LAYOUTS)}")
    args.depths = depths
    return args


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    for depth in args.depths:
        resolution = args.resolution or TABLE8_RESOLUTION.get(depth, 224)
        for layout in args.layouts.split(","):
            lower_s, compile_s = [], []
            for _ in range(args.repeats):
                lowered, compiled = measure(depth, layout == "scan", args.batch, resolution)
                lower_s.append(lowered)
                compile_s.append(compiled)
            total = [a + b for a, b in zip(lower_s, compile_s, strict=True)]
            log(
                f"RS-{depth} {layout} @{resolution}: lower {lower_s[-1]:.1f} s, "
                f"compile {compile_s[-1]:.1f} s"
            )
            emit(
                {
                    "kind": "compile_time",
                    "depth": depth,
                    "layout": layout,
                    "batch": args.batch,
                    "resolution": resolution,
                    "lower_s": spread(lower_s),
                    "compile_s": spread(compile_s),
                    "total_s": spread(total),
                }
            )


if __name__ == "__main__":
    malloc_tuning.maybe_reexec()  # as the rsjax command does (RSJAX_MALLOC_TUNING=0: off)
    main(sys.argv[1:])
