"""Runs of a sweep: a named set of config overrides over a base config (big_vision style).

A `Run` is pure data: `overrides` maps dotted config keys ("model.depth") to JSON-able values,
`base` names the config they apply to ("imagenet:resnetrs50_i160", "fashion_mnist:long"), and
`run_id` is a hash of both, so the same run gets the same id in every sweep and on every host.
"""

import dataclasses
import hashlib
import importlib
import itertools
import json
import types
from collections.abc import Iterable, Mapping
from typing import Any

import ml_collections

_CONFIG_PACKAGE = "rsjax.configs"
_BASE_CONFIGS = ("fashion_mnist", "imagenet")  # modules of rsjax/configs with get_config(preset)


def _canonical(value: Any) -> Any:
    """JSON form used for hashing: tuples as lists, integral floats as ints (350.0 == 350)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _canonical(v) for k, v in value.items()}
    return value


@dataclasses.dataclass(frozen=True)
class Run:
    """One training run of a sweep.

    Attributes:
      name: readable and unique within its sweep (e.g. "d101-w1.5-r224-e350"); no spaces or "/".
      overrides: dotted config key -> JSON-able value (read-only after construction).
      base: "CONFIG[:PRESET]", a bundled config of rsjax/configs and its preset.
      sweep: the sweep's name; `load_sweep` fills in the file's stem when empty.
    """

    name: str
    overrides: Mapping[str, Any]
    base: str
    sweep: str = ""

    def __post_init__(self) -> None:
        if not self.name or any(c.isspace() or c in "/\\:" for c in self.name):
            raise ValueError(
                f"Run name must be non-empty without spaces, '/' or ':': {self.name!r}."
            )
        if not self.base:
            raise ValueError(f"Run {self.name!r} has no base config.")
        for key in self.overrides:
            if not isinstance(key, str) or not key or any(not part for part in key.split(".")):
                raise ValueError(f"Run {self.name!r}: bad override key {key!r} (want 'a.b.c').")
        try:
            json.dumps(dict(self.overrides), allow_nan=False)
        except (TypeError, ValueError) as e:
            raise TypeError(f"Run {self.name!r}: overrides must be JSON-able: {e}") from None
        object.__setattr__(self, "overrides", types.MappingProxyType(dict(self.overrides)))

    @property
    def run_id(self) -> str:
        """8 hex digits of sha256 over the canonical JSON of base and overrides (not the name)."""
        return content_id({"base": self.base, "overrides": _canonical(dict(self.overrides))})


def content_id(payload: Any) -> str:
    """8 hex digits of sha256 over the canonical (sorted, compact) JSON of `payload`."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def product(**axes: Iterable[Any]) -> list[dict[str, Any]]:
    """Cartesian product of named axes as a list of dicts; the first axis varies slowest.

    product(depth=[50, 101], width=[1.0, 2.0]) ->
      [{"depth": 50, "width": 1.0}, {"depth": 50, "width": 2.0}, {"depth": 101, ...}, ...]
    """
    names = list(axes)
    return [dict(zip(names, values, strict=True)) for values in itertools.product(*axes.values())]


def run_name(depth: int, width: float, resolution: int, epochs: float) -> str:
    """ "d{depth}-w{width}-r{resolution px}-e{epochs}", e.g. "d101-w1.5-r224-e350"."""
    return f"d{depth}-w{width:g}-r{resolution}-e{epochs:g}"


def load_base(base: str) -> ml_collections.ConfigDict:
    """The locked config "CONFIG[:PRESET]" names (CONFIG: a module of rsjax/configs)."""
    module_name, _, preset = base.partition(":")
    if module_name not in _BASE_CONFIGS:
        raise ValueError(f"Unknown base config {base!r}; known: {', '.join(_BASE_CONFIGS)}.")
    module = importlib.import_module(f"{_CONFIG_PACKAGE}.{module_name}")
    return module.get_config(preset) if preset else module.get_config()


def apply_overrides(
    config: ml_collections.ConfigDict, overrides: Mapping[str, Any]
) -> ml_collections.ConfigDict:
    """Sets each dotted key of `overrides` on `config` in place (and returns it).

    Keys must already exist (no new keys, no whole groups); a list given for a tuple-valued key is
    stored as a tuple. Raises ValueError naming the key for an unknown key or an ill-typed value.
    """
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        node = config
        for i, part in enumerate(parents):
            child = node.get(part)
            if not isinstance(child, ml_collections.ConfigDict):
                raise ValueError(
                    f"Unknown config key {key!r}: {'.'.join(parents[: i + 1])!r} is "
                    "not a config group."
                )
            node = child
        if leaf not in node:
            raise ValueError(
                f"Unknown config key {key!r}; known keys there: {', '.join(sorted(node.keys()))}."
            )
        current = node[leaf]
        if isinstance(current, ml_collections.ConfigDict):
            raise ValueError(f"Config key {key!r} is a group; override its fields one by one.")
        if isinstance(current, tuple) and isinstance(value, list):
            value = tuple(value)
        try:
            node[leaf] = value
        except (TypeError, ValueError, AttributeError, KeyError) as e:
            raise ValueError(f"Cannot set config key {key!r} to {value!r}: {e}") from None
    return config


def build_config(run: Run) -> ml_collections.ConfigDict:
    """The run's full config: its base config, `name` set to the run's name, then its overrides."""
    config = load_base(run.base)
    config.name = run.name
    return apply_overrides(config, run.overrides)
