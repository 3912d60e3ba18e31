"""The model zoo table: every preset's layout, parameters and FLOPs beside the paper's Table 7
(its ResNet-RS and EfficientNet rows); the video presets' FLOPs are per clip of their `frames`."""

import dataclasses

from rsjax import paper_tables, profiling
from rsjax.models import abstract_variables, create_model, get_preset, list_models


@dataclasses.dataclass(frozen=True)
class ZooRow:
    """One model at one resolution; `paper_*` are Table 7's values (None where it has no row)."""

    name: str
    stage_sizes: tuple[int, ...]
    resolution: int
    params: int
    flops: int
    paper_params_m: float | None
    paper_flops_b: float | None
    xla_flops: float | None = None
    frames: int = 0  # a video model's clip length: `flops` are per clip

    @property
    def flops_ratio(self) -> float | None:
        """Our FLOPs / Table 7's (1.0 = identical)."""
        return None if self.paper_flops_b is None else self.flops / (self.paper_flops_b * 1e9)


def _table7_lookup() -> dict[tuple[int, int], dict]:
    return {(r["depth"], r["image_resolution"]): r for r in paper_tables.resnet_rs_rows()}


def _table7_efficientnets() -> dict[str, dict]:
    """ "efficientnet_b0" -> Table 7's EfficientNet-B0 row."""
    return {
        "efficientnet_" + r["model"].rsplit("-", 1)[-1].lower(): r
        for r in paper_tables.load("table7_pareto")
        if r["family"] == "efficientnet"
    }


def _paper_row(name: str, model, resolution: int, table7: dict) -> dict | None:
    if get_preset(name).family == "efficientnet":
        row = _table7_efficientnets().get(name)
        return row if row and row["image_resolution"] == resolution else None
    return table7.get((model.depth, resolution)) if model.width_multiplier == 1.0 else None


def zoo_rows(
    names: list[str] | None = None, extra_table7: bool = True, xla: bool = False
) -> list[ZooRow]:
    """Rows for the presets `names` (default: the depth presets) at their default resolution.

    With `extra_table7`, Table 7 rows at other resolutions (e.g. RS-152 at 192 and 224) follow,
    so every ResNet-RS row of Table 7 appears. `xla` adds XLA's cost-analysis FLOPs (slower).
    """
    table7 = _table7_lookup()
    names = names if names is not None else list_models(include_widths=False)
    todo = [(name, get_preset(name).default_resolution) for name in names]
    if extra_table7:
        listed = {
            (get_preset(n).kwargs["depth"], r)
            for n, r in todo
            if "_w" not in n and get_preset(n).family == "resnet_rs"
        }
        todo += [(f"resnetrs{d}", r) for (d, r) in table7 if (d, r) not in listed]
    rows = []
    variables_cache: dict[str, object] = {}
    for name, resolution in todo:
        model = create_model(name)
        variables = variables_cache.setdefault(name, abstract_variables(model))
        frames = get_preset(name).frames
        if frames:  # a video network: no Table 7 row, FLOPs per clip
            flops = profiling.flops_per_clip(model, frames, resolution, variables=variables)
            rows.append(
                ZooRow(
                    name, model.blocks_per_stage, resolution,
                    profiling.count_params(model, variables=variables), flops, None, None,
                    frames=frames,
                )
            )  # fmt: skip
            continue
        paper = _paper_row(name, model, resolution, table7)
        rows.append(
            ZooRow(
                name=name,
                stage_sizes=model.blocks_per_stage,
                resolution=resolution,
                params=profiling.count_params(model, variables=variables),
                flops=profiling.flops_per_image(model, resolution, variables=variables),
                paper_params_m=paper["params_m"] if paper else None,
                paper_flops_b=paper["flops_b"] if paper else None,
                xla_flops=(
                    profiling.xla_flops_per_image(model, resolution, variables=variables)
                    if xla
                    else None
                ),
            )
        )
    return rows


def format_rows(rows: list[ZooRow]) -> str:
    """A fixed-width text table of `rows`."""
    header = (
        f"{'model':<22} {'stages':<14} {'res':>7} {'params':>13} {'Table7':>6} "
        f"{'GFLOPs':>8} {'Table7':>6} {'ratio':>6}"
    )
    has_xla = any(r.xla_flops is not None for r in rows)
    if has_xla:
        header += f" {'XLA GFLOPs':>10}"
    lines = [header, "-" * len(header)]
    for r in rows:
        stages = "-".join(map(str, r.stage_sizes))
        pp = f"{r.paper_params_m:g}M" if r.paper_params_m is not None else "-"
        pf = f"{r.paper_flops_b:g}" if r.paper_flops_b is not None else "-"
        ratio = f"{r.flops_ratio:.3f}" if r.flops_ratio is not None else "-"
        res = f"{r.frames}x{r.resolution}" if r.frames else str(r.resolution)
        line = (
            f"{r.name:<22} {stages:<14} {res:>7} {r.params:>13,} {pp:>6} "
            f"{r.flops / 1e9:>8.2f} {pf:>6} {ratio:>6}"
        )
        if has_xla:
            line += f" {r.xla_flops / 1e9:>10.2f}" if r.xla_flops is not None else f" {'-':>10}"
        lines.append(line)
    return "\n".join(lines)
