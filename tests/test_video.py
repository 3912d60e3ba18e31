"""Video: the motion dataset, the clip pipeline, multi-view evaluation, the resnet3d family in
the config and trainer, bad input, and exact resume of a 3D run."""

import json
import re

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf

from rsjax import cli, configs, profiling
from rsjax.data import clips, fashion_mnist, input_pipeline, split_sizes
from rsjax.errors import UsageError
from rsjax.models import ResNet3D
from rsjax.train import init_from, programs, sharding, trainer
from rsjax.train.state import TrainState
from rsjax.train.step import eval_step, view_log_probabilities
from tests.test_train import assert_sigkill_resume_is_bit_identical

NORMAL = dict(mean=(0.0,), std=(1.0,))


def motion_config(small_fmnist, preset="motion_tiny", **overrides):
    """A `video:` preset over the small Fashion-MNIST files (256 train / 100 test videos)."""
    return configs.load(
        f"video:{preset}",
        {
            "data.manual_dir": small_fmnist["manual_dir"],
            "data.data_dir": small_fmnist["data_dir"],
            "data.shuffle_buffer": 256,
            "data.decoded_cache": False,
            "global_batch_size": 16,
            "eval_batch_size": 20,
            "mesh.data": 1,
            **overrides,
        },
    )


# --- the motion dataset ---------------------------------------------------------------------


def test_an_up_clip_is_the_down_clip_reversed_and_their_frames_are_the_same_set():
    image = np.random.default_rng(0).integers(0, 256, (28, 28, 1), dtype=np.uint8)
    down = fashion_mnist.motion_video(image, 0, centre=2, column=5)
    up = fashion_mnist.motion_video(image, 1, centre=2, column=5)
    assert down.shape == (16, 32, 32, 1) and down.dtype == np.uint8
    np.testing.assert_array_equal(up, down[::-1])
    assert sorted(f.tobytes() for f in up) == sorted(f.tobytes() for f in down)
    # The garment moves down 1 px per frame: its first non-empty row goes up by one each frame
    # while it is fully inside the canvas.
    tops = [np.flatnonzero(f.any(axis=(1, 2)))[0] for f in down]
    assert np.all(np.diff(tops[2:]) == 1)
    assert fashion_mnist.motion_label(7, 1) == 15


def test_motion_builder_prepares_deterministic_balanced_clips(small_fmnist):
    config = motion_config(small_fmnist)
    builder = input_pipeline.get_builder(config.data)
    assert input_pipeline.media_key(builder) == "video"
    assert input_pipeline.media_shape(builder) == (16, 32, 32, 1)
    assert builder.info.splits["train"].num_examples == 256  # the first 10,000 of 256 files
    for split, (_, count) in fashion_mnist.MOTION_SPLITS.items():
        assert split_sizes.KNOWN_SPLIT_SIZES[("fashion_mnist_motion", split)] == count
    assert builder.info.features["label"].num_classes == 20
    decoded = input_pipeline.decode_split(builder, "train")
    directions = decoded["label"] % 2
    assert 0.35 < directions.mean() < 0.65
    # Example i is rebuilt from the file's image i and default_rng((0, i)) (tfds stores the
    # examples in its own order, so compare as sets).
    directory = fashion_mnist.pathlib.Path(small_fmnist["manual_dir"])
    images = fashion_mnist.read_idx(directory / fashion_mnist.FILES["train"][0])
    labels = fashion_mnist.read_idx(directory / fashion_mnist.FILES["train"][1])
    rebuilt = set()
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        rng = np.random.default_rng((0, i))
        direction, centre = int(rng.integers(2)), int(rng.integers(-3, 4))
        video = fashion_mnist.motion_video(
            image[..., None], direction, centre, int(rng.integers(19))
        )
        rebuilt.add((video.tobytes(), fashion_mnist.motion_label(int(label), direction)))
    stored = {
        (v.tobytes(), int(y)) for v, y in zip(decoded["video"], decoded["label"], strict=True)
    }
    assert stored == rebuilt


# --- clip preprocessing ---------------------------------------------------------------------


def ramp_video(length=16, height=24, width=24):
    """[L, H, W, 1] uint8: a random base image plus 4 x t in frame t (no clipping)."""
    base = np.random.default_rng(1).integers(0, 100, (height, width, 1))
    return np.stack([base + 4 * t for t in range(length)]).astype(np.uint8)


def test_train_clip_crops_and_flips_every_frame_alike():
    """Frame t of the ramp video is frame 0 + 4t, so a clip whose frames share one crop, flip
    and resize differs from its first frame by a constant per frame; over seeds the crops, flips,
    scales and starts vary."""
    video = tf.constant(ramp_video())
    first_frames = set()
    for seed in range(12):
        clip = clips.train_clip(
            video, tf.constant([seed, 7], tf.int64), frames=4, stride=3, size=16,
            scale_range=(1.0, 1.5), flip=True, resize_method="bilinear", **NORMAL,
        ).numpy()  # fmt: skip
        assert clip.shape == (4, 16, 16, 1)
        deltas = clip[1:] - clip[:1]
        np.testing.assert_allclose(deltas, np.broadcast_to(12.0 * np.arange(1, 4)[:, None, None,
                                   None], deltas.shape), atol=1e-3)  # fmt: skip
        first_frames.add(clip[0].round(3).tobytes())
    assert len(first_frames) > 6  # different starts, scales, crops or flips across seeds


def test_train_clip_flips_the_whole_clip_or_none_of_it():
    left_bright = np.zeros((8, 20, 20, 1), np.uint8)
    left_bright[:, :, :10] = 200
    flips = set()
    for seed in range(16):
        clip = clips.train_clip(
            tf.constant(left_bright), tf.constant([seed, 0], tf.int64), frames=4, stride=1,
            size=20, scale_range=(1.0, 1.0), flip=True, resize_method="bilinear", **NORMAL,
        ).numpy()  # fmt: skip
        per_frame = {bool(frame[:, 0].mean() < frame[:, -1].mean()) for frame in clip}
        assert len(per_frame) == 1
        flips |= per_frame
    assert flips == {True, False}


def test_eval_views_take_evenly_spaced_clips_and_crops_along_the_long_side():
    video = np.zeros((20, 16, 40, 1), np.uint8)
    video += np.arange(20, dtype=np.uint8)[:, None, None, None]  # frame t has value t
    video[:, :, :, 0] += (np.arange(40) // 10).astype(np.uint8)[None, None, :] * 50  # columns
    views = clips.eval_views(
        tf.constant(video), frames=3, stride=2, size=16, clips=3, crops=3,
        resize_method="nearest", **NORMAL,
    ).numpy()  # fmt: skip
    assert views.shape == (9, 3, 16, 16, 1)
    # Clips start at 0, 7, 15 (span 5 of 20 frames: last start 15); frames start + 0, 2, 4.
    starts = [views[3 * c, :, 0, 0, 0] % 50 for c in range(3)]
    for got, start in zip(starts, (0, 7, 15), strict=True):
        np.testing.assert_array_equal(got, start + np.array([0, 2, 4]))
    # Crops at left 0, 12, 24 of the 40 px width: their first column's 10-px band is 0, 1, 2.
    bands = [int(views[k, 0, 0, 0, 0] // 50) for k in range(3)]
    assert bands == [0, 1, 2]
    one = clips.eval_views(
        tf.constant(video), frames=3, stride=2, size=16, clips=1, crops=1,
        resize_method="nearest", **NORMAL,
    ).numpy()  # fmt: skip
    assert one.shape == (1, 3, 16, 16, 1)
    np.testing.assert_array_equal(one[0, :, 0, 0, 0] % 50, 7 + np.array([0, 2, 4]))  # middle
    np.testing.assert_array_equal(one[0], views[4])  # the middle clip's centre crop


def test_a_video_shorter_than_the_clip_repeats_from_its_start():
    video = tf.constant(np.arange(5, dtype=np.uint8)[:, None, None, None] * np.ones((1, 4, 4, 1),
                        np.uint8))  # fmt: skip
    frames = clips.clip_frames(video, tf.constant(0), 4, 2).numpy()[:, 0, 0, 0]
    np.testing.assert_array_equal(frames, [0, 2, 4, 1])


# --- multi-view evaluation --------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_3d():
    model = ResNet3D(
        depth=0, stage_sizes=(1, 1, 1, 1), stage_filters=(4, 4, 4, 4), width_multiplier=0.125,
        num_classes=5, temporal_kernel_sizes=((3,), (1,), (3,), (1,)), se_ratio=0.25,
    )  # fmt: skip
    clip = jnp.zeros((1, 4, 17, 17, 1))
    return model, jax.jit(lambda x: model.init(jax.random.key(0), x, train=False))(clip)


def test_one_view_evaluates_as_single_view_and_several_average_their_softmax(tiny_3d):
    model, variables = tiny_3d
    clips_ = jax.random.normal(jax.random.key(0), (6, 3, 4, 17, 17, 1))
    labels = jnp.array([0, 1, 2, 3, 4, 0])
    mask = jnp.array([1, 1, 1, 1, 1, 0], jnp.float32)
    state = TrainState(step=0, params=variables["params"], batch_stats=variables["batch_stats"],
                       opt_state=(), ema_params=variables["params"],
                       ema_batch_stats=variables["batch_stats"])  # fmt: skip
    single = eval_step(state, {"images": clips_[:, 0], "labels": labels, "mask": mask}, model=model)
    one_view = eval_step(
        state, {"images": clips_[:, :1], "labels": labels, "mask": mask}, model=model, views=True
    )
    for key, value in single.items():
        np.testing.assert_allclose(one_view[key], value, rtol=1e-5, atol=1e-5)
    several = eval_step(
        state, {"images": clips_, "labels": labels, "mask": mask}, model=model, views=True
    )
    per_view = [jax.nn.softmax(model.apply(variables, clips_[:, v], train=False)) for v in range(3)]
    assert np.abs(per_view[0] - per_view[1]).max() > 1e-3  # the views disagree: a real average
    mean = np.mean(per_view, axis=0)
    correct = (mean.argmax(1) == np.asarray(labels)) * np.asarray(mask)
    assert float(several["top1"]) == correct.sum()
    want_loss = -np.sum(np.log(mean[np.arange(6), labels]) * np.asarray(mask))
    np.testing.assert_allclose(several["loss"], want_loss, rtol=1e-5)
    np.testing.assert_allclose(
        np.exp(view_log_probabilities(model, variables, clips_)), mean, rtol=1e-5, atol=1e-7
    )


# --- config, validation and bad input -------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"data.frame_stride": 0}, "data.frame_stride must be >= 1"),
        ({"data.num_frames": 0}, "model.family=resnet3d takes clips"),
        ({"data.eval_clips": 0}, "data.eval_clips must be >= 1"),
        ({"data.scale_range": (0.8, 1.0)}, "data.scale_range must be"),
        ({"data.randaugment_magnitude": 5.0}, "RandAugment and cutout are image augmentations"),
        ({"model.temporal.kernels": "fast"}, "temporal kernel pattern must be one of"),
        ({"model.stem_stride": 1}, "model.stem_stride=1 is not a 3D ResNet field"),
    ],
)
def test_bad_video_configs_are_one_usage_error(small_fmnist, overrides, message):
    with pytest.raises(UsageError, match=message):
        configs.validate(motion_config(small_fmnist, **overrides))


def test_image_families_refuse_clips_and_temporal_fields(small_fmnist):
    clips_given = re.escape("gives clips, but model.family=resnet_rs takes images")
    with pytest.raises(UsageError, match=clips_given):
        configs.validate(configs.load("fashion_mnist:tiny", {"data.num_frames": 8}))
    temporal = re.escape("model.temporal.stem_kernel=3 is a 3D ResNet field")
    with pytest.raises(UsageError, match=temporal):
        configs.validate(configs.load("fashion_mnist:tiny", {"model.temporal.stem_kernel": 3}))


def test_image_presets_keep_their_run_ids_with_the_video_keys():
    """The video keys are ADDED_KEYS: at their defaults they are not part of a run id, and a
    config.json written before them (no such keys, lists for tuples) reads as the same run."""
    config = configs.load("fashion_mnist")
    with_keys = configs.run_id(config)
    assert configs.run_id(json_without_video_keys(config)) == with_keys
    changed = configs.apply_overrides(config, {"data.eval_image_size": 32})
    assert configs.run_id(changed) != with_keys


def json_without_video_keys(config):
    tree = json.loads(config.to_json())
    for key in ("eval_image_size", "num_frames", "frame_stride", "scale_range", "eval_clips",
                "eval_crops"):  # fmt: skip
        del tree["data"][key]
    del tree["model"]["temporal"]
    return tree


@pytest.mark.parametrize(
    ("preset", "overrides", "message"),
    [
        ("video:motion_tiny", {"data.num_frames": 8, "data.frame_stride": 3},
         "spans 22 frames, longer than fashion_mnist_motion's 16-frame videos"),
        ("fashion_mnist:tiny", {"data.name": "fashion_mnist_motion", "data.num_classes": 20},
         "holds videos, but this config trains an image model"),
    ],
)  # fmt: skip
def test_dataset_mismatches_fail_before_anything_compiles(
    small_fmnist, tmp_path, monkeypatch, preset, overrides, message
):
    config = configs.load(
        preset,
        {
            "data.manual_dir": small_fmnist["manual_dir"],
            "data.data_dir": small_fmnist["data_dir"],
            "mesh.data": 1,
            **overrides,
        },
    )
    monkeypatch.setattr(programs, "build", lambda *a: pytest.fail("built a program"))
    with pytest.raises(UsageError, match=message):
        trainer.train_and_evaluate(config, tmp_path / "run")


def test_example_shapes_and_the_program_batches(small_fmnist):
    config = configs.validate(motion_config(small_fmnist, **{"data.eval_clips": 3}))
    assert configs.example_shape(config) == (8, 32, 32, 1)
    assert configs.example_shape(config, eval=True) == (3, 8, 32, 32, 1)
    program = programs.build(config, sharding.make_mesh(1, 1), configs.example_shape(config))
    assert program.abstract_batch(16)["images"].shape == (16, 8, 32, 32, 1)
    assert program.abstract_batch(20, eval=True)["images"].shape == (20, 3, 8, 32, 32, 1)


# --- training -------------------------------------------------------------------------------


def test_a_tiny_3d_run_trains_evaluates_and_records_clips(small_fmnist, tmp_path):
    config = motion_config(small_fmnist, **{"num_train_steps": 6, "log_every_steps": 3})
    metrics = trainer.train_and_evaluate(config, tmp_path / "run")
    record = trainer.existing_result(tmp_path / "run")
    assert record["status"] == "complete"
    assert record["model"]["family"] == "resnet3d" and record["model"]["frames"] == 8
    model = configs.build_model(config)
    assert record["model"]["flops_per_image"] == profiling.flops_per_clip(model, 8, 32, 1)
    assert 0.0 <= metrics["ema_top1"] <= 1.0 and np.isfinite(metrics["loss"])
    # `rsjax predict` computes what the run's EMA evaluation did: the same top-1 on its split.
    out = tmp_path / "test.npz"
    assert cli.main(["predict", "--run", str(tmp_path / "run"), "--out", str(out)]) == 0
    predictions = np.load(out)
    assert predictions["probabilities"].shape == (100, 20)
    np.testing.assert_allclose(predictions["probabilities"].sum(1), 1.0, rtol=1e-5)
    top1 = np.mean(predictions["probabilities"].argmax(1) == predictions["labels"])
    assert top1 == pytest.approx(metrics["ema_top1"], abs=1e-6)
    assert cli.main(["predict", "--run", str(tmp_path / "run"), "--out", str(out)]) == 2
    assert cli.main(["predict", "--run", str(tmp_path), "--out", str(tmp_path / "x.npz")]) == 2
    # `init_from` another 3D run: its EMA backbone, bit for bit; the head initialised anew.
    fresh = jax.jit(lambda x: model.init(jax.random.key(5), x, train=False))(
        jnp.zeros((1, 8, 32, 32, 1))
    )
    source = init_from.run_variables(tmp_path / "run", 0, "ema")
    started = init_from.transfer(jax.tree.map(np.asarray, fresh), source)
    flat_started = flax.traverse_util.flatten_dict(started)
    flat_source = flax.traverse_util.flatten_dict(source)
    for key, value in flat_started.items():
        if key[:2] == ("params", "classifier"):
            np.testing.assert_array_equal(value, flax.traverse_util.flatten_dict(fresh)[key])
        else:
            np.testing.assert_array_equal(value, flat_source[key])


@pytest.mark.slow
def test_sigkill_then_restart_of_a_3d_run_is_bit_identical(small_fmnist, tmp_path):
    """As the 2D test: 16 steps of 16 clips (16 steps an epoch), a checkpoint every 3."""
    steps, every = 20, 3
    flags = [
        "--config", "video:motion_tiny",
        f"--config.data.manual_dir={small_fmnist['manual_dir']}",
        f"--config.data.data_dir={small_fmnist['data_dir']}",
        "--config.data.shuffle_buffer=256",
        "--config.global_batch_size=16",
        "--config.eval_batch_size=20",
        f"--config.num_train_steps={steps}",
        f"--config.checkpoint_every_steps={every}",
        "--config.log_every_steps=1",
        "--config.mesh.data=1",
        "--config.model.dropout_rate=0.2",
        "--config.model.stochastic_depth_rate=0.2",
    ]  # fmt: skip
    assert_sigkill_resume_is_bit_identical(tmp_path, flags, steps, every, 256 // 16)


def test_kinetics_mock_batches_have_the_right_shapes(tmp_path):
    """The real path: `video:kinetics_rs` over the `kinetics400` builder, mocked by tfds (random
    videos of random lengths and sizes), at a smaller clip and resolution."""
    config = configs.validate(
        configs.load(
            "video:kinetics_rs",
            {
                "data.data_dir": str(tmp_path),
                "data.train_examples": 8,
                "data.eval_examples": 8,
                "data.num_frames": 8,
                "data.image_size": 64,
                "data.eval_image_size": 72,
                "data.eval_clips": 2,
                "data.shuffle_buffer": 8,
                "global_batch_size": 4,
                "mesh.data": 1,
            },
        )
    )
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=8):
        builder = input_pipeline.get_builder(config.data)
        assert builder.name == "kinetics400"
        assert input_pipeline.media_key(builder) == "video"
        train = next(input_pipeline.train_batches(builder, config.data, seed=0, local_batch=4))
        evaluated = next(input_pipeline.eval_batches(builder, config.data, local_batch=2))
    assert train["images"].shape == (4, 8, 64, 64, 3) and train["images"].dtype == np.float32
    assert evaluated["images"].shape == (2, 6, 8, 72, 72, 3)
    assert np.all((train["labels"] >= 0) & (train["labels"] < 400))
    assert np.isfinite(train["images"]).all() and np.isfinite(evaluated["images"]).all()


def test_the_motion_control_preset_cannot_see_frame_order():
    """`video:motion_control` is a function of the set of a clip's frames (every temporal kernel
    and stride 1); `video:motion` is not."""
    clip = jax.random.normal(jax.random.key(3), (2, 8, 32, 32, 1))
    shuffled = clip[:, jnp.array([5, 2, 7, 0, 3, 6, 1, 4])]
    for preset, blind in (("motion_control", True), ("motion", False)):
        model = configs.build_model(configs.load(f"video:{preset}"))
        variables = jax.jit(lambda x, m=model: m.init(jax.random.key(0), x, train=False))(clip)
        # Non-zero last BN gammas, so every block's branch contributes.
        variables = jax.tree_util.tree_map_with_path(
            lambda path, v: jnp.ones_like(v) if "bn3" in str(path) and "scale" in str(path) else v,
            variables,
        )
        apply = jax.jit(lambda v, x, m=model: m.apply(v, x, train=False))
        difference = np.abs(apply(variables, clip) - apply(variables, shuffled)).max()
        assert (difference < 1e-5) if blind else (difference > 1e-3), (preset, difference)


def test_kinetics_builder_reads_decoded_frames(tmp_path):
    """The `kinetics400` builder on a tiny manual directory: 400 class directories, three videos
    of 3-4 JPEG frames; frames in file-name order, labels from the sorted class names."""
    import tensorflow_datasets as tfds

    from rsjax.data import kinetics

    manual = tmp_path / "manual"
    names = [f"class_{i:03d}" for i in range(400)]
    for split in kinetics.SPLITS:
        for name in names:
            (manual / split / name).mkdir(parents=True)
    videos = {("train", "class_002", "v1", 3), ("train", "class_399", "v2", 4),
              ("validation", "class_002", "v3", 3)}  # fmt: skip
    for split, name, video, frames in videos:
        directory = manual / split / name / video
        directory.mkdir()
        for t in range(frames):
            frame = np.full((6, 8, 3), 40 * t, np.uint8)
            (directory / f"{t:05d}.jpg").write_bytes(tf.io.encode_jpeg(frame, quality=100).numpy())
    builder = kinetics.Kinetics400(data_dir=str(tmp_path / "tfds"))
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual))
    train = list(tfds.as_numpy(builder.as_dataset(split="train")))
    assert sorted((len(e["video"]), int(e["label"])) for e in train) == [(3, 2), (4, 399)]
    video = next(e["video"] for e in train if e["label"] == 399)
    assert video.shape == (4, 6, 8, 3)
    np.testing.assert_allclose(video.mean(axis=(1, 2, 3)), [0, 40, 80, 120], atol=2)  # in order
    assert builder.info.splits["validation"].num_examples == 1
    (manual / "train" / "class_000").rmdir()
    with pytest.raises(ValueError, match="holds 399 class directories"):
        kinetics.class_names(manual)
