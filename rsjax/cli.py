"""The `rsjax` command line.

Examples:
  rsjax models                      # the zoo: layouts, params and FLOPs beside the paper's Table 7
  rsjax models --widths --xla       # also width-scaled presets, and XLA's FLOP count
  rsjax train --config rsjax/configs/fashion_mnist.py --workdir /tmp/fmnist
  rsjax train --help                # training flags and more examples
  rsjax profile --config imagenet:resnetrs50_i160        # Appendix H latency, memory, FLOPs
  rsjax sweep plan sweeps/paper_fig3.py                  # a study's runs as a table
  rsjax sweep launch sweeps/fmnist_fig3.py --workdir runs/fig3 --launcher local
  rsjax sweep status runs/fig3
  rsjax results collect runs/fig3 -o results.csv         # one table of every result.json
  rsjax results report results.csv                       # which axis to scale, per regime
  rsjax plot fig3 results.csv --out figures              # fig2 | fig3 | fig4 | table7
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
    _add_profile_parser(sub)
    _add_sweep_parsers(sub)
    from rsjax.analysis import commands as analysis_commands

    analysis_commands.add_parsers(sub)
    return parser


def _add_profile_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "profile",
        help="training-step latency, memory, FLOPs and params of a config (Appendix H)",
        description="Time the real train step of a config on random data (median over --steps "
        "after --warmup), starting at --batch_per_device per data-axis device and halving on "
        "out-of-memory, normalised to the starting batch; also compiled peak memory, FLOPs per "
        "image and parameters. Prints JSON; --workdir also writes result.json (status "
        "profiled).\n\nExamples:\n  rsjax profile --config imagenet:resnetrs50_i160\n"
        "  rsjax profile --config fashion_mnist --batch_per_device 256 --steps 20\n"
        "  rsjax profile --config imagenet:resnetrs50_i160 --set model.depth=101 "
        "--set data.image_size=192",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", required=True, help="bundled config[:preset], e.g. fashion_mnist")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="override a config value (JSON value or string); repeatable",
    )  # fmt: skip
    p.add_argument("--batch_per_device", type=int, default=128)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--workdir", help="also write WORKDIR/result.json with the profile")
    p.set_defaults(func=_profile)


def _profile(args: argparse.Namespace) -> int:
    from rsjax.sweep.grid import apply_overrides, load_base
    from rsjax.train import profile_run

    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set wants KEY=VALUE, got {item!r}.")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    config = apply_overrides(load_base(args.config), overrides)
    record = profile_run(
        config,
        args.workdir,
        batch_per_device=args.batch_per_device,
        steps=args.steps,
        warmup=args.warmup,
    )
    print(json.dumps({"model": record["model"], "profile": record["profile"]}, indent=2))
    return 0


def _add_sweep_parsers(sub: argparse._SubParsersAction) -> None:
    from rsjax.sweep import commands

    sweep = sub.add_parser(
        "sweep",
        help="plan, launch and follow a study's grid of runs",
        description="Sweeps are Python files with get_sweep() -> list[Run] (see sweeps/).\n\n"
        "Examples:\n  rsjax sweep plan sweeps/paper_fig3.py\n"
        "  rsjax sweep plan sweeps/paper_table7.py --jsonl\n"
        "  rsjax sweep launch sweeps/fmnist_fig3.py --workdir runs/fig3 --launcher local\n"
        "  rsjax sweep launch sweeps/paper_fig3.py --workdir gs://B/fig3 --launcher tpu-vm \\\n"
        "      --project P --zone us-central2-b --accelerator_type v4-32 --spot --dry_run\n"
        "  rsjax sweep status runs/fig3",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = sweep.add_subparsers(dest="sweep_command", required=True, metavar="ACTION")

    plan = actions.add_parser("plan", help="print the runs of a sweep file")
    plan.add_argument("sweep_file")
    plan.add_argument("--jsonl", action="store_true", help="one JSON object per run")
    plan.add_argument("--only", help="runs whose name matches this glob")
    plan.set_defaults(func=commands.plan)

    launch = actions.add_parser(
        "launch",
        help="run every run that is not complete (relaunch-safe)",
        description="Run a sweep. A relaunch skips complete runs, resumes partial ones from "
        "their checkpoints and never trains a run that another launcher holds.",
    )
    launch.add_argument("sweep_file")
    launch.add_argument("--workdir", required=True, help="one subdirectory per run")
    launch.add_argument("--launcher", choices=("local", "tpu-vm"), default="local")
    launch.add_argument("--parallel", type=int, default=1, help="local: runs at once")
    launch.add_argument("--only", help="runs whose name matches this glob")
    launch.add_argument("--profile_only", action="store_true", help="profile, do not train")
    tpu = launch.add_argument_group("tpu-vm launcher")
    tpu.add_argument("--project")
    tpu.add_argument("--zone")
    tpu.add_argument("--accelerator_type", help="e.g. v4-32")
    tpu.add_argument("--runtime_version", default="tpu-ubuntu2204-base")
    tpu.add_argument("--spot", action="store_true")
    tpu.add_argument("--install", default="rsjax", help="pip requirement installing rsjax")
    tpu.add_argument("--create_retries", type=int, default=2)
    tpu.add_argument("--dry_run", action="store_true", help="print the gcloud commands only")
    launch.set_defaults(func=commands.launch)

    status = actions.add_parser("status", help="complete / running / failed / pending runs")
    status.add_argument("workdir")
    status.add_argument("--all", action="store_true", help="list every run, not only problems")
    status.set_defaults(func=commands.status)


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:  # the command itself, not a call from Python
        from rsjax import malloc_tuning

        malloc_tuning.maybe_reexec()
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
    except (ValueError, TypeError, FileNotFoundError) as e:
        print(f"rsjax {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
