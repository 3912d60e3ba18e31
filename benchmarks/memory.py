"""Compiled memory of the rsjax train step per depth, batch and remat policy (no execution).

XLA's `memory_analysis()` of the compiled train step: arguments, outputs, aliased (donated)
bytes and temporaries; `peak_bytes` = arguments + outputs - aliased + temporaries. One JSON line
per (depth, batch, remat) and, per (depth, batch), the saving of each policy against "none".

Examples:
  .venv/bin/python benchmarks/memory.py                                  # RS-152, 224 px
  .venv/bin/python benchmarks/memory.py --depths=50,152 --batches=8,32 --remat=none,full,dots
"""

import argparse
import sys

from common import add_out_flag, build_model, emit, keep_output, log, lower_train_step

from rsjax import malloc_tuning
from rsjax.models import BLOCK_LAYOUTS
from rsjax.models.resnet_rs import REMAT_POLICIES


def compiled_memory(depth: int, batch: int, resolution: int, remat: str, scan: bool) -> dict:
    model = build_model(f"resnetrs{depth}", remat=remat, scan_blocks=scan)
    analysis = lower_train_step(model, batch, resolution).compile().memory_analysis()
    record = {
        "argument_bytes": analysis.argument_size_in_bytes,
        "output_bytes": analysis.output_size_in_bytes,
        "alias_bytes": analysis.alias_size_in_bytes,
        "temp_bytes": analysis.temp_size_in_bytes,
    }
    record["peak_bytes"] = (
        record["argument_bytes"]
        + record["output_bytes"]
        - record["alias_bytes"]
        + record["temp_bytes"]
    )
    return record


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--depths", default="152")
    parser.add_argument("--batches", default="8")
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--remat", default="none,full,dots", help="remat policies to compare")
    parser.add_argument("--scan_blocks", action="store_true", help="scan identical blocks")
    add_out_flag(parser)
    args = parser.parse_args(argv)
    keep_output(args)
    args.depths = [int(d) for d in args.depths.split(",")]
    args.batches = [int(b) for b in args.batches.split(",")]
    args.remat = args.remat.split(",")
    if bad := [d for d in args.depths if d not in BLOCK_LAYOUTS]:
        parser.error(f"unknown depths {bad}; known: {sorted(BLOCK_LAYOUTS)}")
    if bad := [r for r in args.remat if r not in REMAT_POLICIES]:
        parser.error(f"unknown remat policies {bad}; known: {sorted(REMAT_POLICIES)}")
    return args


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    for depth in args.depths:
        for batch in args.batches:
            peaks = {}
            for remat in args.remat:
                record = compiled_memory(depth, batch, args.resolution, remat, args.scan_blocks)
                peaks[remat] = record["peak_bytes"]
                log(
                    f"RS-{depth} batch {batch} remat={remat}: peak "
                    f"{record['peak_bytes'] / 2**30:.2f} GiB"
                )
                emit(
                    {
                        "kind": "memory",
                        "depth": depth,
                        "batch": batch,
                        "resolution": args.resolution,
                        "remat": remat,
                        "scan_blocks": args.scan_blocks,
                        **record,
                    }
                )
            if "none" in peaks:
                emit(
                    {
                        "kind": "summary",
                        "depth": depth,
                        "batch": batch,
                        "peak_saving": {r: 1 - p / peaks["none"] for r, p in peaks.items()},
                    }
                )


if __name__ == "__main__":
    malloc_tuning.maybe_reexec()  # as the rsjax command does (RSJAX_MALLOC_TUNING=0: off)
    main(sys.argv[1:])
