"""Block layouts: how many bottleneck blocks each of the four stages (c2..c5) holds.

Depths 50-420 are the paper's Table 11 (identical in tensorflow/tpu, Model Garden, timm and Keras);
26, 300 and 400 are the scaling-study depths of Section 6 / Appendix E.
"""

from collections.abc import Sequence

BLOCK_LAYOUTS: dict[int, tuple[int, int, int, int]] = {
    26: (2, 2, 2, 2),  # Section 6 scaling study (bottleneck blocks, 3 x 8 + 2 = 26 layers).
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
    200: (3, 24, 36, 3),
    270: (4, 29, 53, 4),
    300: (4, 36, 54, 4),  # Appendix E.
    350: (4, 36, 72, 4),
    400: (6, 48, 72, 6),  # Appendix E.
    420: (4, 44, 87, 4),
}


def resolve_stage_sizes(depth: int, stage_sizes: Sequence[int] | None = None) -> tuple[int, ...]:
    """Returns the blocks per stage for `depth`, or `stage_sizes` when given.

    Raises:
      ValueError: unknown depth without `stage_sizes`, or a malformed `stage_sizes`.
    """
    if stage_sizes is not None:
        sizes = tuple(stage_sizes)
        if not sizes or any(not isinstance(n, int) or n < 1 for n in sizes):
            raise ValueError(
                f"stage_sizes must be a non-empty sequence of positive ints, got {stage_sizes!r}."
            )
        return sizes
    if depth not in BLOCK_LAYOUTS:
        raise ValueError(
            f"Unknown ResNet-RS depth {depth!r}: known depths are {sorted(BLOCK_LAYOUTS)}; "
            "pass stage_sizes=(c2, c3, c4, c5) for a custom layout."
        )
    return BLOCK_LAYOUTS[depth]


def layer_count(stage_sizes: Sequence[int]) -> int:
    """Weighted layers of a bottleneck layout: 3 convs per block plus the stem and the head
    (the "50" of ResNet-50: 3 x 16 + 2). Used to label custom layouts; the paper's names for
    270 and 420 count a little differently (3 x 90 + 2 = 272, 3 x 139 + 2 = 419)."""
    return 3 * sum(stage_sizes) + 2
