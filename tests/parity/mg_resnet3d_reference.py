"""Model Garden's 3D ResNet on random weights: the reference for rsjax's `ResNet3D`.

Runs in the reference venv `.venv-mg` (tensorflow-cpu, tf-keras and tf-models-official; never
an rsjax dependency): `make fixtures-3d` regenerates the fixture that the tests read without
TensorFlow Models installed:

    .venv-mg/bin/python tests/parity/mg_resnet3d_reference.py \
        --out tests/fixtures/mg_tiny_resnet3d.npz

The tiny network is Model Garden's `ResNet3D` with a spec of its own (bottleneck widths
8-16-32-64, blocks 1-2-1-1), the ResNet-D stem (v1) with temporal kernel 5 and stride 2, a
temporal pool stride 2, temporal kernels 3 | 1 3 | 3 | 1, a temporal stride 2 in c4,
self-gating in c3 and c5, SE 0.25, BN momentum 0.99 and epsilon 1e-3, then the video
classifier's head (global average pool, dense). Every BatchNorm gets a random gamma, beta and
moving statistics, so eval mode tests the statistics and train mode the batch statistics.

The npz holds the weights under rsjax's names ("params/c2_block0/temporal_conv/kernel",
"batch_stats/..."), the clip, the logits in eval and train mode, and `--params` prints Model
Garden's parameter counts of its ResNet3D50 and ResNet3DRS-50 backbones (for the tests).
"""

import argparse
import json

import numpy as np
import tensorflow as tf
import tf_keras
from official.vision.modeling.backbones import resnet_3d
from official.vision.modeling.layers import nn_blocks_3d

TINY_ID = 10  # a model id Model Garden does not use
TINY_SPEC = [("bottleneck3d", 8, 1), ("bottleneck3d", 16, 2), ("bottleneck3d", 32, 1),
             ("bottleneck3d", 64, 1)]  # fmt: skip
TINY = dict(
    model_id=TINY_ID,
    temporal_strides=[1, 1, 2, 1],
    temporal_kernel_sizes=[(3,), (1, 3), (3,), (1,)],
    use_self_gating=[False, True, False, True],
    stem_type="v1",
    stem_conv_temporal_kernel_size=5,
    stem_conv_temporal_stride=2,
    stem_pool_temporal_stride=2,
    se_ratio=0.25,
    norm_momentum=0.99,
    norm_epsilon=1e-3,
)
CLASSES = 7
CLIP = (2, 8, 33, 33, 3)  # odd frames: TF SAME pads strided convs asymmetrically


def randomize_batch_norms(model: tf_keras.Model, rng: np.random.Generator) -> None:
    for layer in iter_layers(model):
        if isinstance(layer, tf_keras.layers.BatchNormalization) and layer.built:
            n = layer.gamma.shape[0]
            layer.gamma.assign(rng.uniform(0.5, 1.5, n).astype(np.float32))
            layer.beta.assign(rng.normal(0, 0.2, n).astype(np.float32))
            layer.moving_mean.assign(rng.normal(0, 0.2, n).astype(np.float32))
            layer.moving_variance.assign(rng.uniform(0.5, 1.5, n).astype(np.float32))


def iter_layers(layer):
    yield layer
    for sub in getattr(layer, "_self_tracked_trackables", []):
        if isinstance(sub, tf_keras.layers.Layer):
            yield from iter_layers(sub)


def rsjax_weights(backbone: tf_keras.Model, dense: tf_keras.layers.Dense, blocks_per_stage) -> dict:
    """Model Garden's variables under rsjax `ResNet3D` names (what the converter would do)."""
    out = {}

    def bn(prefix: str, layer) -> None:
        out[f"params/{prefix}/scale"] = layer.gamma.numpy()
        out[f"params/{prefix}/bias"] = layer.beta.numpy()
        out[f"batch_stats/{prefix}/mean"] = layer.moving_mean.numpy()
        out[f"batch_stats/{prefix}/var"] = layer.moving_variance.numpy()

    def of_type(kind: type) -> list:
        return [layer for layer in backbone.layers if isinstance(layer, kind)]

    convs = of_type(tf_keras.layers.Conv3D)
    norms = of_type(tf_keras.layers.BatchNormalization)
    for i, (conv, norm) in enumerate(zip(convs, norms, strict=True), start=1):
        out[f"params/stem_conv{i}/kernel"] = conv.kernel.numpy()
        bn(f"stem_bn{i}", norm)
    blocks = of_type(nn_blocks_3d.BottleneckBlock3D)
    names = [f"c{s + 2}_block{b}" for s, n in enumerate(blocks_per_stage) for b in range(n)]
    for name, block in zip(names, blocks, strict=True):
        for ours, conv in (("temporal_conv", "_temporal_conv"), ("spatial_conv", "_spatial_conv"),
                           ("expand_conv", "_expand_conv")):  # fmt: skip
            out[f"params/{name}/{ours}/kernel"] = getattr(block, conv).kernel.numpy()
        for i, norm in enumerate(("_norm1", "_norm2", "_norm3"), start=1):
            bn(f"{name}/bn{i}", getattr(block, norm))
        if (
            block._shortcut_conv.built
            and block._shortcut_conv.kernel is not None
            and (block._norm0.built)
        ):
            out[f"params/{name}/shortcut_conv/kernel"] = block._shortcut_conv.kernel.numpy()
            bn(f"{name}/shortcut_bn", block._norm0)
        if block._squeeze_excitation is not None:
            se = block._squeeze_excitation
            for ours, conv in (("reduce", se._se_reduce), ("expand", se._se_expand)):
                out[f"params/{name}/se/{ours}/kernel"] = conv.kernel.numpy()[0, 0]
                out[f"params/{name}/se/{ours}/bias"] = conv.bias.numpy()
        if block._self_gating is not None:
            gate = block._self_gating._transformer_w
            out[f"params/{name}/self_gating/transform/kernel"] = gate.kernel.numpy()[0, 0, 0]
            out[f"params/{name}/self_gating/transform/bias"] = gate.bias.numpy()
    out["params/classifier/kernel"] = dense.kernel.numpy()
    out["params/classifier/bias"] = dense.bias.numpy()
    return out


def tiny_fixture(out: str) -> None:
    tf_keras.utils.set_random_seed(0)
    resnet_3d.RESNET_SPECS[TINY_ID] = TINY_SPEC
    backbone = resnet_3d.ResNet3D(
        input_specs=tf_keras.layers.InputSpec(shape=[None, *CLIP[1:]]), **TINY
    )
    dense = tf_keras.layers.Dense(CLASSES, kernel_initializer="random_uniform")
    pool = tf_keras.layers.GlobalAveragePooling3D()

    def logits(x, training):
        return dense(pool(backbone(x, training=training)["5"]))

    clip = np.random.default_rng(1).normal(size=CLIP).astype(np.float32)
    logits(clip, False)  # builds every layer
    randomize_batch_norms(backbone, np.random.default_rng(2))
    dense.bias.assign(np.random.default_rng(3).normal(0, 0.1, CLASSES).astype(np.float32))
    weights = rsjax_weights(backbone, dense, [n for _, _, n in TINY_SPEC])  # before training
    eval_logits = logits(clip, False).numpy()
    train_logits = logits(clip, True).numpy()  # batch statistics (this also moves the averages)
    config = {k: v for k, v in TINY.items() if k != "model_id"}
    config["stage_sizes"] = [n for _, _, n in TINY_SPEC]
    config["stage_filters"] = [f for _, f, _ in TINY_SPEC]
    np.savez_compressed(
        out,
        clip=clip,
        eval_logits=eval_logits,
        train_logits=train_logits,
        config=json.dumps(config),
        versions=json.dumps({"tensorflow": tf.__version__, "tf_keras": tf_keras.__version__}),
        **{f"w/{k}": v for k, v in weights.items()},
    )
    print(f"wrote {out}: {len(weights)} arrays, |eval logits| max {np.abs(eval_logits).max():.3f}")


def parameter_counts(flops_clip: tuple[int, int] | None = None) -> dict:
    """Trainable parameters of Model Garden's ResNet3D50 and ResNet3DRS-50 backbones; with
    `flops_clip` = (frames, pixels), also TF's profiler count of their forward FLOPs for one clip
    (frames x pixels x pixels x 3)."""
    from official.vision.configs import backbones_3d

    counts = {}
    frames, pixels = flops_clip or (8, 64)
    for name, cfg in (("resnet3d50", backbones_3d.ResNet3D50()),
                      ("resnet3d_rs50", backbones_3d.ResNet3DRS())):  # fmt: skip
        repeats = [n for _, _, n in resnet_3d.RESNET_SPECS[cfg.model_id]]
        kernels = [list(b.temporal_kernel_sizes) for b in cfg.block_specs]
        if name == "resnet3d_rs50":  # build_resnet3d_rs repeats the one kernel per stage
            kernels = [k * n for k, n in zip(kernels, repeats, strict=True)]
        model = resnet_3d.ResNet3D(
            model_id=cfg.model_id,
            temporal_strides=[b.temporal_strides for b in cfg.block_specs],
            temporal_kernel_sizes=kernels,
            use_self_gating=[b.use_self_gating for b in cfg.block_specs],
            input_specs=tf_keras.layers.InputSpec(shape=[None, frames, pixels, pixels, 3]),
            stem_type=cfg.stem_type,
            stem_conv_temporal_kernel_size=cfg.stem_conv_temporal_kernel_size,
            stem_conv_temporal_stride=cfg.stem_conv_temporal_stride,
            stem_pool_temporal_stride=cfg.stem_pool_temporal_stride,
            init_stochastic_depth_rate=cfg.stochastic_depth_drop_rate,
            se_ratio=cfg.se_ratio,
        )
        counts[name] = int(sum(np.prod(v.shape) for v in model.trainable_variables))
        if flops_clip:
            counts[f"{name}_flops"] = profiler_flops(model, flops_clip)
    return counts


def profiler_flops(model: tf_keras.Model, clip: tuple[int, int]) -> int:
    """TF's profiler float-op count of `model`'s forward pass on one clip (frames, pixels)."""
    frames, pixels = clip
    spec = tf.TensorSpec([1, frames, pixels, pixels, 3], tf.float32)
    graph = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec).graph
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    return int(tf.compat.v1.profiler.profile(graph, options=options).total_float_ops)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", help="write the tiny fixture here (.npz)")
    parser.add_argument("--params", action="store_true", help="print the backbones' counts")
    parser.add_argument("--flops", type=int, nargs=2, metavar=("FRAMES", "PIXELS"),
                        help="with --params: their FLOPs for one clip of this size")  # fmt: skip
    args = parser.parse_args()
    if args.out:
        tiny_fixture(args.out)
    if args.params:
        print(json.dumps(parameter_counts(tuple(args.flops) if args.flops else None)))


if __name__ == "__main__":
    main()
