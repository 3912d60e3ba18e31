"""`rsjax results collect|report|select` and `rsjax plot`: argument parsing lives in rsjax.cli,
the work here."""

import argparse


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


def select(args: argparse.Namespace) -> int:
    from rsjax.analysis.selection import format_selection
    from rsjax.analysis.selection import select as select_run
    from rsjax.results import load

    df = load(args.results)
    print(format_selection(df, select_run(df, by=args.by, report=args.report)))
    return 0


def plot(args: argparse.Namespace) -> int:
    from rsjax.analysis import paper, plots
    from rsjax.results import load

    quality = args.quality
    if quality == "auto" and args.figure in ("fig4", "table7"):
        quality = "top1"  # Figure 4 and Table 7 compare final models, as the paper
    df, quality_label = None, None
    if args.results and args.figure == "fig4":  # profiled runs: measured cost, paper quality
        df = paper.with_paper_quality(load(args.results, ("complete", "profiled")), quality)
        if (df["quality_source"] == paper.PAPER_QUALITY).any():
            quality_label = f"{quality} (%): the paper's Table 7 for untrained models"
        if unknown := int(df["quality_source"].isna().sum()):
            print(f"{unknown} untrained run(s) of models not in Table 7: no {quality}, not drawn")
    elif args.results:
        df = load(args.results)
    if df is None and args.figure in ("fig2", "fig3"):
        raise ValueError(f"{args.figure} needs RESULTS (a results table or run directories).")
    cost = args.cost or ("latency" if df is not None else "tpuv3_latency_ms")
    if args.figure == "fig2":
        fig = plots.fig2(df, quality=quality)
    elif args.figure == "fig3":
        fig = plots.fig3(df, cost=cost, quality=quality)
    elif args.figure == "fig4":
        fig = plots.fig4(
            df, cost=cost, quality=quality, paper_overlay=args.paper, quality_label=quality_label
        )
    else:
        table = paper.table7(df, costs={args.cost: args.cost} if args.cost else None)
        fig = plots.table7_figure(table)
        print(table.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    for path in plots.save(fig, args.out, args.figure):
        print(f"wrote {path}")
    return 0
