"""Shared by the benchmark scripts: timing statistics, JSON lines, the matmul peak, the rsjax step.

Every script prints one JSON object per measurement; spreads are over repeated runs after warmup.
"""

import argparse
import datetime
import json
import os
import pathlib
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from rsjax.models import create_model, get_preset
from rsjax.train import compilation, latency, programs, sharding

_KEEP: list[pathlib.Path] = []  # files that every emitted line is also appended to


def add_out_flag(parser: argparse.ArgumentParser) -> None:
    """`--out FILE.jsonl`: also append every result line to FILE (kept across runs)."""
    parser.add_argument(
        "--out", type=pathlib.Path, help="also append each JSON line to this file, with the "
        "benchmark's name, the UTC time and the rsjax and jax versions",
    )  # fmt: skip


def keep_output(args: argparse.Namespace) -> None:
    """Starts appending emitted lines to `args.out` (when given)."""
    if getattr(args, "out", None):
        args.out.parent.mkdir(parents=True, exist_ok=True)
        _KEEP[:] = [args.out]


def emit(record: dict) -> None:
    """Prints one measurement as a JSON line (and appends it, stamped, to the --out file)."""
    print(json.dumps(record), flush=True)
    if _KEEP:
        import rsjax

        stamp = {
            "benchmark": pathlib.Path(sys.argv[0]).stem,
            "utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "rsjax": rsjax.__version__,
            "jax": jax.__version__,
        }
        with _KEEP[0].open("a") as f:
            f.write(json.dumps({**stamp, **record}) + "\n")


def spread(values: list[float]) -> dict[str, float]:
    """{"median", "min", "max"} of a list of numbers."""
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
    }


def rate(items: int, seconds: list[float]) -> dict[str, float]:
    """Items per second from a list of per-call times (median, min, max over calls)."""
    return spread([items / s for s in seconds])


def time_calls(fn: Callable[[], Any], calls: int) -> list[float]:
    """Wall-clock seconds of `calls` calls of fn (which must block until its result is ready)."""
    seconds = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return seconds


def matmul_peak_gflops(size: int = 2048, calls: int = 5) -> dict[str, float]:
    """fp32 GFLOP/s of a jitted size x size matmul (median, min, max)."""
    a = jnp.asarray(np.random.default_rng(0).standard_normal((size, size)), jnp.float32)
    matmul = jax.jit(jnp.dot)
    matmul(a, a).block_until_ready()
    seconds = time_calls(lambda: matmul(a, a).block_until_ready(), calls)
    return spread([2 * size**3 / s / 1e9 for s in seconds])


def cpu_threads() -> int:
    """Cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


# rsjax preset -> the timm model with the same network, where the names differ.
TIMM_NAMES = {f"efficientnet_b{i}": f"tf_efficientnet_b{i}" for i in range(8)}


def timm_name(preset: str) -> str:
    """The timm model of an rsjax preset (`resnetrs50` -> `resnetrs50`, `efficientnet_b0` ->
    `tf_efficientnet_b0`)."""
    return TIMM_NAMES.get(preset, preset)


def build_model(name: str, **overrides: Any) -> nn.Module:
    """A registry preset with overrides (dropout and drop connect off: timm's models default to
    neither)."""
    off = {"dropout_rate": 0.0}
    if get_preset(name).family == "efficientnet":
        off["drop_connect_rate"] = 0.0
    return create_model(name, **{**off, **overrides})


def train_program(
    model: nn.Module, batch: int, resolution: int, channels: int = 3
) -> programs.Program:
    """The trainer's program (`rsjax.train.programs.build`) for `model` on one device: the
    paper's recipe (Nesterov momentum, weight decay 4e-5, label smoothing 0.1, EMA, the
    warmup-cosine schedule as a traced argument) at `batch` images of `resolution` px."""
    config = programs.model_config(model, resolution, batch, channels)
    return programs.build(config, single_mesh(), (resolution, resolution, channels))


def lower_train_step(
    model: nn.Module, batch: int, resolution: int, channels: int = 3
) -> jax.stages.Lowered:
    """The real train step lowered for abstract inputs (nothing is allocated or initialised)."""
    program = train_program(model, batch, resolution, channels)
    schedule = jax.eval_shape(lambda: program.schedule(latency.nominal_durations(program.config)))
    return program.train_step.lower(program.abstract_state, program.abstract_batch(batch), schedule)


class TrainStep(NamedTuple):
    """A benchmarked train step: `init()` builds the state and runs one step, `step()` runs one
    more and blocks; both call `compiled`, the one executable (read its memory from it)."""

    init: Callable[[], None]
    step: Callable[[], None]
    compiled: jax.stages.Compiled


def make_train_step(model: nn.Module, batch: int, resolution: int, channels: int = 3) -> TrainStep:
    """The trainer's train step (`train_program`: loss with label smoothing, gradients, SGD +
    weight decay, EMA) compiled once, around a fixed random batch."""
    program = train_program(model, batch, resolution, channels)
    schedule = program.schedule(latency.nominal_durations(program.config))
    rng = np.random.default_rng(0)
    data = jax.device_put(
        {
            "images": np.asarray(rng.standard_normal((batch, *program.image_shape)), np.float32),
            "labels": np.asarray(rng.integers(0, model.num_classes, batch), np.int32),
        },
        program.batch_sharding,
    )
    compiled = program.train_step.lower(program.abstract_state_on_mesh(), data, schedule).compile()
    holder: dict[str, Any] = {}

    def init() -> None:
        state, metrics = compiled(program.init(jax.random.key(0)), data, schedule)
        jax.block_until_ready(metrics)
        holder["state"] = state

    def step() -> None:
        holder["state"], metrics = compiled(holder["state"], data, schedule)
        jax.block_until_ready(metrics)

    return TrainStep(init, step, compiled)


def single_mesh() -> jax.sharding.Mesh:
    """A 1 x 1 (data, model) mesh on the first device: what a benchmark measures."""
    return sharding.make_mesh(1, 1)


def make_inference(model: nn.Module, batch: int, resolution: int) -> Callable[[], None]:
    """A blocking closure running the jitted eval-mode forward pass on a fixed batch."""
    variables = jax.jit(
        lambda key: model.init(key, jnp.zeros((1, resolution, resolution, 3)), train=False)
    )(jax.random.key(0))
    images = jnp.asarray(
        np.random.default_rng(1).standard_normal((batch, resolution, resolution, 3)), jnp.float32
    )
    forward = jax.jit(
        lambda v, x: model.apply(v, x, train=False),
        compiler_options=compilation.forward_compiler_options(),
    )

    def infer() -> None:
        forward(variables, images).block_until_ready()

    infer()
    return infer


def log(message: str) -> None:
    """Progress to stderr (stdout carries only JSON lines)."""
    print(message, file=sys.stderr, flush=True)
