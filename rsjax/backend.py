"""Settings whose "auto" value means one choice on CPU and another on every other backend."""

from collections.abc import Sequence

import jax


def resolve_auto(
    value: str, choices: Sequence[str], *, on_cpu: str, elsewhere: str, what: str
) -> str:
    """`value` if it is a concrete choice; for "auto", `on_cpu` on the CPU backend and `elsewhere`
    otherwise. ValueError naming `what` when `value` is not in `choices`."""
    if value not in choices:
        raise ValueError(f"{what} must be one of {tuple(choices)}, got {value!r}.")
    if value == "auto":
        return on_cpu if jax.default_backend() == "cpu" else elsewhere
    return value
