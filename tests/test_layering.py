"""Imports only go down (DESIGN.md): each rsjax module imports only from lower layers or its own
package, so `results` (the record contract) never reaches up into `sweep` or `train`."""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "rsjax"
# Lowest first. A module may import its own package and anything in a lower layer, nothing in its
# own layer's other packages or above.
LAYERS = (
    ("errors",),
    ("extras", "fileio", "backend", "paper_tables", "malloc_tuning"),
    ("models",),
    ("profiling",),  # a model's params and FLOPs
    ("data", "configs", "zoo"),
    ("results",),
    ("train",),
    ("sweep", "analysis"),
    ("cli",),
)
LEVEL = {name: level for level, names in enumerate(LAYERS) for name in names}


def rsjax_imports(path: pathlib.Path) -> set[str]:
    """Top-level rsjax subpackages/modules that `path` imports (at any depth in the file)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            parts = node.module.split(".")
            if parts[0] == "rsjax":
                found |= {parts[1]} if len(parts) > 1 else {a.name for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("rsjax.")}
    return found - {"__version__"}


def owner(path: pathlib.Path) -> str:
    return path.relative_to(PACKAGE).with_suffix("").parts[0]


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if owner(p) != "__init__")


def test_every_package_has_a_layer():
    assert {owner(p) for p in MODULES} <= set(LEVEL), {owner(p) for p in MODULES} - set(LEVEL)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_only_go_down(path):
    me = owner(path)
    upward = sorted(name for name in rsjax_imports(path) - {me} if LEVEL.get(name, -1) >= LEVEL[me])
    assert not upward, f"{path.relative_to(PACKAGE)} ({me}) imports {upward}"


def test_the_check_sees_a_violation(tmp_path):
    """The parser finds imports inside functions too (lazy imports are still imports)."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from rsjax.sweep.grid import Run\n    import rsjax.train.step\n")
    assert rsjax_imports(bad) == {"sweep", "train"}
