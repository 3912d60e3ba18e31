"""`rsjax results collect|report` and `rsjax plot`: the analysis from the command line."""

import argparse

FIGURES = ("fig2", "fig3", "fig4", "table7")


def collect(args: argparse.Namespace) -> int:
    from rsjax.results import collect as collect_results
    from rsjax.results import write_table

    statuses = ("complete", "profiled") if args.include_profiled else ("complete",)
    df = collect_results(args.paths, statuses=statuses)
    print(df.attrs["summary"])
    if df.empty:
        raise ValueError(f"no {' or '.join(statuses)} runs under {' '.join(args.paths)}.")
    path = write_table(df, args.output)
    print(f"{len(df)} rows -> {path}")
    return 0


def report(args: argparse.Namespace) -> int:
    from rsjax.analysis import recommend
    from rsjax.results import load

    print(recommend(load(args.results), cost=args.cost, quality=args.quality))
    return 0


def plot(args: argparse.Namespace) -> int:
    from rsjax.analysis import paper, plots
    from rsjax.results import load

    df = load(args.results) if args.results else None
    if df is None and args.figure in ("fig2", "fig3"):
        raise ValueError(f"{args.figure} needs RESULTS (a results table or run directories).")
    cost = args.cost or ("latency" if df is not None else "tpuv3_latency_ms")
    if args.figure == "fig2":
        fig = plots.fig2(df)
    elif args.figure == "fig3":
        fig = plots.fig3(df, cost=cost, quality=args.quality)
    elif args.figure == "fig4":
        fig = plots.fig4(df, cost=cost, quality=args.quality, paper_overlay=args.paper)
    else:
        table = paper.table7(df, costs={args.cost: args.cost} if args.cost else None)
        fig = plots.table7_figure(table)
        print(table.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    for path in plots.save(fig, args.out, args.figure):
        print(f"wrote {path}")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Adds `results` (collect, report) and `plot` to the top-level subcommands."""
    results = sub.add_parser(
        "results",
        help="collect result.json files into one table; print the scaling report",
        description="Examples:\n"
        "  rsjax results collect runs/fmnist_fig3 -o results.csv\n"
        "  rsjax results collect 'gs://B/sweeps/*' runs/local -o results.parquet\n"
        "  rsjax results report results.csv\n"
        "  rsjax results report runs/fmnist_fig3 --quality raw_top1",
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
    c.set_defaults(func=collect)
    r = actions.add_parser(
        "report", help="which axis to scale in each regime (computed from RESULTS)"
    )
    r.add_argument("results", nargs="+", metavar="RESULTS", help="table or run directories")
    r.add_argument("--cost", default="latency")
    r.add_argument("--quality", default="top1")
    r.set_defaults(func=report)

    p = sub.add_parser(
        "plot",
        help="the paper's figures from results: fig2, fig3, fig4, table7 (PNG and PDF)",
        description="fig2: error vs FLOPs with the power-law fit; fig3: depth vs width scaling "
        "per regime; fig4: Pareto curves per family; table7: speed-ups at matched accuracy. "
        "fig4 and table7 without RESULTS use the paper's Table 7.\n\nExamples:\n"
        "  rsjax plot fig3 results.csv --out figures\n"
        "  rsjax plot fig2 runs/fmnist_fig3 --out figures\n"
        "  rsjax plot fig4 --out figures            # the paper's Figure 4\n"
        "  rsjax plot table7 --out figures          # Table 7 with recomputed speed-ups",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("figure", choices=FIGURES)
    p.add_argument("results", nargs="*", metavar="RESULTS", help="table or run directories")
    p.add_argument("--out", required=True, help="directory for FIGURE.png and FIGURE.pdf")
    p.add_argument("--cost", help="cost column (default: latency, or Table 7's TPUv3 latency)")
    p.add_argument("--quality", default="top1")
    p.add_argument("--paper", action="store_true", help="fig4: overlay the paper's Table 7")
    p.set_defaults(func=plot)
