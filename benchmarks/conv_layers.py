"""Where a ResNet-RS step's convolution time goes: every conv layer, forward + backward or forward.

For each distinct convolution of the model (input shape, kernel, stride; counted by how often it
occurs), times value-and-gradients (y, dx, dW from a given dy; `--mode train`) or the output
alone (`--mode infer`) for each implementation in `rsjax.models.conv`, and sums the times per
layer group (stem, c2..c5) weighted by the count. Prints one JSON line per (layer, impl) and one
per (group, impl), then the totals.

Examples:
  .venv/bin/python benchmarks/conv_layers.py                      # RS-50, bs16, 160 px
  .venv/bin/python benchmarks/conv_layers.py --impls=xla,matmul --repeats=7
  .venv/bin/python benchmarks/conv_layers.py --mode infer --batch 32   # inference forward
  .venv/bin/python benchmarks/conv_layers.py --batch 128 --resolution 32 --channels 1 \
      --stage_sizes 1,1,1,1 --width 0.25          # the Fashion-MNIST default network
Run it alone: on 2 cores anything else running skews every number.
"""

import argparse
import collections
import statistics

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from common import add_out_flag, build_model, emit, keep_output, log, spread, time_calls

from rsjax import malloc_tuning
from rsjax.models import conv as conv_lib
from rsjax.models import layers

ConvShape = tuple[tuple[int, ...], tuple[int, ...], int]  # (x shape, kernel shape, stride)


def conv_shapes(model, batch: int, resolution: int, channels: int) -> list[tuple[str, ConvShape]]:
    """(layer group, shape) of every convolution the model applies, in call order; the group is
    the top-level module ("stem", "c2".."c5")."""
    found = []

    def record(next_fun, args, kwargs, context):
        if isinstance(context.module, layers.Conv) and context.method_name == "__call__":
            x = args[0]
            k = context.module.kernel_size
            kernel = (k, k, x.shape[-1], context.module.features)
            group = context.module.path[0].split("_")[0]
            found.append((group, (tuple(x.shape), kernel, context.module.stride)))
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        jax.eval_shape(
            lambda: model.init(
                jax.random.key(0), jnp.zeros((batch, resolution, resolution, channels)), train=False
            )
        )
    return found


def time_layer(shape: ConvShape, impl: str, repeats: int, mode: str = "train") -> list[float]:
    """Seconds per call of one convolution: y, dx and dW ("train") or y alone ("infer")."""
    x_shape, k_shape, stride = shape
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal(x_shape), jnp.float32)
    kernel = jnp.asarray(rng.standard_normal(k_shape) * 0.05, jnp.float32)

    @jax.jit
    def value_and_grads(x, kernel):
        y, vjp = jax.vjp(lambda a, b: conv_lib.conv2d(a, b, stride, impl), x, kernel)
        return (y, *vjp(y))

    run = value_and_grads if mode == "train" else jax.jit(conv_lib.conv2d, static_argnums=(2, 3))
    args = (x, kernel) if mode == "train" else (x, kernel, stride, impl)
    jax.block_until_ready(run(*args))
    return time_calls(lambda: jax.block_until_ready(run(*args)), repeats)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="resnetrs50")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--resolution", type=int, default=160)
    parser.add_argument("--width", type=float, default=0.0, help="width multiplier override")
    parser.add_argument("--stage_sizes", default="", help="blocks per stage, e.g. 1,1,1,1")
    parser.add_argument("--channels", type=int, default=3, help="input image channels")
    parser.add_argument("--impls", default=",".join(conv_lib.CONCRETE_CONV_IMPLS))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--mode", choices=("train", "infer"), default="train", help="y, dx, dW or y alone"
    )
    add_out_flag(parser)
    args = parser.parse_args()
    keep_output(args)
    impls = args.impls.split(",")
    for impl in impls:
        conv_lib.resolve_impl(impl)  # bad names fail before any compilation

    overrides = {}
    if args.width:
        overrides["width_multiplier"] = args.width
    if args.stage_sizes:
        overrides["stage_sizes"] = tuple(int(n) for n in args.stage_sizes.split(","))
    model = build_model(args.model, **overrides)
    shapes = collections.Counter(conv_shapes(model, args.batch, args.resolution, args.channels))
    log(f"{sum(shapes.values())} convolutions, {len(shapes)} distinct shapes")
    totals = collections.defaultdict(float)
    for (group, shape), count in shapes.items():
        x_shape, k_shape, stride = shape
        passes = 3 if args.mode == "train" else 1
        gflop = passes * 2 * np.prod(x_shape[:3]) / stride**2 * np.prod(k_shape) / 1e9
        for impl in impls:
            seconds = time_layer(shape, impl, args.repeats, args.mode)
            median = statistics.median(seconds)
            totals[(group, impl)] += count * median
            emit(
                {
                    "kind": "layer",
                    "group": group,
                    "x": list(x_shape),
                    "kernel": list(k_shape),
                    "stride": stride,
                    "count": count,
                    "impl": impl,
                    "mode": args.mode,
                    "ms": {k: v * 1e3 for k, v in spread(seconds).items()},
                    "gflop_per_s": gflop / median,
                }
            )
    for impl in impls:
        for group in sorted({g for g, _ in totals}):
            emit({"kind": "group", "group": group, "impl": impl, "ms": totals[(group, impl)] * 1e3})
        total = sum(v for (g, i), v in totals.items() if i == impl)
        emit({"kind": "total", "impl": impl, "ms": total * 1e3})


if __name__ == "__main__":
    malloc_tuning.maybe_reexec()  # as the rsjax command does (RSJAX_MALLOC_TUNING=0: off)
    main()
