"""The one config loader: `load(spec, overrides)` behind every entry point.

`spec` is "NAME[:PRESET]" for a bundled config (`BUNDLED`: fashion_mnist, imagenet, video) or
"PATH.py[:PRESET]" for a config file; either way the file's `get_config(PRESET)` returns a locked
`ml_collections.ConfigDict`. Overrides are dotted keys ("model.depth") set on it: typed values
(sweeps, Python) or command-line text parsed by the type of the field they replace. Every problem
is a `UsageError` whose message is one line.
"""

import ast
import importlib.util
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections

from rsjax.errors import UsageError, first_line

BUNDLED = ("fashion_mnist", "imagenet", "video")  # modules of rsjax/configs with get_config(preset)
_PACKAGE_DIR = pathlib.Path(__file__).parent
# Keys that say the same thing two ways, with their (falsy) "unset" values: overriding one
# unsets the other (a depth override on a preset with explicit stage_sizes takes that depth's
# layout); setting both in one set of overrides is an error.
EXCLUSIVE_KEYS = {"model.depth": 0, "model.stage_sizes": ()}
_TRUE = ("true", "1", "yes", "t")
_FALSE = ("false", "0", "no", "f")


def split_spec(spec: str) -> tuple[pathlib.Path, str]:
    """("fashion_mnist:long") -> (<package>/configs/fashion_mnist.py, "long"); paths stay paths."""
    head, _, preset = str(spec).partition(":")
    if head in BUNDLED:
        return _PACKAGE_DIR / f"{head}.py", preset
    path = pathlib.Path(head)
    if not path.is_file():
        raise UsageError(
            f"no config file {head!r} (and no bundled config of that name; bundled: "
            f"{', '.join(BUNDLED)})"
        )
    return path, preset


def import_file(path: pathlib.Path, what: str = "config") -> Any:
    """The module in the Python file `path` (a config or sweep file, `what` names it in errors);
    UsageError in one line for a syntax error or any error while it runs."""
    spec = importlib.util.spec_from_file_location(f"rsjax_{what}_file_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise UsageError(f"cannot import {what} file {path} (want a .py file)")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as e:
        raise UsageError(f"{path}:{e.lineno}: syntax error: {e.msg}") from None
    except Exception as e:  # an import error or a bug at module level: one line, not a traceback
        raise UsageError(f"{path}: cannot be loaded: {type(e).__name__}: {first_line(e)}") from None
    return module


def load_file(spec: str) -> ml_collections.ConfigDict:
    """The config `spec` names, without overrides (locked, as its get_config returns it)."""
    path, preset = split_spec(spec)
    if path.parent == _PACKAGE_DIR:
        module = importlib.import_module(f"rsjax.configs.{path.stem}")
    else:
        module = import_file(path)
    get_config = getattr(module, "get_config", None)
    if not callable(get_config):
        raise UsageError(f"{path} defines no get_config() function")
    try:
        config = get_config(preset) if preset else get_config()
    except (ValueError, TypeError, KeyError) as e:
        raise UsageError(f"{spec}: {first_line(e)}") from None
    if not isinstance(config, ml_collections.ConfigDict):
        raise UsageError(
            f"{path}: get_config() returned a {type(config).__name__}, not a ConfigDict"
        )
    return config


def load(
    spec: str, overrides: Mapping[str, Any] | None = None, *, as_text: bool = False
) -> ml_collections.ConfigDict:
    """The locked config `spec` names with `overrides` applied (values parsed from command-line
    text when `as_text`). Does not validate: call `rsjax.configs.validate` on the result."""
    return apply_overrides(load_file(spec), overrides or {}, as_text=as_text)


def apply_overrides(
    config: ml_collections.ConfigDict, overrides: Mapping[str, Any], *, as_text: bool = False
) -> ml_collections.ConfigDict:
    """Sets each dotted key of `overrides` on `config` in place (and returns it).

    Keys must already exist (no new keys, no whole groups); a list given for a tuple-valued key is
    stored as a tuple. Overriding one of `EXCLUSIVE_KEYS` unsets the other. UsageError naming the
    key for an unknown key, an ill-typed value, or both exclusive keys set.
    """
    if as_text:
        overrides = {k: _parse_at(config, k, v) for k, v in overrides.items()}
    given = {k: v for k, v in overrides.items() if k in EXCLUSIVE_KEYS and v}  # unset: 0, ()
    if len(given) > 1:
        raise UsageError(
            "set either model.depth or model.stage_sizes, not both (got "
            + ", ".join(f"{k}={v!r}" for k, v in given.items())
            + "); model.depth=0 with model.stage_sizes for a custom layout"
        )
    if given:
        overrides = {**{k: v for k, v in EXCLUSIVE_KEYS.items() if k not in overrides}, **overrides}
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        node = config
        for i, part in enumerate(parents):
            child = node.get(part)
            if not isinstance(child, ml_collections.ConfigDict):
                raise UsageError(
                    f"unknown config key {key!r}: {'.'.join(parents[: i + 1])!r} is "
                    "not a config group"
                )
            node = child
        if leaf not in node:
            raise UsageError(
                f"unknown config key {key!r}; known keys there: {', '.join(sorted(node.keys()))}"
            )
        current = node[leaf]
        if isinstance(current, ml_collections.ConfigDict):
            raise UsageError(f"config key {key!r} is a group; override its fields one by one")
        if isinstance(current, tuple) and isinstance(value, list):
            value = tuple(value)
        try:
            node[leaf] = value
        except (TypeError, ValueError, AttributeError, KeyError) as e:
            raise UsageError(
                f"cannot set config key {key!r} to {value!r}: {first_line(e)}"
            ) from None
    return config


def _parse_at(config: ml_collections.ConfigDict, key: str, text: str) -> Any:
    """`text` parsed for the field at dotted `key` (unknown keys pass through as text, for
    `apply_overrides` to name)."""
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            return text
        node = node[part]
    return parse_text(key, node, text)


def parse_text(key: str, current: Any, text: str) -> Any:
    """A command-line value for the field holding `current`: bools from true/false/1/0, numbers,
    tuples from "1,2" or "(1, 2)", strings as given (None from "None" where the field is None)."""
    if isinstance(current, bool):
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise UsageError(f"config key {key!r} wants true or false, got {text!r}")
    if isinstance(current, int | float):
        try:
            return type(current)(text)
        except ValueError:
            raise UsageError(
                f"config key {key!r} wants a{'n int' if isinstance(current, int) else ' float'}, "
                f"got {text!r}"
            ) from None
    if isinstance(current, tuple):
        try:
            value = ast.literal_eval(text) if text.strip() else ()
        except (ValueError, SyntaxError):
            raise UsageError(f"config key {key!r} wants a tuple like 1,2,3, got {text!r}") from None
        return tuple(value) if isinstance(value, list | tuple) else (value,)
    if current is None and text == "None":
        return None
    return text


def split_flags(argv: Sequence[str], program: str) -> tuple[str | None, dict[str, str], list[str]]:
    """(spec, {dotted key: text}, other args) from `--config SPEC` / `--config=SPEC` and
    `--config.KEY=VALUE` / `--config.KEY VALUE` flags, in the order given."""
    spec, overrides, rest = None, {}, []
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        name, eq, value = arg.partition("=")
        if name == "--config" or name.startswith("--config."):
            if not eq:
                if i + 1 >= len(args):
                    raise UsageError(f"{program}: {name} needs a value")
                value = args[i + 1]
                i += 1
            if name == "--config":
                spec = value
            else:
                overrides[name[len("--config.") :]] = value
        else:
            rest.append(arg)
        i += 1
    return spec, overrides, rest


__all__ = [
    "BUNDLED", "apply_overrides", "import_file", "load", "load_file", "parse_text", "split_flags",
]  # fmt: skip


def from_saved(tree: Mapping[str, Any]) -> ml_collections.ConfigDict:
    """A run's config from the JSON tree of its config.json: the base config with every saved
    value set (keys added since the run keep their defaults). UsageError for an unknown key."""
    from flax.traverse_util import flatten_dict

    from rsjax.configs.base import get_base_config

    return apply_overrides(get_base_config(), flatten_dict(dict(tree), sep="."))
