"""The `rsjax` command line.

Examples:
  rsjax models                      # the zoo: layouts, params and FLOPs beside the paper's Table 7
  rsjax models --widths --xla       # also width-scaled presets, and XLA's FLOP count
  rsjax train --config rsjax/configs/fashion_mnist.py --workdir /tmp/fmnist
  rsjax train --help                # training flags and more examples
"""

import argparse
import dataclasses
import json
import os
import pathlib
import sys
from collections.abc import Sequence

TRAIN_USAGE = """usage: rsjax train --config FILE[:PRESET] --workdir DIR [--config.KEY=VALUE ...]

Train (and evaluate) one ResNet-RS run; rerunning the same command resumes from the workdir's
last checkpoint. CONFIG_FILE is a config file path, or the name of a bundled config
(fashion_mnist, imagenet). Every config key can be overridden; unknown keys are errors.

Examples:
  rsjax train --config rsjax/configs/fashion_mnist.py --workdir /tmp/fmnist
  rsjax train --config fashion_mnist:long --workdir /tmp/fmnist_long
  rsjax train --config fashion_mnist:tiny --workdir /tmp/t --config.num_train_steps=50
  rsjax train --config imagenet:resnetrs50_i160 --workdir gs://BUCKET/rs50 \\
      --config.data.data_dir=gs://BUCKET/tensorflow_datasets --jax_distributed

Flags:
  --config FILE[:PRESET]   config file (get_config(PRESET) -> ConfigDict)
  --config.KEY=VALUE       override one config value (e.g. --config.num_epochs=2)
  --workdir DIR            checkpoints, metrics.jsonl, TensorBoard events and result.json
                           (a local path or gs:// URL)
  --jax_distributed        call jax.distributed.initialize() first (multi-host TPU pods)
"""


def _models(args: argparse.Namespace) -> int:
    from rsjax import models, zoo

    names = None
    if args.names:
        names = args.names
        for name in names:
            models.get_preset(name)  # unknown names fail before any tracing
    elif args.widths:
        names = models.list_models(include_widths=True)
    rows = zoo.zoo_rows(names, extra_table7=not args.names, xla=args.xla)
    if args.json:
        for row in rows:
            print(json.dumps({**dataclasses.asdict(row), "flops_ratio": row.flops_ratio}))
    else:
        print(zoo.format_rows(rows))
        print(
            "\nparams: trainable (BN statistics excluded); GFLOPs: 2 x multiply-adds per image "
            "at `res`, padding taps included; Table7: the paper's values (Bello et al., 2021)."
        )
    return 0


def _resolve_config_path(value: str) -> str:
    """'fashion_mnist:long' -> '<package>/configs/fashion_mnist.py:long' when not a path."""
    path, _, preset = value.partition(":")
    if not os.path.exists(path):
        bundled = pathlib.Path(__file__).parent / "configs" / f"{pathlib.Path(path).stem}.py"
        if bundled.exists() and bundled.stem not in ("__init__", "base"):
            path = str(bundled)
    return f"{path}:{preset}" if preset else path


def train_main(argv: Sequence[str]) -> int:
    """`rsjax train`: parses absl/ml_collections flags and runs `train_and_evaluate`."""
    argv = list(argv)
    if not argv or any(a in ("-h", "--help", "--helpfull") for a in argv):
        print(TRAIN_USAGE)
        return 0
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            argv[i + 1] = _resolve_config_path(argv[i + 1])
        elif arg.startswith("--config="):
            argv[i] = "--config=" + _resolve_config_path(arg.split("=", 1)[1])

    from absl import flags
    from ml_collections import config_flags

    flag_values = flags.FlagValues()
    config_flags.DEFINE_config_file(
        "config", None, "config file", flag_values=flag_values, lock_config=True
    )
    flags.DEFINE_string("workdir", None, "run directory", flag_values=flag_values)
    flags.DEFINE_bool(
        "jax_distributed", False, "jax.distributed.initialize()", flag_values=flag_values
    )
    try:
        flag_values(["rsjax train", *argv])
    except (flags.Error, KeyError, AttributeError, ValueError, TypeError) as e:
        print(f"rsjax train: error: {e}", file=sys.stderr)
        return 2
    if flag_values.config is None or not flag_values.workdir:
        print(
            "rsjax train: error: --config and --workdir are required (see --help)", file=sys.stderr
        )
        return 2
    if flag_values.jax_distributed:
        import jax

        jax.distributed.initialize()
    from rsjax.train import train_and_evaluate

    train_and_evaluate(flag_values.config, flag_values.workdir)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rsjax", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "models",
        help="print the model zoo (layouts, params, FLOPs, Table 7)",
        description="Print every ResNet-RS preset with its stage sizes, trainable parameters and "
        "FLOPs per image at its training resolution, beside the paper's Table 7 values.\n\n"
        "Examples:\n  rsjax models\n  rsjax models resnetrs50 resnetrs101_w0p5 --xla\n"
        "  rsjax models --widths --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("names", nargs="*", help="presets to show (default: all depth presets)")
    p.add_argument("--widths", action="store_true", help="include width-scaled presets")
    p.add_argument("--xla", action="store_true", help="add XLA's cost-analysis FLOPs (slower)")
    p.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    p.set_defaults(func=_models)

    sub.add_parser(
        "train", help="train and evaluate one run (see rsjax train --help)", add_help=False
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "train":
        try:
            return train_main(argv[1:])
        except (ValueError, FileNotFoundError) as e:
            print(f"rsjax train: error: {e}", file=sys.stderr)
            return 2
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ValueError as e:
        print(f"rsjax {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
