"""Converts ResNetRS variables between the unrolled and the `scan_blocks=True` layouts.

Unrolled: one subtree per block, "c{s}_block{j}". Scanned: "c{s}_block0" (the projection block)
stays, and blocks 1..n-1 of a stage with n - 1 >= 2 such blocks become one subtree "c{s}_blocks"
whose leaves carry a leading axis of length n - 1 (block j at index j - 1). Both functions take
{"params": ..., "batch_stats": ...} or a single collection, with array leaves.
"""

import re
from typing import Any

import jax
import jax.numpy as jnp

_BLOCK = re.compile(r"^c(\d+)_block(\d+)$")
_STACKED = re.compile(r"^c(\d+)_blocks$")


def _is_collection_dict(tree: Any) -> bool:
    return isinstance(tree, dict) and any(_BLOCK.match(k) or _STACKED.match(k) for k in tree)


def stack_blocks(variables: Any) -> Any:
    """Unrolled variables -> the layout of the same model with `scan_blocks=True`."""
    if not _is_collection_dict(variables):
        return {k: stack_blocks(v) for k, v in variables.items()}
    repeated: dict[str, list[tuple[int, str]]] = {}
    for key in variables:
        match = _BLOCK.match(key)
        if match and int(match.group(2)) >= 1:
            repeated.setdefault(match.group(1), []).append((int(match.group(2)), key))
    out = dict(variables)
    for stage, blocks in repeated.items():
        if len(blocks) < 2:
            continue  # a single repeated block is never scanned
        keys = [key for _, key in sorted(blocks)]
        out[f"c{stage}_blocks"] = jax.tree.map(
            lambda *leaves: jnp.stack(leaves), *(variables[k] for k in keys)
        )
        for key in keys:
            del out[key]
    return out


def unstack_blocks(variables: Any) -> Any:
    """`scan_blocks=True` variables -> the unrolled layout (inverse of `stack_blocks`)."""
    if not _is_collection_dict(variables):
        return {k: unstack_blocks(v) for k, v in variables.items()}
    out = dict(variables)
    for key in variables:
        match = _STACKED.match(key)
        if not match:
            continue
        stacked = out.pop(key)
        length = jax.tree.leaves(stacked)[0].shape[0]
        for index in range(length):
            out[f"c{match.group(1)}_block{index + 1}"] = jax.tree.map(
                lambda leaf, i=index: leaf[i], stacked
            )
    return out
