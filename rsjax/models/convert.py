"""Weight conversion from timm's PyTorch ports of the tensorflow/tpu checkpoints to rsjax
variables: `resnetrs*` into `ResNetRS`, `tf_efficientnet_b*` into `EfficientNet`.

timm's ResNet-RS names its modules `conv1.{0,3,6}` / `bn1` / `maxpool.{0,1}` (deep stem),
`layer{1..4}.{j}.{conv,bn}{1,2,3}`, `layer{i}.{j}.se.fc{1,2}`, `layer{i}.0.downsample.{1,2}`
(ResNet-D shortcut) and `fc`. Its EfficientNet names `conv_stem` / `bn1`, `blocks.{s}.{j}.*`
(`conv_dw`, `se.conv_reduce`, `se.conv_expand`, `conv_pw`, `bn1`, `bn2` in the unexpanded first
stage; `conv_pw`, `bn1`, `conv_dw`, `bn2`, `conv_pwl`, `bn3` in the others), `conv_head` / `bn2`
and `classifier`. Depthwise kernels [C, 1, k, k] become flax's [k, k, 1, C].
"""

from collections.abc import Callable, Mapping
from typing import Any

import flax
import jax.numpy as jnp
import numpy as np

from rsjax.models.efficientnet import EfficientNet
from rsjax.models.resnet_rs import ResNetRS, abstract_variables
from rsjax.models.scanned import stack_blocks

# rsjax stem module name -> timm module name.
_STEM_NAMES = {
    "conv1": "conv1.0",
    "bn1": "conv1.1",
    "conv2": "conv1.3",
    "bn2": "conv1.4",
    "conv3": "conv1.6",
    "bn3": "bn1",
    "conv4": "maxpool.0",
    "bn4": "maxpool.1",
}
# rsjax block submodule -> timm block submodule.
_BLOCK_NAMES = {
    "shortcut_conv": "downsample.1",
    "shortcut_bn": "downsample.2",
    "se/reduce": "se.fc1",
    "se/expand": "se.fc2",
}
# (collection, rsjax leaf name) -> timm tensor name.
_LEAF_NAMES = {
    ("params", "kernel"): "weight",
    ("params", "scale"): "weight",
    ("params", "bias"): "bias",
    ("batch_stats", "mean"): "running_mean",
    ("batch_stats", "var"): "running_var",
}
_IGNORED_SUFFIXES = ("num_batches_tracked",)

_EFFICIENTNET_TOP = {
    "stem_conv": "conv_stem",
    "stem_bn": "bn1",
    "head_conv": "conv_head",
    "head_bn": "bn2",
    "classifier": "classifier",
}
# rsjax MBConv submodule -> timm, in blocks with an expansion conv (InvertedResidual) and in
# those without (DepthwiseSeparableConv).
_MBCONV_NAMES = {
    "expand_conv": "conv_pw",
    "expand_bn": "bn1",
    "depthwise_conv": "conv_dw",
    "depthwise_bn": "bn2",
    "se_reduce": "se.conv_reduce",
    "se_expand": "se.conv_expand",
    "project_conv": "conv_pwl",
    "project_bn": "bn3",
}
_UNEXPANDED_NAMES = {
    **_MBCONV_NAMES,
    "depthwise_bn": "bn1",
    "project_conv": "conv_pw",
    "project_bn": "bn2",
}


def timm_key(collection: str, path: tuple[str, ...]) -> str:
    """The timm state-dict key of the rsjax variable `variables[collection][path]`."""
    *modules, leaf = path
    top, rest = modules[0], "/".join(modules[1:])
    if top == "stem":
        module = _STEM_NAMES[rest]
    elif top == "classifier":
        module = "fc"
    elif top.startswith("c") and "_block" in top:
        stage, block = top[1:].split("_block")
        module = f"layer{int(stage) - 1}.{int(block)}.{_BLOCK_NAMES.get(rest, rest)}"
    else:
        raise KeyError(f"no timm name for rsjax module {'/'.join(modules)!r}")
    return f"{module}.{_LEAF_NAMES[(collection, leaf)]}"


def efficientnet_timm_key(collection: str, path: tuple[str, ...], expanded: bool = True) -> str:
    """The timm `tf_efficientnet_*` state-dict key of the rsjax EfficientNet variable
    `variables[collection][path]`; `expanded`: its block has an expansion conv."""
    *modules, leaf = path
    top = modules[0]
    if top in _EFFICIENTNET_TOP and len(modules) == 1:
        module = _EFFICIENTNET_TOP[top]
    elif top.startswith("stage") and "_block" in top and len(modules) == 2:
        stage, block = top[len("stage") :].split("_block")
        names = _MBCONV_NAMES if expanded else _UNEXPANDED_NAMES
        module = f"blocks.{int(stage)}.{int(block)}.{names[modules[1]]}"
    else:
        raise KeyError(f"no timm name for rsjax module {'/'.join(modules)!r}")
    return f"{module}.{_LEAF_NAMES[(collection, leaf)]}"


def _to_numpy(value: Any) -> np.ndarray:
    """A torch tensor (without importing torch) or array-like as a float32 numpy array."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=np.float32)


def _to_flax_layout(array: np.ndarray, target_ndim: int) -> np.ndarray:
    """timm layouts -> flax: conv [O, I, kh, kw] -> [kh, kw, I, O]; 1x1 conv or linear -> [I, O]."""
    if array.ndim == 4 and target_ndim == 4:
        return array.transpose(2, 3, 1, 0)
    if array.ndim == 4 and target_ndim == 2:  # SE 1x1 conv used as a dense layer.
        return array[:, :, 0, 0].T
    if array.ndim == 2:
        return array.T
    return array


def from_timm_state_dict(
    model: ResNetRS | EfficientNet, state_dict: Mapping[str, Any]
) -> dict[str, Any]:
    """Converts a timm state dict into rsjax variables {"params", "batch_stats"}: `resnetrs*`
    for a `ResNetRS`, `tf_efficientnet_*` for an `EfficientNet`.

    Args:
      model: the rsjax model whose structure the state dict must fill exactly (a ResNetRS
        unrolled or `scan_blocks=True`: the result has that model's layout).
      state_dict: timm tensor name -> torch tensor or numpy array
        (e.g. from `safetensors.numpy.load_file`).

    Raises:
      ValueError: a key missing from or unexpected in the state dict, or a shape mismatch; the
        message names the key.
    """
    if isinstance(model, EfficientNet):
        abstract = abstract_variables(model, channels=_input_channels(state_dict, "conv_stem"))
        params = abstract["params"]

        def key_fn(collection: str, path: tuple[str, ...]) -> str:
            expanded = path[0] not in params or "expand_conv" in params[path[0]]
            return efficientnet_timm_key(collection, path, expanded)

        return _convert(abstract, state_dict, key_fn)
    if model.scan_blocks:
        return stack_blocks(from_timm_state_dict(model.clone(scan_blocks=False), state_dict))
    key = _STEM_NAMES["conv1"]
    abstract = abstract_variables(model, channels=_input_channels(state_dict, key))
    return _convert(abstract, state_dict, timm_key)


def _convert(
    abstract: Any, state_dict: Mapping[str, Any], key_fn: Callable[[str, tuple[str, ...]], str]
) -> dict[str, Any]:
    """Fills every leaf of `abstract` from `state_dict[key_fn(collection, path)]`, in flax
    layout; every state-dict key must be used."""
    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(abstract))
    used: set[str] = set()
    converted = {}
    for (collection, *path), spec in flat.items():
        key = key_fn(collection, tuple(path))
        if key not in state_dict:
            raise ValueError(
                f"timm state dict is missing {key!r} (needed for rsjax "
                f"{collection}/{'/'.join(path)}, shape {spec.shape})."
            )
        value = _to_flax_layout(_to_numpy(state_dict[key]), len(spec.shape))
        if value.shape != spec.shape:
            raise ValueError(
                f"timm tensor {key!r} has shape {value.shape} after conversion, but rsjax "
                f"{collection}/{'/'.join(path)} needs {spec.shape}."
            )
        converted[(collection, *path)] = jnp.asarray(value)
        used.add(key)
    unexpected = sorted(
        k for k in state_dict if k not in used and not k.endswith(_IGNORED_SUFFIXES)
    )
    if unexpected:
        raise ValueError(
            f"timm state dict has {len(unexpected)} unexpected key(s) for this model, "
            f"first: {unexpected[:5]}."
        )
    return flax.traverse_util.unflatten_dict(converted)


def _input_channels(state_dict: Mapping[str, Any], stem_module: str) -> int:
    """Input channels C of the first stem conv (weight [O, C, 3, 3])."""
    key = stem_module + ".weight"
    if key not in state_dict:
        raise ValueError(f"timm state dict is missing {key!r}; is it a timm model of this family?")
    return int(np.shape(state_dict[key])[1])
