"""rsjax's train step and inference (ResNet-RS or EfficientNet) against timm's, alternating in
one run.

Measures, per round and in turn: the trainer's train step (`rsjax.train.programs`: loss,
gradients, SGD + weight decay, EMA) for each convolution implementation, rsjax inference, and
timm's train step (forward, backward, SGD) and inference with the same batch, resolution and
threads (timm runs in the reference venv as a subprocess: `benchmarks/timm_worker.py`; each
framework on the host allocator that is fastest for it, see `TIMM_GLIBC_TUNABLES`). Each
contender runs --steps consecutive calls per round, as training does; the rounds alternate so
that drifts of the machine hit every contender alike. Prints one JSON line per measurement
(images/s median, min, max over all calls; the same over only the first call of each block,
which pays for the switch from the other process; achieved GFLOP/s with train = 3 x forward
2xMACs; fraction of the measured matmul peak) and a summary: ratios of the medians, and ratios
taken within each round (median, min, max over the rounds).

Examples:
  .venv/bin/python benchmarks/train_step.py                       # RS-50, bs16, 160 px
  .venv/bin/python benchmarks/train_step.py --conv_impls=matmul,xla --repeats=7
  .venv/bin/python benchmarks/train_step.py --timm_python=          # rsjax only
  .venv/bin/python benchmarks/train_step.py --model efficientnet_b0 --resolution 224 \
      --batch 16 --conv_impls=matmul,xla                             # vs tf_efficientnet_b0
Run it alone: on 2 cores anything else running skews every number.
"""

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time

from common import (
    add_out_flag,
    build_model,
    cpu_threads,
    emit,
    keep_output,
    log,
    make_inference,
    make_train_step,
    matmul_peak_gflops,
    rate,
    spread,
    time_calls,
    timm_name,
)

from rsjax import malloc_tuning
from rsjax.profiling import flops_per_image

REPO = pathlib.Path(__file__).resolve().parent.parent


# timm's allocator: glibc keeping its memory, the fastest of four settings measured for timm on
# this CPU (jemalloc, rsjax's allocator, would slow timm down); the numbers: docs/host_memory.md.
TIMM_GLIBC_TUNABLES = ":".join(
    [
        "glibc.malloc.hugetlb=1",
        "glibc.malloc.arena_max=1",
        "glibc.malloc.mmap_max=0",
        f"glibc.malloc.trim_threshold={64 << 30}",
    ]
)


def timm_environment(environ: dict[str, str]) -> dict[str, str]:
    """`environ` with timm's allocator settings in place of rsjax's."""
    preload = " ".join(p for p in environ.get("LD_PRELOAD", "").split() if "jemalloc" not in p)
    timm_env = {k: v for k, v in environ.items() if k not in ("LD_PRELOAD", "MALLOC_CONF")}
    return {
        **timm_env,
        **({"LD_PRELOAD": preload} if preload else {}),
        "GLIBC_TUNABLES": TIMM_GLIBC_TUNABLES,
    }


class TimmWorker:
    """timm in the reference venv, one JSON request per line, on its own best allocator."""

    def __init__(self, python: str, **setup: object) -> None:
        self.process = subprocess.Popen(
            [python, str(REPO / "benchmarks" / "timm_worker.py")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=timm_environment(dict(os.environ)),
        )
        self.versions = self.request(op="setup", **setup)

    def request(self, **message: object) -> dict:
        self.process.stdin.write(json.dumps(message) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("the timm worker exited; run `make .venv-ref/.installed` first")
        return json.loads(line)

    def seconds(self, op: str, steps: int) -> list[float]:
        return self.request(op=op, steps=steps)["seconds"]

    def close(self) -> None:
        self.process.stdin.write(json.dumps({"op": "quit"}) + "\n")
        self.process.stdin.close()
        self.process.wait(timeout=60)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model",
        default="resnetrs50",
        help="rsjax preset; timm runs the same network (efficientnet_b0: tf_efficientnet_b0)",
    )
    parser.add_argument("--batch", type=int, default=16, help="train batch")
    parser.add_argument("--infer_batch", type=int, default=32, help="inference batch")
    parser.add_argument("--resolution", type=int, default=160, help="image side in pixels")
    parser.add_argument("--repeats", type=int, default=5, help="measured rounds (>= 5)")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured rounds first")
    parser.add_argument(
        "--steps", type=int, default=3, help="consecutive calls per contender and kind per round"
    )
    parser.add_argument(
        "--conv_impls", default="matmul,xla", help="rsjax convolution implementations to time"
    )
    parser.add_argument(
        "--timm_python",
        default=str(REPO / ".venv-ref" / "bin" / "python"),
        help="python of the torch + timm venv; empty to skip timm",
    )
    add_out_flag(parser)
    args = parser.parse_args(argv)
    keep_output(args)
    if min(args.repeats, args.batch, args.infer_batch, args.steps) < 1:
        parser.error("--repeats, --batch, --infer_batch and --steps must be >= 1")
    if args.timm_python and not pathlib.Path(args.timm_python).exists():
        parser.error(f"{args.timm_python} does not exist: run `make .venv-ref/.installed`")
    return args


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    threads = cpu_threads()
    common = dict(batch=args.batch, resolution=args.resolution, threads=threads)
    peak_gflops = matmul_peak_gflops()
    emit({"kind": "matmul_peak", "gflops": peak_gflops, "threads": threads})
    peak = peak_gflops["median"]

    forward_flops = flops_per_image(build_model(args.model), args.resolution)
    # name -> {"train": fn, "infer": fn}; fn(n) runs n consecutive calls, returns their seconds.
    contenders = {}
    for impl in [i for i in args.conv_impls.split(",") if i]:
        model = build_model(args.model, conv_impl=impl)
        start = time.perf_counter()
        init, step, _ = make_train_step(model, args.batch, args.resolution)
        init()
        log(f"rsjax[{impl}]: compile, state and first step {time.perf_counter() - start:.1f} s")
        infer = make_inference(model, args.infer_batch, args.resolution)
        contenders[f"rsjax[{impl}]"] = {
            "train": lambda n, fn=step: time_calls(fn, n),
            "infer": lambda n, fn=infer: time_calls(fn, n),
        }
    worker = None
    if args.timm_python:
        worker = TimmWorker(
            args.timm_python, model=timm_name(args.model), infer_batch=args.infer_batch, **common
        )
        contenders["timm"] = {  # timed inside the worker, without the pipe
            "train": lambda n: worker.seconds("train", n),
            "infer": lambda n: worker.seconds("infer", n),
        }

    seconds = {(name, kind): [] for name in contenders for kind in ("train", "infer")}
    for round_index in range(args.warmup + args.repeats):
        for name, fns in contenders.items():
            for kind, fn in fns.items():
                measured = fn(args.steps)
                if round_index >= args.warmup:
                    seconds[name, kind].append(measured)
        log(f"round {round_index + 1}/{args.warmup + args.repeats} done")
    if worker:
        worker.close()

    summary = {}
    for (name, kind), blocks in seconds.items():
        batch = args.batch if kind == "train" else args.infer_batch
        images_per_s = rate(batch, [t for block in blocks for t in block])
        flops = (3 if kind == "train" else 1) * forward_flops
        gflops = images_per_s["median"] * flops / 1e9
        emit(
            {
                "kind": kind,
                "name": name,
                "model": args.model,
                "batch": batch,
                "resolution": args.resolution,
                "images_per_s": images_per_s,
                # The first call of each block, right after another contender ran.
                "images_per_s_first_of_block": rate(batch, [block[0] for block in blocks]),
                "gflops": gflops,
                "peak_fraction": gflops / peak,
                "versions": worker.versions if (worker and name == "timm") else None,
            }
        )
        summary[name, kind] = images_per_s["median"]
    ratios = {
        f"{name}/timm {kind}": value / summary["timm", kind]
        for (name, kind), value in summary.items()
        if name != "timm" and ("timm", kind) in summary
    }
    emit(
        {
            "kind": "summary",
            "matmul_peak_gflops": peak,
            "ratios": ratios,
            "ratios_within_rounds": round_ratios(seconds),
        }
    )


def round_ratios(seconds: dict[tuple[str, str], list[list[float]]]) -> dict[str, dict]:
    """Speed ratios against timm taken within each round (median call time of timm's block over
    that of the contender's block), then their median, min and max over the rounds. Neighbouring
    blocks share the machine's state, so these ratios drift less than a ratio of medians."""
    ratios = {}
    for (name, kind), blocks in seconds.items():
        reference = seconds.get(("timm", kind))
        if name == "timm" or not reference:
            continue
        ratios[f"{name}/timm {kind}"] = spread(
            [
                statistics.median(theirs) / statistics.median(ours)
                for ours, theirs in zip(blocks, reference, strict=True)
            ]
        )
    return ratios


if __name__ == "__main__":
    malloc_tuning.maybe_reexec()  # as the rsjax command does (RSJAX_MALLOC_TUNING=0: off)
    main(sys.argv[1:])
