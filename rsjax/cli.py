"""The `rsjax` command line.

Examples:
  rsjax models                      # the zoo: layouts, params and FLOPs beside the paper's Table 7
  rsjax models --widths --xla       # also width-scaled presets, and XLA's FLOP count
  rsjax train --config rsjax/configs/fashion_mnist.py --workdir /tmp/fmnist
  rsjax train --help                # training flags and more examples
  rsjax profile --config imagenet:resnetrs50_i160        # Appendix H latency, memory, FLOPs
  rsjax profile --config fashion_mnist --config.model.width_multiplier=0.5
  rsjax sweep plan sweeps/paper_fig3.py                  # a study's runs as a table
  rsjax sweep launch sweeps/fmnist_fig3.py --workdir runs/fig3 --launcher local
  rsjax sweep status runs/fig3
  rsjax results collect runs/fig3 -o results.csv         # one table of every result.json
  rsjax results report results.csv                       # which axis to scale, per regime
  rsjax plot fig3 results.csv --out figures              # fig2 | fig3 | fig4 | table7
  rsjax results select runs/grid                         # a fine-tuning grid, by validation
  rsjax pseudo-label --teacher runs/t --split 'train[10%:]' --out runs/pl   # Noisy Student
  rsjax predict --run runs/t --split test --out preds.npz     # a run's predictions on a split
"""

import argparse
import dataclasses
import importlib
import json
import os
import pathlib
import sys
from collections.abc import Callable, Sequence

from rsjax import extras, paper_tables
from rsjax.errors import UsageError, first_line

FIGURES = ("fig2", "fig3", "fig4", "table7")
# The pip extra each command needs beyond the models (`rsjax models` needs none).
EXTRA_OF_COMMAND = {
    "train": "train",
    "profile": "train",
    "sweep": "train",
    "pseudo-label": "train",
    "predict": "train",
    "results": "analysis",
    "plot": "analysis",
}

TRAIN_USAGE = """usage: rsjax train --config FILE[:PRESET] --workdir DIR [--config.KEY=VALUE ...]

Train (and evaluate) one run of a ResNet-RS, an EfficientNet or a 3D ResNet for video
(`model.family`); rerunning the same command resumes from the workdir's last checkpoint.
CONFIG_FILE is a config file path, or the name of a bundled config (fashion_mnist, imagenet,
video). Every config key can be overridden; unknown keys are errors.

Examples:
  rsjax train --config rsjax/configs/fashion_mnist.py --workdir /tmp/fmnist
  rsjax train --config fashion_mnist:long --workdir /tmp/fmnist_long
  rsjax train --config fashion_mnist:tiny --workdir /tmp/t --config.num_train_steps=50
  rsjax train --config fashion_mnist:efficientnet_b0 --workdir /tmp/fmnist_b0
  rsjax train --config video:motion --workdir /tmp/motion       # 3D ResNet-RS on moving garments
  rsjax train --config imagenet:resnetrs50_i160 --workdir gs://BUCKET/rs50 \\
      --config.data.data_dir=gs://BUCKET/tensorflow_datasets --jax_distributed

Flags:
  --config FILE[:PRESET]   config file (get_config(PRESET) -> ConfigDict)
  --config.KEY=VALUE       override one config value (e.g. --config.num_epochs=2)
  --workdir DIR            checkpoints, metrics.jsonl, TensorBoard events and result.json
                           (a local path or gs:// URL)
  --jax_distributed        join a multi-process run first (jax.distributed.initialize): the
                           cluster is auto-detected on Cloud TPU slices, or named by
  --coordinator_address HOST:PORT  process 0's address,
  --num_processes N        the number of processes and
  --process_id I           this process's id (0 .. N-1); the three go together
  --heartbeat_timeout_s S  a peer silent this long is dead and the run exits (default 100)

  Two processes with two CPU devices each, on one machine:
    for i in 0 1; do XLA_FLAGS=--xla_force_host_platform_device_count=2 \
      rsjax train --config fashion_mnist:tiny --workdir /tmp/mh --jax_distributed \
      --coordinator_address 127.0.0.1:12357 --num_processes 2 --process_id $i & done; wait
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
            "at `res` (video: per clip of frames x res), padding taps included; Table7: the "
            "paper's values (Bello et al., 2021)."
        )
    return 0


def _train(argv: Sequence[str]) -> int:
    """`rsjax train`: loads and validates the config, then runs `train_and_evaluate`."""
    from rsjax import configs

    if not argv or any(a in ("-h", "--help", "--helpfull") for a in argv):
        print(TRAIN_USAGE)
        return 0
    spec, overrides, rest = configs.split_flags(argv, "rsjax train")
    parser = _flag_parser("rsjax train")
    parser.add_argument("--workdir")
    _add_cluster_flags(parser)
    args = _parse_flags(parser, rest)
    workdir = args.workdir
    if spec is None or not workdir:
        raise UsageError("--config and --workdir are required (see --help)")
    join = _cluster_from_flags(args)
    config = configs.validate(configs.load(spec, overrides, as_text=True))
    join()
    from rsjax.train import train_and_evaluate

    try:
        train_and_evaluate(config, workdir)
    except UsageError:
        raise
    except Exception as e:  # the record says "failed"; its traceback is in error.log
        print(
            f"rsjax train: failed: {type(e).__name__}: {first_line(e)} (traceback in "
            f"{workdir}/error.log)",
            file=sys.stderr,
        )
        return 1
    return 0


def _add_cluster_flags(parser: argparse.ArgumentParser) -> None:
    """--jax_distributed and the flags that name its cluster (absent: auto-detected)."""
    parser.add_argument("--jax_distributed", action="store_true")
    parser.add_argument("--coordinator_address")
    parser.add_argument("--num_processes", type=int)
    parser.add_argument("--process_id", type=int)
    parser.add_argument("--heartbeat_timeout_s", type=int, default=100)


def _cluster_from_flags(args: argparse.Namespace) -> Callable[[], None]:
    """Checks the cluster flags (UsageError) and returns what joins the cluster, if asked to:
    called after the config is validated, so bad input fails before any process waits."""
    from rsjax.train import distributed

    cluster = distributed.Cluster(
        args.coordinator_address, args.num_processes, args.process_id, args.heartbeat_timeout_s
    ).check()
    if cluster.num_processes is not None and not args.jax_distributed:
        raise UsageError("--coordinator_address and its flags need --jax_distributed")
    return (lambda: distributed.initialize(cluster)) if args.jax_distributed else (lambda: None)


def _flag_parser(program: str) -> argparse.ArgumentParser:
    """The parser of a command's flags besides --config (its --help is the command's own)."""
    return argparse.ArgumentParser(
        prog=program, add_help=False, allow_abbrev=False, exit_on_error=False
    )


def _parse_flags(parser: argparse.ArgumentParser, args: Sequence[str]) -> argparse.Namespace:
    """`parser`'s flags from `args`; UsageError for an unknown or ill-formed one."""
    try:
        parsed, unknown = parser.parse_known_args(args)
    except argparse.ArgumentError as e:
        raise UsageError(str(e)) from None
    if unknown:
        raise UsageError(f"unknown argument {unknown[0]!r} (see {parser.prog} --help)")
    return parsed


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
    sub.add_parser(
        "profile", help="train-step latency, memory, FLOPs and params of a config (Appendix H)",
        add_help=False,
    )  # fmt: skip
    _add_sweep_parsers(sub)
    _add_analysis_parsers(sub)
    _add_pseudo_label_parser(sub)
    _add_predict_parser(sub)
    return parser


def _add_predict_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="a finished run's predictions on a split (EMA weights, eval preprocessing)",
        description="The run's EMA weights predict every example of --split of its dataset "
        "in stored order, with its eval preprocessing (a video run: the mean softmax of each "
        "clip's views). Writes OUT (.npz): probabilities [N, K] float32 and labels [N]; prints "
        "the top-1 accuracy.\n\n"
        "Examples:\n"
        "  rsjax predict --run runs/fmnist --split test --out runs/fmnist/test_predictions.npz\n"
        "  rsjax predict --run runs/motion --split 'test[:500]' --out /tmp/p.npz\n"
        "  python -c \"import numpy as np; p = np.load('/tmp/p.npz'); "
        "print((p['probabilities'].argmax(1) == p['labels']).mean())\"",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--run", required=True, help="a finished rsjax run directory")
    p.add_argument("--split", default="test", help="the split (tfds slicing works)")
    p.add_argument("--out", required=True, help="a new .npz file")
    p.add_argument("--batch_size", type=int, default=100, help="examples per step")
    p.set_defaults(func=_predict)


def _predict(args: argparse.Namespace) -> int:
    """`rsjax predict`: checks the output, then predicts (`label_split` checks the run before
    anything compiles) and saves."""
    import numpy as np

    from rsjax.train import pseudo_labels

    out = pathlib.Path(args.out)
    if out.suffix != ".npz" or out.exists():
        raise UsageError(f"--out must be a new .npz file, got {args.out}")
    if args.batch_size < 1:
        raise UsageError(f"--batch_size must be >= 1, got {args.batch_size}")
    probabilities, labels = pseudo_labels.label_split(
        args.run, args.split, batch_size=args.batch_size, log=lambda _: None
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, probabilities=probabilities, labels=labels)
    top1 = float(np.mean(probabilities.argmax(1) == labels))
    print(f"top-1 {top1:.4f} on {len(labels)} examples of {args.split}; predictions -> {out}")
    return 0


def _add_pseudo_label_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pseudo-label",
        help="a teacher run labels a split: Noisy-Student pseudo-labels (Section 7.3)",
        description="The teacher's EMA weights (eval mode, eval preprocessing, no augmentation) "
        "predict every image of --split of the teacher's dataset; images under --threshold are "
        "dropped and --per_class balances the classes (over-full ones keep their most "
        "confident images, short ones repeat theirs). Writes OUT/pseudo_labels.npz "
        "(probabilities [N, K], copies [N], true labels if any) and OUT/pseudo_labels.json.\n\n"
        "Examples:\n"
        "  rsjax pseudo-label --teacher runs/teacher --split 'train[10%:]' --out runs/pl\n"
        "  rsjax pseudo-label --teacher runs/teacher --split 'train[10%:]' --out runs/pl \\\n"
        "      --threshold 0.3 --per_class 5000\n"
        "  # the student trains on them; it is then the next teacher (iterate):\n"
        "  rsjax train --config fashion_mnist:semi_student --workdir runs/student \\\n"
        "      --config.cotrain.pseudo_labels=runs/pl\n"
        "  rsjax pseudo-label --teacher runs/student --split 'train[10%:]' --out runs/pl2",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--teacher", required=True, help="a finished rsjax run directory")
    p.add_argument("--split", default="train", help="the split to label (tfds slicing works)")
    p.add_argument("--out", required=True, help="a new directory for the pseudo-labels")
    p.add_argument("--threshold", type=float, default=0.0, help="min top probability, [0, 1)")
    p.add_argument("--per_class", type=int, default=0, help="copies per class (0: no balancing)")
    p.add_argument("--batch_size", type=int, default=500, help="images per teacher step")
    p.add_argument(
        "--shuffle_seed",
        type=int,
        default=None,
        help="a negative control: permute the teacher's predictions across the images with "
        "this seed, so they no longer belong to their images",
    )
    p.set_defaults(func=_pseudo_label)


def _pseudo_label(args: argparse.Namespace) -> int:
    """`rsjax pseudo-label`: every check before the teacher compiles, then label, select, save."""
    import numpy as np

    from rsjax import configs
    from rsjax.train import pseudo_labels

    if not 0.0 <= args.threshold < 1.0:
        raise UsageError(f"--threshold must be in [0, 1), got {args.threshold}")
    if args.per_class < 0 or args.batch_size < 1:
        raise UsageError("--per_class must be >= 0 and --batch_size >= 1")
    pseudo_labels.check_new_out(args.out)
    teacher = pseudo_labels.teacher_config(args.teacher)
    probabilities, labels = pseudo_labels.label_split(
        args.teacher, args.split, batch_size=args.batch_size
    )
    if args.shuffle_seed is not None:
        order = np.random.default_rng(args.shuffle_seed).permutation(len(probabilities))
        probabilities = probabilities[order]
    copies = pseudo_labels.select(probabilities, args.threshold, args.per_class)
    info = {
        "teacher": str(args.teacher),
        "teacher_run_id": configs.run_id(teacher),
        "dataset": teacher.data.name,
        "split": args.split,
        "threshold": args.threshold,
        "per_class": args.per_class,
        "shuffle_seed": args.shuffle_seed,
        **pseudo_labels.summary(probabilities, copies, labels),
    }
    out = pseudo_labels.save(
        args.out, pseudo_labels.PseudoLabels(probabilities, copies, labels, info)
    )
    print(json.dumps(info, indent=2))
    print(f"pseudo-labels of {len(copies)} images -> {out}")
    return 0


PROFILE_USAGE = """usage: rsjax profile --config FILE[:PRESET] [--config.KEY=VALUE ...]
                     [--batch_per_device N] [--steps N] [--warmup N] [--workdir DIR]
                     [--jax_distributed [--coordinator_address H:P --num_processes N
                      --process_id I]]

Time the train step `rsjax train` runs for the config (the same program: schedule form, EMA,
label smoothing, dtype, shardings) on random data: the median over --steps after --warmup,
starting at --batch_per_device per data-axis device and halving on out-of-memory, normalised to
the starting batch (the paper's Appendix H). Also compiled peak memory, FLOPs per image and
parameters. Prints JSON; --workdir also writes result.json (status "profiled"). With
--jax_distributed every process of a slice runs it (as with rsjax train): one step over all
devices, written by process 0.

Examples:
  rsjax profile --config imagenet:resnetrs50_i160
  rsjax profile --config fashion_mnist --config.model.depth=26
  rsjax profile --config fashion_mnist --batch_per_device 256 --steps 20
  rsjax profile --config imagenet:resnetrs50_i160 --config.model.depth=101 \\
      --config.data.image_size=192
"""


def _profile(argv: Sequence[str]) -> int:
    """`rsjax profile`: the config's train step timed, as JSON on stdout."""
    from rsjax import configs

    if any(a in ("-h", "--help") for a in argv):
        print(PROFILE_USAGE)
        return 0
    spec, overrides, rest = configs.split_flags(argv, "rsjax profile")
    parser = _flag_parser("rsjax profile")
    parser.add_argument(
        "--batch_per_device", type=int, default=paper_tables.PROFILE_BATCH_PER_DEVICE
    )
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--workdir")
    _add_cluster_flags(parser)
    args = _parse_flags(parser, rest)
    if spec is None:
        raise UsageError("--config is required (see --help)")
    join = _cluster_from_flags(args)
    config = configs.validate(configs.load(spec, overrides, as_text=True))
    join()
    from rsjax.train.profile_run import profile_run

    record = profile_run(
        config,
        args.workdir,
        batch_per_device=args.batch_per_device,
        steps=args.steps,
        warmup=args.warmup,
    )
    print(json.dumps({"model": record["model"], "profile": record["profile"]}, indent=2))
    return 0


def _lazy(module: str, function: str) -> Callable[[argparse.Namespace], int]:
    """`module.function(args)`, imported when the command runs (after its extra is checked)."""
    return lambda args: getattr(importlib.import_module(module), function)(args)


def _add_sweep_parsers(sub: argparse._SubParsersAction) -> None:
    sweep = sub.add_parser(
        "sweep",
        help="plan, launch and follow a study's grid of runs",
        description="Sweeps are Python files with get_sweep() -> list[Run] (see sweeps/).\n\n"
        "Examples:\n  rsjax sweep plan sweeps/paper_fig3.py\n"
        "  rsjax sweep plan sweeps/paper_table7.py --jsonl\n"
        "  rsjax sweep launch sweeps/fmnist_fig3.py --workdir runs/fig3 --launcher local\n"
        "  rsjax sweep launch sweeps/paper_fig4.py --workdir runs/fig4 --profile_only \\\n"
        "      --only 'efficientnet_b[0-2]' --profile_batch_per_device 32\n"
        "  rsjax sweep launch sweeps/paper_fig3.py --workdir gs://B/fig3 --launcher tpu-vm \\\n"
        "      --project P --zone us-central2-b --accelerator_type v4-32 --max_slices 8\n"
        "  rsjax sweep launch sweeps/paper_fig3.py --workdir gs://B/fig3 --launcher tpu-vm \\\n"
        "      --project P --zone us-central2-b --accelerator_type v4-32 --dry_run \\\n"
        "      --profiles gs://B/fig3-profiles | tail -n 150  # slice-hours per run\n"
        "  rsjax sweep status gs://B/fig3\n"
        "  rsjax sweep logs gs://B/fig3/RUN_NAME --worker 0\n"
        "  rsjax sweep down gs://B/fig3 --project P --zone us-central2-b",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = sweep.add_subparsers(dest="sweep_command", required=True, metavar="ACTION")

    plan = actions.add_parser("plan", help="print the runs of a sweep file")
    plan.add_argument("sweep_file")
    plan.add_argument("--jsonl", action="store_true", help="one JSON object per run")
    plan.add_argument("--only", help="runs whose name matches this glob")
    plan.set_defaults(func=_lazy("rsjax.sweep.commands", "plan"))

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
    launch.add_argument(
        "--profile_batch_per_device",
        type=int,
        default=paper_tables.PROFILE_BATCH_PER_DEVICE,
        help="--profile_only: the batch per device the profile starts at (Appendix H: 128, "
        "halved on out-of-memory)",
    )
    tpu = launch.add_argument_group(
        "tpu-vm launcher (queued resources: up to --max_slices slices at once, each running its "
        "run from a startup script; preempted slices come back as the next attempt)"
    )
    _add_slice_flags(tpu)
    tpu.add_argument("--accelerator_type", help="e.g. v4-32")
    tpu.add_argument("--runtime_version", default="tpu-ubuntu2204-base")
    tpu.add_argument(
        "--provisioning", choices=("spot", "reserved", "on-demand"), default="spot",
        help="spot (default), reserved capacity, or on-demand",
    )  # fmt: skip
    tpu.add_argument("--max_slices", type=int, default=1, help="slices live at once (quota)")
    tpu.add_argument("--max_failures", type=int, default=2, help="failed attempts per run")
    tpu.add_argument("--budget_slice_hours", type=float, help="no new slices after this many")
    tpu.add_argument("--valid_until", default="6h", help="how long a request may wait (6h)")
    tpu.add_argument(
        "--heartbeat_timeout_s", type=float, default=1800.0,
        help="an ACTIVE slice silent this long is hung: deleted and retried",
    )  # fmt: skip
    tpu.add_argument("--poll_s", type=float, default=60.0, help="seconds between ticks")
    tpu.add_argument(
        "--env", action="append", default=[], metavar="KEY=VALUE",
        help="exported on every worker, e.g. TFDS_DATA_DIR=gs://B/tensorflow_datasets (where "
        "every run reads its data, with no run id changed); repeatable",
    )  # fmt: skip
    tpu.add_argument("--wheel", help="rsjax wheel to install (default: built from this checkout)")
    tpu.add_argument("--lock", help="lock file to install (default: this checkout's)")
    tpu.add_argument("--dry_run", action="store_true", help="print every create and script only")
    tpu.add_argument(
        "--profiles", metavar="WORKDIR",
        help="--dry_run: also estimate each run's slice-hours from this --profile_only sweep of "
        "the same file (profiled on the slice type the sweep will use)",
    )  # fmt: skip
    launch.set_defaults(func=_lazy("rsjax.sweep.commands", "launch"))

    down = actions.add_parser(
        "down",
        help="delete every TPU slice of a sweep (needs only its workdir URL)",
        description="Delete every queued resource labelled with the sweep of WORKDIR, and check "
        "each is gone. Works with no local state.\n\nExample:\n"
        "  rsjax sweep down gs://B/fig3 --project P --zone us-central2-b",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    down.add_argument("workdir")
    _add_slice_flags(down)
    down.set_defaults(func=_lazy("rsjax.sweep.tpu_vm", "down"))

    logs = actions.add_parser(
        "logs",
        help="print a run's training log from its slices",
        description="Print a run's worker log (latest attempt unless --attempt).\n\nExample:\n"
        "  rsjax sweep logs gs://B/fig3/d101-w1-r192-e350 --worker 0",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    logs.add_argument("run_dir")
    logs.add_argument("--worker", type=int, default=0)
    logs.add_argument("--attempt", type=int, help="default: the newest")
    logs.set_defaults(func=_lazy("rsjax.sweep.commands", "logs"))

    status = actions.add_parser("status", help="complete / running / failed / pending runs")
    status.add_argument("workdir")
    status.add_argument("--all", action="store_true", help="list every run, not only problems")
    status.set_defaults(func=_lazy("rsjax.sweep.commands", "status"))


def _add_slice_flags(group) -> None:
    group.add_argument("--project")
    group.add_argument("--zone")


def _add_analysis_parsers(sub: argparse._SubParsersAction) -> None:
    """Adds `results` (collect, report, select) and `plot` to the top-level subcommands."""
    results = sub.add_parser(
        "results",
        help="collect result.json files into one table; print the scaling report",
        description="Examples:\n"
        "  rsjax results collect runs/fmnist_fig3 -o results.csv\n"
        "  rsjax results collect 'gs://B/sweeps/*' runs/local -o results.parquet\n"
        "  rsjax results report results.csv\n"
        "  rsjax results report runs/fmnist_fig3 --quality raw_top1\n"
        "  rsjax results select runs/fmnist_finetune   # a fine-tuning grid, by validation",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = results.add_subparsers(dest="results_command", required=True, metavar="ACTION")
    c = actions.add_parser(
        "collect",
        help="read every result.json under PATHS into a CSV or Parquet table",
        description="Reads result.json files in or up to three levels below each PATH (local "
        "or gs://, globs allowed), keeps the newest record per run id, and reports corrupt, "
        "failed, partial and profiled records instead of failing.",
    )
    c.add_argument("paths", nargs="+", metavar="PATH")
    c.add_argument("-o", "--output", required=True, help="results.csv or results.parquet")
    c.add_argument(
        "--include_profiled", action="store_true", help="also rows for profiled-only runs"
    )
    c.set_defaults(func=_lazy("rsjax.analysis.commands", "collect"))
    r = actions.add_parser(
        "report", help="which axis to scale in each regime (computed from RESULTS)"
    )
    r.add_argument("results", nargs="+", metavar="RESULTS", help="table or run directories")
    r.add_argument("--cost", default="latency")
    r.add_argument(
        "--quality",
        default="auto",
        help="quality column; auto: EMA top-1 where every run's EMA is warmed up, else raw top-1",
    )
    r.set_defaults(func=_lazy("rsjax.analysis.commands", "report"))
    s = actions.add_parser(
        "select",
        help="pick a fine-tuning grid's run by validation; report its test top-1",
        description="Model selection (Appendix F's learning-rate x steps grid): the run with "
        "the best validation top-1 (data.validation_split, carved from the training data) and "
        "its test top-1, beside the best-on-test run, labelled as optimistic.\n\nExample:\n"
        "  rsjax results select runs/fmnist_finetune",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument("results", nargs="+", metavar="RESULTS", help="table or run directories")
    s.add_argument("--by", default="val_top1", help="the selection column (val_top1)")
    s.add_argument("--report", default="top1", help="the reported column (top1: test)")
    s.set_defaults(func=_lazy("rsjax.analysis.commands", "select"))

    p = sub.add_parser(
        "plot",
        help="the paper's figures from results: fig2, fig3, fig4, table7 (PNG and PDF)",
        description="fig2: error vs FLOPs with the power-law fit; fig3: depth vs width scaling "
        "per regime; fig4: Pareto curves per family; table7: speed-ups at matched accuracy. "
        "fig4 and table7 without RESULTS use the paper's Table 7.\n\nExamples:\n"
        "  rsjax plot fig3 results.csv --out figures\n"
        "  rsjax plot fig2 runs/fmnist_fig3 --out figures\n"
        "  rsjax plot fig4 --out figures            # the paper's Figure 4\n"
        "  rsjax plot fig4 runs/fig4 --out figures  # profiled runs: Table 7's top-1, labelled\n"
        "  rsjax plot table7 --out figures          # Table 7 with recomputed speed-ups",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("figure", choices=FIGURES)
    p.add_argument("results", nargs="*", metavar="RESULTS", help="table or run directories")
    p.add_argument("--out", required=True, help="directory for FIGURE.png and FIGURE.pdf")
    p.add_argument("--cost", help="cost column (default: latency, or Table 7's TPUv3 latency)")
    p.add_argument("--quality", default="auto", help="as for rsjax results report")
    p.add_argument("--paper", action="store_true", help="fig4: overlay the paper's Table 7")
    p.set_defaults(func=_lazy("rsjax.analysis.commands", "plot"))


def main(argv: Sequence[str] | None = None) -> int:
    """The `rsjax` command. Bad input is one line on stderr and exit 2."""
    if argv is None:  # the command itself, not a call from Python
        from rsjax import malloc_tuning

        malloc_tuning.maybe_reexec()
    argv = list(sys.argv[1:] if argv is None else argv)
    own_parsers = {"train": _train, "profile": _profile}  # config flags: --config.KEY=VALUE
    command = argv[0] if argv else None
    try:
        if command in EXTRA_OF_COMMAND:  # before --help, which would list flags that cannot run
            extras.require(EXTRA_OF_COMMAND[command])
        if command in own_parsers:
            return own_parsers[command](argv[1:])
        args = build_parser().parse_args(argv)
        return args.func(args)
    except (ValueError, TypeError, FileNotFoundError) as e:
        print(f"rsjax {command}: error: {first_line(e)}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `rsjax sweep plan ... | head`: the reader left; no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
