"""RandAugment: every op on its own (shapes, ranges, determinism, reference values), the magnitude
table of tensorflow/tpu's autoaugment.py, and the full policy eagerly and inside tf.data."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
import tensorflow as tf

from rsjax.data import randaugment as ra

SEED = (7, 11)


def random_image(size: int = 24, channels: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, channels), dtype=np.uint8)


def seed(*values: int) -> tf.Tensor:
    return tf.constant(values, tf.int64)


def op(image: np.ndarray, name: str, magnitude: float, s=SEED, **kwargs) -> np.ndarray:
    return ra.apply_op(tf.constant(image), name, magnitude, seed(*s), **kwargs).numpy()


def map_eagerly(fn, images: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """fn(image, seed) image by image in eager mode."""
    return np.stack(
        [fn(tf.constant(im), tf.constant(s)).numpy() for im, s in zip(images, seeds, strict=True)]
    )


def map_in_dataset(fn, images: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """fn(image, seed) over a tf.data pipeline (graph mode, parallel map)."""
    ds = tf.data.Dataset.from_tensor_slices((images, seeds))
    ds = ds.map(fn, num_parallel_calls=2, deterministic=True).batch(len(images))
    return next(iter(ds)).numpy()


# ----------------------------------------------------------------------------- magnitudes


def test_op_names():
    assert len(ra.OP_NAMES) == 16 and len(set(ra.OP_NAMES)) == 16
    assert ra.OP_NAMES[:3] == ("AutoContrast", "Equalize", "Invert")
    assert ra.OP_NAMES[-1] == "Cutout"


@pytest.mark.parametrize(
    "magnitude, expected",
    [
        (10, dict(rot=30, post=4, sol=256, add=110, enh=1.9, shear=0.3, tr=100, cut=40)),
        (15, dict(rot=45, post=6, sol=384, add=165, enh=2.8, shear=0.45, tr=150, cut=60)),
    ],
)
def test_level_to_arg_matches_reference_table(magnitude, expected):
    arg = ra.level_to_arg
    assert arg("Rotate", magnitude) == pytest.approx(expected["rot"])
    assert arg("Posterize", magnitude) == expected["post"]
    assert arg("Solarize", magnitude) == expected["sol"]
    assert arg("SolarizeAdd", magnitude) == expected["add"]
    for name in ("Color", "Contrast", "Brightness", "Sharpness"):
        assert arg(name, magnitude) == pytest.approx(expected["enh"])
    for name in ("ShearX", "ShearY"):
        assert arg(name, magnitude) == pytest.approx(expected["shear"])
    for name in ("TranslateX", "TranslateY"):
        assert arg(name, magnitude) == pytest.approx(expected["tr"])
    assert arg("Cutout", magnitude) == expected["cut"]
    for name in ("AutoContrast", "Equalize", "Invert"):
        assert arg(name, magnitude) is None
    assert isinstance(arg("Posterize", magnitude), int)
    assert isinstance(arg("Cutout", magnitude), int)


def test_level_to_arg_custom_constants_and_unknown_op():
    assert ra.level_to_arg("TranslateX", 10, translate_const=13) == pytest.approx(13)
    assert ra.level_to_arg("Cutout", 15, cutout_const=5) == 7
    with pytest.raises(ValueError, match="Unknown"):
        ra.level_to_arg("Blur", 10)


def test_scaled_constants():
    assert ra.scaled_constants(224) == (100.0, 40.0)
    assert ra.scaled_constants(28) == (13.0, 5.0)
    assert ra.scaled_constants(448) == (200.0, 80.0)
    assert ra.scaled_constants(1) == (1.0, 1.0)


# ----------------------------------------------------------------------------- every op


@pytest.mark.parametrize("name", ra.OP_NAMES)
@pytest.mark.parametrize("channels", [3, 1])
def test_op_shape_dtype_range_and_determinism(name, channels):
    images = np.stack([random_image(24, channels, seed=i) for i in range(2)])
    seeds = np.array([[1, 2], [3, 4]], np.int64)
    kwargs = dict(translate_const=8.0, cutout_const=6.0)

    def fn(image, s):
        return ra.apply_op(image, name, 9.0, s, **kwargs)

    eager = map_eagerly(fn, images, seeds)
    assert eager.shape == images.shape and eager.dtype == np.uint8
    assert eager.min() >= 0 and eager.max() <= 255
    again = map_eagerly(fn, images, seeds)
    np.testing.assert_array_equal(eager, again)
    np.testing.assert_array_equal(map_in_dataset(fn, images, seeds), eager)


def test_rejects_float_images_and_other_channel_counts():
    with pytest.raises(TypeError, match="uint8"):
        ra.apply_op(tf.zeros([4, 4, 3]), "Invert", 10, seed(1, 2))
    with pytest.raises(TypeError, match="uint8"):
        ra.randaugment(tf.zeros([4, 4, 3]), 2, 10, seed(1, 2))
    with pytest.raises(ValueError, match="C = 1 or 3"):
        ra.randaugment(tf.zeros([4, 4, 4], tf.uint8), 2, 10, seed(1, 2))


def test_invert():
    image = random_image()
    np.testing.assert_array_equal(op(image, "Invert", 10), 255 - image)


@pytest.mark.parametrize("magnitude", [10, 15])
def test_solarize_identity_at_threshold_256_and_above(magnitude):
    image = random_image()
    np.testing.assert_array_equal(op(image, "Solarize", magnitude), image)


def test_solarize_at_threshold_128():
    image = random_image()
    expected = np.where(image < 128, image, 255 - image)
    np.testing.assert_array_equal(op(image, "Solarize", 5), expected)


@pytest.mark.parametrize("magnitude", [20, 25])
def test_posterize_identity_at_8_bits_and_above(magnitude):
    image = random_image()
    np.testing.assert_array_equal(op(image, "Posterize", magnitude), image)


@pytest.mark.parametrize("magnitude, mask", [(10, 0xF0), (15, 0xFC), (5, 0xC0), (2, 0x80)])
def test_posterize_keeps_top_bits(magnitude, mask):
    image = random_image()
    np.testing.assert_array_equal(op(image, "Posterize", magnitude), image & mask)


def test_solarize_add_only_below_128():
    image = random_image()
    out = op(image, "SolarizeAdd", 10).astype(int)
    low = image < 128
    np.testing.assert_array_equal(out[low], np.minimum(image[low].astype(int) + 110, 255))
    np.testing.assert_array_equal(out[~low], image[~low])


def test_solarize_add_saturates():
    image = random_image()
    out = op(image, "SolarizeAdd", 25)  # addition 275
    np.testing.assert_array_equal(out, np.where(image < 128, 255, image))
    out = ra.solarize_add(tf.constant(image), -40).numpy().astype(int)
    np.testing.assert_array_equal(
        out, np.where(image < 128, np.maximum(image.astype(int) - 40, 0), image)
    )


@pytest.mark.parametrize("name", ["Brightness", "Color", "Contrast", "Sharpness"])
def test_enhance_ops_identity_at_factor_one(name):
    assert ra.level_to_arg(name, 5) == 1.0
    for channels in (3, 1):
        image = random_image(channels=channels)
        np.testing.assert_array_equal(op(image, name, 5), image)


def test_brightness_scales_and_clips():
    image = random_image()
    np.testing.assert_array_equal(
        op(image, "Brightness", 0), (np.float32(0.1) * image).astype(np.uint8)
    )
    expected = np.clip(np.float32(1.9) * image.astype(np.float32), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(op(image, "Brightness", 10), expected)


def test_color_degenerate_is_grayscale():
    image = random_image()
    out = ra.color(tf.constant(image), 0.0).numpy()
    gray = tf.image.rgb_to_grayscale(tf.constant(image)).numpy()
    np.testing.assert_array_equal(out, np.repeat(gray, 3, axis=-1))
    gray_image = random_image(channels=1)
    np.testing.assert_array_equal(op(gray_image, "Color", 15), gray_image)


def test_contrast_uses_pixel_count_over_256_quirk():
    # The reference's "mean" is sum(histogram) / 256 = H * W / 256, not the mean intensity.
    image = random_image(32)  # 1024 pixels -> degenerate value 4
    out = ra.contrast(tf.constant(image), 0.0).numpy()
    np.testing.assert_array_equal(out, np.full_like(image, 4))
    expected = np.clip(4 + np.float32(1.9) * (image.astype(np.float32) - 4), 0, 255)
    np.testing.assert_array_equal(op(image, "Contrast", 10), expected.astype(np.uint8))


def test_sharpness_matches_reference_formula_and_keeps_borders():
    image = random_image(20)
    factor = np.float32(ra.level_to_arg("Sharpness", 15))
    out = op(image, "Sharpness", 15).astype(int)
    x = image.astype(np.float32)
    weights = np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]])
    window_sum = sum(
        weights[i, j] * image[i : i + 18, j : j + 18].astype(int)
        for i in range(3)
        for j in range(3)
    )
    degenerate = image.copy()
    degenerate[1:-1, 1:-1] = window_sum // 13  # the exact smoothed value, truncated
    d = degenerate.astype(np.float32)
    expected = np.clip(d + factor * (x - d), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(out, expected)
    # The reference's float32 conv (weights 1/13, 5/13) agrees up to one grey level.
    kernel = weights.astype(np.float32) / np.float32(13)
    float_smooth = sum(
        kernel[i, j] * x[i : i + 18, j : j + 18] for i in range(3) for j in range(3)
    ).astype(np.uint8)
    assert np.abs(float_smooth.astype(int) - degenerate[1:-1, 1:-1]).max() <= 1
    # Border pixels: degenerate == image, so blend leaves them unchanged.
    for border in (np.s_[0], np.s_[-1], np.s_[:, 0], np.s_[:, -1]):
        np.testing.assert_array_equal(out[border], image[border])


def test_autocontrast_stretches_ramp_per_channel():
    ramp = np.arange(50, 101, dtype=np.uint8)
    image = np.stack([np.tile(ramp, (4, 1)), np.tile(ramp // 2, (4, 1)), np.full((4, 51), 77)], -1)
    out = op(image.astype(np.uint8), "AutoContrast", 10)
    for c in (0, 1):
        assert out[..., c].min() == 0 and out[..., c].max() == 255
        assert np.all(np.diff(out[0, :, c].astype(int)) >= 0)
    np.testing.assert_array_equal(out[0, :, 0], np.floor((ramp - 50) * 5.1 + 1e-3).astype(np.uint8))
    np.testing.assert_array_equal(out[..., 2], 77)  # max <= min: unchanged


def test_equalize_constant_image_is_identity():
    for channels in (3, 1):
        image = np.full((16, 16, channels), 93, np.uint8)
        np.testing.assert_array_equal(op(image, "Equalize", 10), image)


def test_equalize_matches_pil():
    image_module = pytest.importorskip("PIL.Image")
    image_ops = pytest.importorskip("PIL.ImageOps")
    rng = np.random.default_rng(3)
    # Skewed histograms so that the LUT is far from the identity.
    image = (rng.beta(2, 5, (40, 40, 3)) * 255).astype(np.uint8)
    expected = np.asarray(image_ops.equalize(image_module.fromarray(image)))
    np.testing.assert_array_equal(op(image, "Equalize", 10), expected)
    gray = image[..., :1]
    expected = np.asarray(image_ops.equalize(image_module.fromarray(gray[..., 0])))
    np.testing.assert_array_equal(op(gray, "Equalize", 10)[..., 0], expected)


def test_cutout_fills_square_of_expected_side():
    image = np.zeros((64, 64, 3), np.uint8)
    sides = set()
    for s in range(12):
        out = op(image, "Cutout", 10, s=(s, 5), cutout_const=16)  # pad 16 -> side 32
        filled = out[..., 0] == 128
        np.testing.assert_array_equal(out == 128, np.repeat(filled[..., None], 3, -1))
        rows, cols = np.nonzero(filled)
        height = rows.max() - rows.min() + 1
        width = cols.max() - cols.min() + 1
        assert filled.sum() == height * width  # a solid rectangle
        assert height <= 32 and width <= 32
        assert height == 32 or rows.min() == 0 or rows.max() == 63
        assert width == 32 or cols.min() == 0 or cols.max() == 63
        np.testing.assert_array_equal(out[~filled], 0)
        sides.add((height, width))
    assert (32, 32) in sides
    gray = op(image[..., :1], "Cutout", 10, s=(0, 5), cutout_const=16)
    assert gray.shape == (64, 64, 1) and (gray == 128).sum() > 0


def test_translate_moves_content_and_fills():
    image = random_image(16)
    out = ra.translate_x(tf.constant(image), 3.0).numpy()
    np.testing.assert_array_equal(out[:, :-3], image[:, 3:])
    np.testing.assert_array_equal(out[:, -3:], 128)
    out = ra.translate_y(tf.constant(image), -4.0).numpy()
    np.testing.assert_array_equal(out[4:], image[:-4])
    np.testing.assert_array_equal(out[:4], 128)


@pytest.mark.parametrize("name, axis", [("TranslateX", 1), ("TranslateY", 0)])
def test_translate_op_has_random_sign(name, axis):
    image = random_image(16)
    shifted = set()
    for s in range(10):
        out = op(image, name, 10, s=(s, 1), translate_const=5.0)
        left = np.take(out, range(0, 11), axis=axis)
        right = np.take(out, range(5, 16), axis=axis)
        if np.array_equal(left, np.take(image, range(5, 16), axis=axis)):
            assert np.all(np.take(out, range(11, 16), axis=axis) == 128)
            shifted.add(-1)
        elif np.array_equal(right, np.take(image, range(0, 11), axis=axis)):
            assert np.all(np.take(out, range(0, 5), axis=axis) == 128)
            shifted.add(1)
        else:
            pytest.fail("translation by 5 px expected")
    assert shifted == {-1, 1}


def test_rotate_90_is_rot90_and_30_fills_corners():
    image = random_image(17)
    np.testing.assert_array_equal(ra.rotate(tf.constant(image), 90.0).numpy(), np.rot90(image))
    np.testing.assert_array_equal(ra.rotate(tf.constant(image), -90.0).numpy(), np.rot90(image, -1))
    for s in range(4):
        out = op(image, "Rotate", 10, s=(s, 2))  # +-30 degrees
        for corner in (out[0, 0], out[0, -1], out[-1, 0], out[-1, -1]):
            np.testing.assert_array_equal(corner, 128)
        np.testing.assert_array_equal(out[8, 8], image[8, 8])  # the centre stays


@pytest.mark.parametrize("name", ["ShearX", "ShearY"])
def test_shear_matches_nearest_neighbour_formula(name):
    image = random_image(12)
    fn = ra.shear_x if name == "ShearX" else ra.shear_y
    out = fn(tf.constant(image), 0.25).numpy()
    expected = np.full_like(image, 128)
    for y in range(12):
        for x in range(12):
            sx, sy = (x + 0.25 * y, y) if name == "ShearX" else (x, y + 0.25 * x)
            sx, sy = int(np.floor(sx + 0.5)), int(np.floor(sy + 0.5))
            if 0 <= sx < 12 and 0 <= sy < 12:
                expected[y, x] = image[sy, sx]
    np.testing.assert_array_equal(out, expected)
    # apply_op draws the sign: the result is one of the two shears.
    outs = {op(image, name, 10 / 1.2, s=(s, 3)).tobytes() for s in range(10)}
    candidates = {fn(tf.constant(image), v).numpy().tobytes() for v in (0.25, -0.25)}
    assert outs == candidates


# ----------------------------------------------------------------------------- the policy


def test_randaugment_deterministic_and_varies_with_seed():
    image = tf.constant(random_image(32))
    outs = [ra.randaugment(image, 2, 15.0, seed(s, 0), 14.0, 6.0).numpy() for s in range(8)]
    for s in (0, 5):
        again = ra.randaugment(image, 2, 15.0, seed(s, 0), 14.0, 6.0).numpy()
        np.testing.assert_array_equal(again, outs[s])
    assert len({o.tobytes() for o in outs}) >= 6
    assert all(o.shape == (32, 32, 3) and o.dtype == np.uint8 for o in outs)
    np.testing.assert_array_equal(ra.randaugment(image, 0, 15.0, seed(1, 0)).numpy(), image)


@pytest.mark.parametrize("channels", [3, 1])
def test_randaugment_in_tf_data_matches_eager(channels):
    n = 12
    images = np.stack([random_image(28, channels, seed=i) for i in range(n)])
    seeds = np.stack([np.arange(n), np.full(n, 9)], -1).astype(np.int64)
    translate_const, cutout_const = ra.scaled_constants(28)

    def fn(image, s):
        return ra.randaugment(image, 2, 15.0, s, translate_const, cutout_const)

    mapped = map_in_dataset(fn, images, seeds)
    assert mapped.shape == images.shape and mapped.dtype == np.uint8
    eager = map_eagerly(fn, images, seeds)
    np.testing.assert_array_equal(mapped, eager)
    assert not np.array_equal(mapped, images)
    np.testing.assert_array_equal(map_in_dataset(fn, images, seeds), mapped)


def test_every_layer_applies_its_op_at_the_configured_magnitude(monkeypatch):
    """randaugment() hands apply_op the magnitude it was given (not a scaled one), for every
    layer and every op it may pick, eagerly and when traced in tf.data."""
    seen = []
    real = ra.apply_op

    def recording(image, name, magnitude, *args, **kwargs):
        seen.append((name, float(magnitude)))
        return real(image, name, magnitude, *args, **kwargs)

    monkeypatch.setattr(ra, "apply_op", recording)
    image = tf.constant(random_image(32))
    for s in range(4):
        ra.randaugment(image, 3, 13.0, seed(s, 1))
    assert len(seen) >= 4 * 3 and {m for _, m in seen} == {13.0}
    seen.clear()
    images, seeds = random_image(32)[None], np.array([[1, 2]], np.int64)
    map_in_dataset(lambda im, s: ra.randaugment(im, 2, 7.0, s), images, seeds)
    assert len(seen) >= 2 and {m for _, m in seen} == {7.0}
    assert {name for name, _ in seen} <= set(ra.OP_NAMES)


def test_the_pipeline_passes_the_configs_layers_and_magnitude(monkeypatch, small_fmnist):
    from rsjax.data import augment, input_pipeline
    from tests.conftest import small_fmnist_config

    calls = []
    real = ra.randaugment

    def recording(image, num_layers, magnitude, *args, **kwargs):
        calls.append((num_layers, float(magnitude)))
        return real(image, num_layers, magnitude, *args, **kwargs)

    monkeypatch.setattr(augment.randaugment, "randaugment", recording)
    augment.train_preprocess(
        tf.constant(random_image(28)), seed(1, 2), size=28, area_range=(0.5, 1.0), flip=True,
        randaugment_layers=3, randaugment_magnitude=9.0, resize_method="bilinear",
        mean=(0.0,) * 3, std=(1.0,) * 3,
    )  # fmt: skip
    assert calls == [(3, 9.0)]
    calls.clear()
    config = small_fmnist_config(
        small_fmnist, **{"data.randaugment_layers": 2, "data.randaugment_magnitude": 11.0}
    )
    builder = input_pipeline.get_builder(config.data)
    next(input_pipeline.train_batches(builder, config.data, seed=0, local_batch=8))
    assert calls and set(calls) == {(2, 11.0)}
