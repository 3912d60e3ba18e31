"""The `rsjax` command line.

Examples:
  rsjax models                      # the zoo: layouts, params and FLOPs beside the paper's Table 7
  rsjax models --widths --xla       # also width-scaled presets, and XLA's FLOP count
  rsjax models --json               # one JSON object per row
"""

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence


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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ValueError as e:
        print(f"rsjax {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
