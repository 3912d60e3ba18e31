"""The paper's own results as analysis tables: Table 7 with its speed-ups recomputed."""

import pandas as pd

from rsjax import paper_tables
from rsjax.analysis.frontier import speedup_at_matched_accuracy

# Table 7's latency columns: column -> hardware label.
TABLE7_COSTS = {"tpuv3_latency_ms": "TPUv3", "v100_latency_s": "V100"}


def table7_results() -> pd.DataFrame:
    """Table 7 (ResNet-RS and EfficientNet Pareto models) in the columns `collect` uses:
    name, family, depth, image_resolution, params, flops (per image), top1 (%), error, and the
    paper's latencies (tpuv3_latency_ms: per training step of 1024 images on 8 TPUv3 cores;
    v100_latency_s), with `latency` = the TPUv3 latency in seconds."""
    df = pd.DataFrame(paper_tables.load("table7_pareto")).rename(columns={"model": "name"})
    df["name"] = [
        f"{name}-{res}" if family == "resnet_rs" else name
        for name, family, res in zip(df["name"], df["family"], df["image_resolution"], strict=True)
    ]
    df["params"] = df.pop("params_m") * 1e6
    df["flops"] = df.pop("flops_b") * 1e9
    df["latency"] = df["tpuv3_latency_ms"] / 1000
    df["error"] = 100.0 - df["top1"]
    return df


PAPER_QUALITY = "paper Table 7"


# Table 7 prints parameters to two significant figures ("36", "5.3"): at most 4.2% off the count.
PARAMS_TOLERANCE = 0.05


def with_paper_quality(df: pd.DataFrame, quality: str = "top1") -> pd.DataFrame:
    """`df` with `quality` filled from Table 7 where a row has none (a profiled, untrained run)
    and the same model is in Table 7: the same family and resolution, and a parameter count
    within `PARAMS_TOLERANCE` of the table's (the nearest, if several). `quality_source` says which
    rows hold "measured" values and which the paper's; rows with neither keep NaN."""
    df, paper = df.copy(), table7_results()
    from_paper = pd.Series(
        [_paper_value(paper, row, quality) for _, row in df.iterrows()], df.index, dtype=float
    )
    measured = df[quality].notna()
    df["quality_source"] = measured.map({True: "measured", False: None})
    df.loc[~measured & from_paper.notna(), "quality_source"] = PAPER_QUALITY
    df[quality] = df[quality].where(measured, from_paper)
    return df


def _paper_value(paper: pd.DataFrame, row: pd.Series, column: str) -> float | None:
    """`paper`'s (Table 7's) `column` for the model `row` is (see `with_paper_quality`), or None."""
    same = paper[
        (paper["family"] == row["family"])
        & (paper["image_resolution"] == pd.to_numeric(row["image_resolution"]))
    ]
    if same.empty or pd.isna(row["params"]):
        return None
    off = (same["params"] / float(row["params"]) - 1.0).abs()
    if off.min() > PARAMS_TOLERANCE:
        return None
    return float(same.loc[off.idxmin(), column])


def table7(
    df: pd.DataFrame | None = None,
    ours: str = "resnet_rs",
    theirs: str = "efficientnet",
    costs: dict[str, str] | None = None,
    tolerance: float = 0.2,
) -> pd.DataFrame:
    """Table 7's view: for each of their models, our model(s) nearest in accuracy, kept when
    within `tolerance` points (the pairs the paper prints in bold), with the speed-up per cost
    column. Our models that are nobody's nearest match get no row.

    Returns one row per matched pair: ours, theirs, top1 of each, and `speedup_<hardware>` for
    each cost column (their cost / ours). Defaults to the paper's own Table 7.
    """
    df = table7_results() if df is None else df
    costs = TABLE7_COSTS if costs is None else costs
    if not costs:
        raise ValueError("table7 needs at least one cost column.")
    table = None
    for column, hardware in costs.items():
        pairs = speedup_at_matched_accuracy(
            df, ours, theirs, cost=column, method="nearest", tolerance=tolerance
        )
        pairs = pairs[pairs["matched"]].rename(
            columns={
                "ours_quality": "ours_top1",
                "theirs_quality": "theirs_top1",
                "speedup": f"speedup_{hardware}",
                "ours_cost": f"ours_{column}",
                "theirs_cost": f"theirs_{column}",
            }
        )
        pairs = pairs.drop(columns="matched")
        keys = ["ours", "theirs", "ours_top1", "theirs_top1"]
        table = pairs if table is None else table.merge(pairs, on=keys)
    return table.sort_values("ours_top1", kind="stable").reset_index(drop=True)
