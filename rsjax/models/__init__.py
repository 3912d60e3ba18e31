"""ResNet-RS, EfficientNet and 3D ResNet(-RS) models: `ResNetRS`, `EfficientNet`, `ResNet3D`,
block layouts, named presets (`create_model`) and timm weight conversion."""

from rsjax.models.convert import from_timm_state_dict
from rsjax.models.efficientnet import EfficientNet
from rsjax.models.layouts import BLOCK_LAYOUTS, resolve_stage_sizes
from rsjax.models.registry import PRESETS, Preset, create_model, get_preset, list_models
from rsjax.models.resnet3d import ResNet3D, temporal_kernels
from rsjax.models.resnet_rs import ResNetRS, abstract_variables, stage_drop_rates

__all__ = [
    "BLOCK_LAYOUTS",
    "PRESETS",
    "EfficientNet",
    "Preset",
    "ResNet3D",
    "ResNetRS",
    "abstract_variables",
    "create_model",
    "from_timm_state_dict",
    "get_preset",
    "list_models",
    "resolve_stage_sizes",
    "stage_drop_rates",
    "temporal_kernels",
]
