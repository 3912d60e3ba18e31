"""One validation of a full config, run by every entry point before any expensive work.

`validate(config)` checks the values no lower layer checks (durations, batch sizes, rates, image
sizes, the mesh against the batch) and that the model it describes can be built
(`build_model`: an unknown depth, a depth beside explicit `stage_sizes`, a bad dtype). It needs
no dataset and no devices, so `rsjax sweep plan` rejects what `rsjax train` would reject.
"""

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from rsjax.configs.base import get_base_config
from rsjax.errors import UsageError
from rsjax.models import EfficientNet, ResNet3D, ResNetRS, layouts, resnet3d
from rsjax.models.registry import FAMILIES

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
# `config.model` keys passed to `ResNetRS` as they are (depth, stage_sizes and dtype are mapped).
MODEL_FIELDS = (
    "width_multiplier",
    "se_ratio",
    "dropout_rate",
    "stochastic_depth_rate",
    "stem_downsample",
    "stem_stride",
    "resnet_d",
    "conv_impl",
    "scan_blocks",
    "remat",
    "bn_momentum",
    "bn_group_size",
)
# `config.model` key -> EfficientNet field; the ResNet-RS-only keys must keep these values.
EFFICIENTNET_FIELDS = {
    "width_multiplier": "width",
    "depth_multiplier": "depth",
    "dropout_rate": "dropout_rate",
    "stochastic_depth_rate": "drop_connect_rate",  # of the last block, linear in the index
    "se_ratio": "se_ratio",
    "stem_stride": "stem_stride",
    "bn_momentum": "bn_momentum",
    "conv_impl": "conv_impl",
}
RESNET_ONLY_DEFAULTS = {
    "depth": 0,
    "stage_sizes": (),
    "stem_downsample": "conv",
    "resnet_d": True,
    "scan_blocks": False,
    "remat": "none",
    "bn_group_size": 0,
}
# `config.model` keys a 3D ResNet does not have, with the values it must keep (the depth
# multiplier is `_check_layout`'s).
NOT_3D_DEFAULTS = {
    "stem_downsample": "conv",
    "stem_stride": 2,
    "conv_impl": "auto",
    "scan_blocks": False,
    "remat": "none",
    "bn_group_size": 0,
}
# `config.model.temporal`: 3D ResNet fields, at the base config's values in the other families.
TEMPORAL_DEFAULTS = dict(get_base_config().model.temporal)
OPTIMIZERS = ("sgd", "rmsprop")
INIT_WEIGHTS = ("ema", "raw")  # of an rsjax run directory named by init_from.path
SCHEDULES = ("cosine", "exponential")
_POSITIVE = (
    "global_batch_size",
    "eval_batch_size",
    "log_every_steps",
    "checkpoint_every_steps",
    "keep_checkpoints",
)


def build_model(config: ml_collections.ConfigDict) -> nn.Module:
    """The ResNetRS, EfficientNet or ResNet3D a config describes (`model.family`; UsageError
    naming the field for a bad one)."""
    m = config.model
    if m.dtype not in DTYPES:
        raise UsageError(f"model.dtype must be one of {sorted(DTYPES)}, got {m.dtype!r}")
    if m.family not in FAMILIES:
        raise UsageError(f"model.family must be one of {sorted(FAMILIES)}, got {m.family!r}")
    if m.family == "resnet3d":
        return _build_resnet3d(config)
    _keep_defaults(
        m.temporal, TEMPORAL_DEFAULTS, "model.temporal",
        f"is a 3D ResNet field; with model.family={m.family} leave it at {{neutral!r}}",
    )  # fmt: skip
    if m.family == "efficientnet":
        return _build_efficientnet(config)
    _check_layout(m)
    try:
        return ResNetRS(
            depth=m.depth,
            stage_sizes=tuple(m.stage_sizes) or None,
            num_classes=config.data.num_classes,
            dtype=DTYPES[m.dtype],
            **{name: m[name] for name in MODEL_FIELDS},
        )
    except (ValueError, TypeError) as e:
        raise UsageError(f"model: {e}") from None


def _keep_defaults(
    group: ml_collections.ConfigDict, defaults: dict, prefix: str, reason: str
) -> None:
    """UsageError "PREFIX.KEY=VALUE REASON" for the first key of `defaults` that `group` does not
    hold at its value (sequences compared as tuples); `reason` may name `{neutral}`."""
    for key, neutral in defaults.items():
        value = tuple(group[key]) if isinstance(neutral, tuple) else group[key]
        if value != neutral:
            raise UsageError(f"{prefix}.{key}={group[key]!r} {reason.format(neutral=neutral)}")


def _check_layout(m: ml_collections.ConfigDict) -> None:
    """A ResNet's depth fields: no EfficientNet depth multiplier, not both depth and layout."""
    if m.depth_multiplier != 1.0:
        raise UsageError(
            f"model.depth_multiplier={m.depth_multiplier} is an EfficientNet field; a ResNet "
            "scales model.depth (or model.stage_sizes)"
        )
    if m.stage_sizes and m.depth:
        raise UsageError(
            f"model.depth={m.depth} conflicts with model.stage_sizes={tuple(m.stage_sizes)} (a "
            f"{layouts.layer_count(m.stage_sizes)}-layer layout): set one, and model.depth=0 "
            "for a custom layout"
        )


def _build_resnet3d(config: ml_collections.ConfigDict) -> ResNet3D:
    m, t = config.model, config.model.temporal
    _check_layout(m)
    _keep_defaults(
        m, NOT_3D_DEFAULTS, "model",
        "is not a 3D ResNet field; with model.family=resnet3d set it to {neutral!r}",
    )  # fmt: skip
    try:
        sizes = layouts.resolve_stage_sizes(m.depth, tuple(m.stage_sizes) or None)
        return ResNet3D(
            depth=m.depth,
            stage_sizes=tuple(m.stage_sizes) or None,
            temporal_kernel_sizes=resnet3d.temporal_kernels(t.kernels, sizes),
            width_multiplier=m.width_multiplier,
            num_classes=config.data.num_classes,
            stem="resnet_d" if m.resnet_d else "vanilla",
            stem_temporal_kernel=t.stem_kernel,
            stem_temporal_stride=t.stem_stride,
            stem_pool_temporal_stride=t.pool_stride,
            self_gating=(bool(t.self_gating),) * len(sizes),
            se_ratio=m.se_ratio,
            dropout_rate=m.dropout_rate,
            stochastic_depth_rate=m.stochastic_depth_rate,
            resnet_d_shortcut=t.resnet_d_shortcut,
            bn_momentum=m.bn_momentum,
            dtype=DTYPES[m.dtype],
        )
    except (ValueError, TypeError) as e:
        raise UsageError(f"model: {e}") from None


def example_shape(
    config: ml_collections.ConfigDict, channels: int | None = None, *, eval: bool = False
) -> tuple[int, ...]:
    """The shape of one input example: an image [S, S, C] or a clip [T, S, S, C]; with `eval`,
    at the evaluation resolution and, for clips, with the views [V, T, S, S, C]. `channels`
    defaults to `data.channels`."""
    data = config.data
    size = (data.eval_image_size or data.image_size) if eval else data.image_size
    shape = (size, size, channels or data.channels)
    if data.num_frames <= 0:
        return shape
    views = (data.eval_clips * data.eval_crops,) if eval else ()
    return (*views, data.num_frames, *shape)


def _validate_clips(config: ml_collections.ConfigDict) -> None:
    """The video keys of `data`, and that the family takes what the data gives (clips exactly
    when model.family=resnet3d)."""
    data = config.data
    if data.eval_image_size < 0:
        raise UsageError(f"data.eval_image_size must be >= 0, got {data.eval_image_size}")
    if data.num_frames < 0:
        raise UsageError(f"data.num_frames must be >= 0 (0: images), got {data.num_frames}")
    video = config.model.family == "resnet3d"
    if video and data.num_frames == 0:
        raise UsageError("model.family=resnet3d takes clips: set data.num_frames > 0")
    if not video and data.num_frames > 0:
        raise UsageError(
            f"data.num_frames={data.num_frames} gives clips, but model.family="
            f"{config.model.family} takes images: use model.family=resnet3d, or data.num_frames=0"
        )
    if not video:
        return
    if data.frame_stride < 1:
        raise UsageError(f"data.frame_stride must be >= 1, got {data.frame_stride}")
    for key in ("eval_clips", "eval_crops"):
        if data[key] < 1:
            raise UsageError(f"data.{key} must be >= 1, got {data[key]}")
    scale = tuple(data.scale_range)
    if len(scale) != 2 or not 1.0 <= scale[0] <= scale[1]:
        raise UsageError(f"data.scale_range must be (low, high) with 1 <= low <= high, got {scale}")
    if (data.randaugment_magnitude > 0 and data.randaugment_layers > 0) or data.cutout_pad > 0:
        raise UsageError(
            "RandAugment and cutout are image augmentations; clips use scale jittering "
            "(data.scale_range): set data.randaugment_magnitude=0 and data.cutout_pad=0"
        )
    if config.cotrain.pseudo_labels:
        raise UsageError("co-training (cotrain.pseudo_labels) takes images, not clips")


def _build_efficientnet(config: ml_collections.ConfigDict) -> EfficientNet:
    m = config.model
    _keep_defaults(
        m, RESNET_ONLY_DEFAULTS, "model",
        "is a ResNet-RS field; with model.family=efficientnet set it to {neutral!r} (scale with "
        "model.width_multiplier and model.depth_multiplier)",
    )  # fmt: skip
    try:
        return EfficientNet(
            num_classes=config.data.num_classes,
            dtype=DTYPES[m.dtype],
            **{field: m[key] for key, field in EFFICIENTNET_FIELDS.items()},
        )
    except (ValueError, TypeError) as e:
        raise UsageError(f"model: {e}") from None


def _validate_optim(optim: ml_collections.ConfigDict) -> None:
    if optim.name not in OPTIMIZERS:
        raise UsageError(f"optim.name must be one of {list(OPTIMIZERS)}, got {optim.name!r}")
    if optim.schedule not in SCHEDULES:
        raise UsageError(f"optim.schedule must be one of {list(SCHEDULES)}, got {optim.schedule!r}")
    exponential_ok = 0 < optim.decay_rate <= 1 and optim.decay_epochs > 0
    if optim.schedule == "exponential" and not exponential_ok:
        raise UsageError(
            "optim.schedule=exponential needs 0 < optim.decay_rate <= 1 and "
            f"optim.decay_epochs > 0, got {optim.decay_rate} and {optim.decay_epochs}"
        )
    if optim.name == "rmsprop" and not (0 <= optim.rmsprop_decay < 1 and optim.rmsprop_epsilon > 0):
        raise UsageError(
            "optim.name=rmsprop needs 0 <= optim.rmsprop_decay < 1 and optim.rmsprop_epsilon > 0, "
            f"got {optim.rmsprop_decay} and {optim.rmsprop_epsilon}"
        )


def validate(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Returns `config` if a run of it can start; raises UsageError naming the key otherwise."""
    if config.num_epochs < 0:
        raise UsageError(f"num_epochs must be >= 0, got {config.num_epochs}")
    if config.num_train_steps <= 0 and config.num_epochs <= 0:
        raise UsageError("set num_epochs > 0 or num_train_steps > 0")
    for key in _POSITIVE:
        if config[key] <= 0:
            raise UsageError(f"{key} must be > 0, got {config[key]}")
    if config.eval_every_epochs < 0:
        raise UsageError(f"eval_every_epochs must be >= 0, got {config.eval_every_epochs}")
    if not 0 <= config.ema_decay < 1:
        raise UsageError(f"ema_decay must be in [0, 1), got {config.ema_decay}")
    if not 0 <= config.label_smoothing < 1:
        raise UsageError(f"label_smoothing must be in [0, 1), got {config.label_smoothing}")
    data = config.data
    if data.image_size <= 0:
        raise UsageError(f"data.image_size must be > 0, got {data.image_size}")
    if not 0 <= data.cutout_pad < data.image_size:
        raise UsageError(f"data.cutout_pad must be in [0, data.image_size), got {data.cutout_pad}")
    if data.input_shards < 0 or (
        data.input_shards and config.global_batch_size % data.input_shards
    ):
        raise UsageError(
            f"data.input_shards must be >= 0 (0: one per process) and divide global_batch_size "
            f"{config.global_batch_size}, got {data.input_shards}"
        )
    _validate_optim(config.optim)
    _validate_mesh(config)
    _validate_init_from(config.init_from)
    _validate_cotrain(config)
    _validate_clips(config)
    model = build_model(config)
    if data.image_size < model.min_image_size():
        raise UsageError(
            f"data.image_size {data.image_size} is too small for this network: its "
            f"{model.num_downsamplings()} stride-2 layers need at least {model.min_image_size()} px"
        )
    return config


def _validate_init_from(init: ml_collections.ConfigDict) -> None:
    """The values of `init_from` (its path is read when the run starts: `train.init_from.check`)."""
    if init.weights not in INIT_WEIGHTS:
        raise UsageError(f"init_from.weights must be one of {INIT_WEIGHTS}, got {init.weights!r}")
    if init.step < 0:
        raise UsageError(f"init_from.step must be >= 0 (0: the newest), got {init.step}")


def pseudo_batch_size(config: ml_collections.ConfigDict, global_batch: int | None = None) -> int:
    """Pseudo-labelled images per step: `cotrain.ratio` x `global_batch` (default: the config's
    global_batch_size); 0 without co-training. `validate` checks it is a whole number."""
    if not config.cotrain.pseudo_labels:
        return 0
    return round(config.cotrain.ratio * (global_batch or config.global_batch_size))


def _validate_cotrain(config: ml_collections.ConfigDict) -> None:
    """The values of `cotrain` (its pseudo-labels are read when the run starts)."""
    cotrain = config.cotrain
    if not cotrain.pseudo_labels:
        return
    if not cotrain.ratio > 0:
        raise UsageError(f"cotrain.ratio must be > 0, got {cotrain.ratio}")
    if not cotrain.temperature > 0:
        raise UsageError(f"cotrain.temperature must be > 0, got {cotrain.temperature}")
    if not 0 <= cotrain.label_smoothing < 1:
        raise UsageError(
            f"cotrain.label_smoothing must be in [0, 1), got {cotrain.label_smoothing}"
        )
    exact, pseudo = cotrain.ratio * config.global_batch_size, pseudo_batch_size(config)
    if abs(exact - pseudo) > 1e-9 or pseudo < 1:
        raise UsageError(
            f"cotrain.ratio x global_batch_size must be a whole number of images >= 1, got "
            f"{cotrain.ratio} x {config.global_batch_size} = {exact:g}"
        )
    for divisor, what in (
        (config.mesh.data, "the mesh's data axis"),
        (config.data.input_shards, "data.input_shards"),
    ):
        if divisor > 0 and pseudo % divisor:
            raise UsageError(
                f"the pseudo-labelled batch ({pseudo} = cotrain.ratio x global_batch_size) is "
                f"not divisible by {what} ({divisor})"
            )


def _validate_mesh(config: ml_collections.ConfigDict) -> None:
    """The mesh sizes, and the batches against the data axis where its size is fixed (-1: all
    devices, checked when the mesh is made)."""
    data, model = config.mesh.data, config.mesh.model
    if data == 0 or data < -1 or model < 1:
        raise UsageError(
            f"mesh must have data >= 1 (or -1: all devices) and model >= 1, got {data}x{model}"
        )
    if data > 0:
        for key in ("global_batch_size", "eval_batch_size"):
            if config[key] % data:
                raise UsageError(
                    f"{key} {config[key]} is not divisible by the mesh's data axis ({data})"
                )
