"""The optional parts of rsjax and the pip extras that install them.

`pip install rsjax` installs the models (`rsjax.models`, `rsjax.profiling`, `rsjax zoo`): jax,
flax and numpy. Training, sweeps and profiling need `rsjax[train]`; results tables, reports and
figures need `rsjax[analysis]`. `EXTRAS` names the modules each extra provides, as imported
(pyproject.toml's `optional-dependencies` names the distributions; a test keeps the two in step).
"""

import importlib.util

from rsjax.errors import UsageError

EXTRAS: dict[str, tuple[str, ...]] = {
    "train": (
        "ml_collections",
        "optax",
        "orbax.checkpoint",
        "tensorflow",
        "tensorflow_datasets",
        "tensorboard",
    ),
    "analysis": ("pandas", "matplotlib"),
}


class MissingExtra(UsageError):
    """A command needs an extra that is not installed (one line, exit 2)."""


def missing_modules(extra: str) -> list[str]:
    """The modules of `extra` that cannot be imported here (found without importing them)."""
    if extra not in EXTRAS:
        raise ValueError(f"unknown extra {extra!r}; known: {sorted(EXTRAS)}")
    return [name for name in EXTRAS[extra] if not _importable(name)]


def require(extra: str) -> None:
    """MissingExtra naming the pip command for `extra` when any of its modules is absent."""
    missing = missing_modules(extra)
    if missing:
        raise MissingExtra(
            f"the [{extra}] extra is not installed: pip install 'rsjax[{extra}]' "
            f"(missing: {', '.join(missing)})"
        )


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a missing parent package ("orbax" of "orbax.checkpoint")
        return False
