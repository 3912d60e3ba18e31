"""RandAugment (Cubuk et al., 2019) in core TensorFlow, as used by ResNet-RS.

Behaviour follows `distort_image_with_randaugment` in tensorflow/tpu
(`models/official/efficientnet/autoaugment.py`), re-written with core `tf.image`, `tf.raw_ops`
and plain TF ops (no tensorflow-addons, no contrib, no Keras layers). Works eagerly and inside
`tf.data.Dataset.map` (graph mode).

* Images are uint8 [H, W, C] with C = 1 or 3 (the channel count must be static). Pixels left
  empty by geometric ops and Cutout are filled with `REPLACE` = 128 in every channel.
* For each of `num_layers` layers one of the 16 `OP_NAMES` is drawn uniformly and always applied
  with the fixed magnitude M (`_MAX_LEVEL` = 10; M > 10 extrapolates linearly, no clipping).
* All randomness (op choice, sign of Rotate/Shear/Translate, Cutout centre) comes from stateless
  TF random ops driven by an explicit `seed` ([2] int32/int64 tensor), so the output is a pure
  function of (image, seed).

Choices, quirks kept from the reference, and deviations from it:

* Contrast blends towards a constant image whose value is `sum(histogram of grayscale) / 256`,
  i.e. *pixel count / 256* (clipped to [0, 255], truncated to uint8), not the mean intensity.
  This is a bug in the reference, kept for parity (for 224 x 224 images the value is 196).
* Posterize shifts by `8 - bits` clamped to [0, 7], which is what TF's shift kernels do with the
  reference's unclamped shift: bits = 0 (M < 2.5) keeps the top bit, bits = 8 (M = 20) is the
  identity. bits > 8 (M >= 22.5), where the reference fails to build, is also the identity.
* Solarize with threshold >= 256 (M >= 10) is the identity; SolarizeAdd saturates at 0 and 255.
* Pixel selections use bitwise masks instead of `tf.where` (same results; TF's CPU
  Select kernels are several times slower on uint8 images).
* Color on 1-channel images is the identity (the degenerate grayscale image is the image itself).
  Contrast's degenerate value depends only on the pixel count, so it needs no grayscale.
* The reference's translate_const = 100 px and cutout_const = 40 px were tuned for 224 px
  images. They are arguments here; `scaled_constants(image_size)` scales both linearly with the
  image size relative to 224 (rounded half up, at least 1 px), e.g. (12.5 -> 13, 5) for 28 px
  Fashion-MNIST images and the reference (100, 40) for 224 px.
* Sharpness smooths with an exact integer 3x3 sum, floor-divided by 13 (separable sums, much
  faster than a depthwise conv on CPU). The reference's float32 depthwise conv with weights
  1/13, 5/13 can land just below an exact integer and truncate one lower, so a few pixels of the
  degenerate image may differ by 1 from the reference; the blend is otherwise the same.
* Geometric ops use `tf.raw_ops.ImageProjectiveTransformV3` (NEAREST, CONSTANT fill 128) on the
  uint8 image directly: with nearest-neighbour sampling this equals the reference's
  wrap/unwrap trick with contrib's transform, without a float round trip.
* The order of `OP_NAMES` differs from the reference's list (SolarizeAdd is 7th here, last
  there); ops are drawn uniformly, so only which seed picks which op changes.
"""

import math

import tensorflow as tf

_MAX_LEVEL = 10.0
REPLACE = 128

OP_NAMES: tuple[str, ...] = (
    "AutoContrast",
    "Equalize",
    "Invert",
    "Rotate",
    "Posterize",
    "Solarize",
    "SolarizeAdd",
    "Color",
    "Contrast",
    "Brightness",
    "Sharpness",
    "ShearX",
    "ShearY",
    "TranslateX",
    "TranslateY",
    "Cutout",
)

_ENHANCE_OPS = ("Color", "Contrast", "Brightness", "Sharpness")
_SIGNED_OPS = ("Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY")


# ----------------------------------------------------------------------------- magnitudes


def level_to_arg(
    op_name: str,
    magnitude: float,
    translate_const: float = 100.0,
    cutout_const: float = 40.0,
) -> float | int | None:
    """The argument of `op_name` at magnitude M, before any random sign.

    Rotate: degrees; Posterize: bits kept; Solarize: threshold; SolarizeAdd: addition;
    Color/Contrast/Brightness/Sharpness: blend factor; ShearX/Y: shear coefficient;
    TranslateX/Y: pixels; Cutout: half side in pixels; None for AutoContrast/Equalize/Invert.
    """
    level = magnitude / _MAX_LEVEL
    if op_name in ("AutoContrast", "Equalize", "Invert"):
        return None
    if op_name == "Rotate":
        return level * 30.0
    if op_name == "Posterize":
        return int(level * 4)
    if op_name == "Solarize":
        return int(level * 256)
    if op_name == "SolarizeAdd":
        return int(level * 110)
    if op_name in _ENHANCE_OPS:
        return level * 1.8 + 0.1
    if op_name in ("ShearX", "ShearY"):
        return level * 0.3
    if op_name in ("TranslateX", "TranslateY"):
        return level * float(translate_const)
    if op_name == "Cutout":
        return int(level * cutout_const)
    raise ValueError(f"Unknown RandAugment op {op_name!r}; expected one of {OP_NAMES}")


def scaled_constants(image_size: int) -> tuple[float, float]:
    """(translate_const, cutout_const) in pixels for `image_size` px images.

    The reference values (100, 40) for 224 px scaled by image_size / 224, rounded half up, >= 1.
    """

    def scale(value: float) -> float:
        return float(max(1, math.floor(value * image_size / 224.0 + 0.5)))

    return scale(100.0), scale(40.0)


# ----------------------------------------------------------------------------- helpers


def _channels(image: tf.Tensor) -> int:
    channels = image.shape[-1]
    if image.shape.rank != 3 or channels not in (1, 3):
        raise ValueError(
            f"RandAugment needs a [H, W, C] image with static C = 1 or 3, got {image.shape}"
        )
    return int(channels)


def _as_seed(seed: tf.Tensor) -> tf.Tensor:
    seed = tf.convert_to_tensor(seed)
    if seed.dtype not in (tf.int32, tf.int64):
        seed = tf.cast(seed, tf.int64)
    return seed


def _random_sign(seed: tf.Tensor) -> tf.Tensor:
    """-1.0 or +1.0 (float32 scalar) with probability 1/2 each."""
    u = tf.random.stateless_uniform([], seed=seed, dtype=tf.float32)
    return tf.where(u < 0.5, -1.0, 1.0)


def _select(condition: tf.Tensor, x: tf.Tensor | int, y: tf.Tensor) -> tf.Tensor:
    """uint8 `where(condition, x, y)` with bitwise masks; condition and y have the same shape,
    x is that shape too or a scalar. TF's CPU Select/SelectV2 kernels are several times slower
    than these elementwise bitwise ops on uint8 images."""
    mask = tf.cast(condition, tf.uint8) * tf.constant(255, tf.uint8)
    if isinstance(x, int):
        x = tf.constant(x, tf.uint8)
    return tf.bitwise.bitwise_or(
        tf.bitwise.bitwise_and(x, mask), tf.bitwise.bitwise_and(y, tf.bitwise.invert(mask))
    )


def blend(image1: tf.Tensor, image2: tf.Tensor, factor: float) -> tf.Tensor:
    """clip(image1 + factor * (image2 - image1), 0, 255) in float32, truncated to uint8.

    image1, image2: uint8 with broadcastable shapes; factor 0 gives image1, 1 gives image2.
    """
    image1 = tf.cast(image1, tf.float32)
    image2 = tf.cast(image2, tf.float32)
    out = image1 + factor * (image2 - image1)
    return tf.cast(tf.clip_by_value(out, 0.0, 255.0), tf.uint8)


def _transform(image: tf.Tensor, transform: tf.Tensor, replace: int = REPLACE) -> tf.Tensor:
    """Projective transform of a uint8 [H, W, C] image, nearest neighbour, fill `replace`.

    transform: [8] float32 (a0, a1, a2, b0, b1, b2, c0, c1) mapping *output* (x, y) to input
    ((a0 x + a1 y + a2) / k, (b0 x + b1 y + b2) / k) with k = c0 x + c1 y + 1.
    """
    shape = tf.shape(image)
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None],
        transforms=tf.reshape(tf.cast(transform, tf.float32), [1, 8]),
        output_shape=shape[:2],
        fill_value=tf.constant(float(replace), tf.float32),
        interpolation="NEAREST",
        fill_mode="CONSTANT",
    )
    out = out[0]
    out.set_shape(image.shape)
    return out


# ----------------------------------------------------------------------------- the 16 ops


def autocontrast(image: tf.Tensor) -> tf.Tensor:
    """Per-channel stretch of [min, max] to [0, 255]; channels with max <= min are unchanged."""
    x = tf.cast(image, tf.float32)
    lo = tf.reduce_min(x, axis=[0, 1])
    hi = tf.reduce_max(x, axis=[0, 1])
    # Channels with max <= min get scale 1, offset 0: an exact identity in float32.
    stretch = hi > lo
    scale = tf.where(stretch, 255.0 / tf.maximum(hi - lo, 1.0), 1.0)
    offset = tf.where(stretch, -lo * scale, 0.0)
    return tf.cast(tf.clip_by_value(x * scale + offset, 0.0, 255.0), tf.uint8)


def equalize(image: tf.Tensor) -> tf.Tensor:
    """PIL-style per-channel histogram equalisation of a uint8 [H, W, C] image."""
    channels = _channels(image)
    x = tf.cast(image, tf.int32)
    offsets = tf.range(channels, dtype=tf.int32) * 256
    index = x + offsets  # each channel gets its own 256 bins
    hist = tf.math.bincount(
        tf.reshape(index, [-1]), minlength=256 * channels, maxlength=256 * channels
    )
    hist = tf.reshape(hist, [channels, 256])
    # The count of the last nonzero bin is the count of the channel's maximum value.
    top = tf.reduce_max(x, axis=[0, 1])
    last = tf.gather(hist, top, batch_dims=1)
    total = tf.reduce_sum(hist, axis=1)
    step = (total - last) // 255  # [C]
    safe_step = tf.maximum(step, 1)[:, None]
    lut = (tf.cumsum(hist, axis=1) + safe_step // 2) // safe_step
    lut = tf.concat([tf.zeros([channels, 1], lut.dtype), lut[:, :-1]], axis=1)
    lut = tf.clip_by_value(lut, 0, 255)
    identity = tf.broadcast_to(tf.range(256, dtype=lut.dtype), [channels, 256])
    lut = tf.where(step[:, None] == 0, identity, lut)
    return tf.cast(tf.gather(tf.reshape(lut, [-1]), index), tf.uint8)


def invert(image: tf.Tensor) -> tf.Tensor:
    """255 - x."""
    return 255 - image


def rotate(image: tf.Tensor, degrees: float | tf.Tensor, replace: int = REPLACE) -> tf.Tensor:
    """Rotation about the image centre by `degrees` (positive: counterclockwise as displayed,
    i.e. `np.rot90` for +90), nearest neighbour, empty pixels = `replace`."""
    radians = tf.cast(degrees, tf.float32) * (math.pi / 180.0)
    shape = tf.cast(tf.shape(image), tf.float32)
    h, w = shape[0] - 1.0, shape[1] - 1.0
    cos, sin = tf.cos(radians), tf.sin(radians)
    x_offset = (w - (cos * w - sin * h)) / 2.0
    y_offset = (h - (sin * w + cos * h)) / 2.0
    transform = tf.stack([cos, -sin, x_offset, sin, cos, y_offset, 0.0, 0.0])
    return _transform(image, transform, replace)


def posterize(image: tf.Tensor, bits: int) -> tf.Tensor:
    """Keeps the top `bits` bits: (x >> (8 - bits)) << (8 - bits), shift clamped to [0, 7]."""
    shift = min(max(8 - int(bits), 0), 7)
    if shift == 0:
        return tf.convert_to_tensor(image)
    shift = tf.constant(shift, tf.uint8)
    return tf.bitwise.left_shift(tf.bitwise.right_shift(image, shift), shift)


def solarize(image: tf.Tensor, threshold: int = 128) -> tf.Tensor:
    """x if x < threshold else 255 - x (identity for threshold >= 256)."""
    image = tf.convert_to_tensor(image)
    threshold = int(threshold)
    if threshold >= 256:
        return image
    if threshold <= 0:
        return 255 - image
    return _select(image < tf.constant(threshold, tf.uint8), image, 255 - image)


def solarize_add(image: tf.Tensor, addition: int = 0, threshold: int = 128) -> tf.Tensor:
    """clip(x + addition, 0, 255) where x < threshold, x elsewhere."""
    image = tf.convert_to_tensor(image)
    addition = min(max(int(addition), -255), 255)
    if addition >= 0:  # saturating uint8 add
        added = tf.minimum(image, tf.constant(255 - addition, tf.uint8)) + addition
    else:  # saturating uint8 subtract
        added = tf.maximum(image, tf.constant(-addition, tf.uint8)) - (-addition)
    threshold = int(threshold)
    if threshold >= 256:
        return added
    if threshold <= 0:
        return image
    return _select(image < tf.constant(threshold, tf.uint8), added, image)


def color(image: tf.Tensor, factor: float) -> tf.Tensor:
    """Blend from the grayscale image (identity for 1-channel images)."""
    if _channels(image) == 1:
        return tf.convert_to_tensor(image)
    # Same-shape operands: TF's CPU kernels broadcast [H, W, 1] against [H, W, 3] slowly.
    degenerate = tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(image))
    return blend(degenerate, image, factor)


def contrast(image: tf.Tensor, factor: float) -> tf.Tensor:
    """Blend from a constant image of value (pixel count / 256) — the reference's quirk."""
    shape = tf.shape(image)
    mean = tf.cast(shape[0] * shape[1], tf.float32) / 256.0
    degenerate = tf.cast(tf.clip_by_value(mean, 0.0, 255.0), tf.uint8)
    return blend(degenerate, image, factor)


def brightness(image: tf.Tensor, factor: float) -> tf.Tensor:
    """Blend from black: clip(factor * x, 0, 255)."""
    return blend(tf.zeros([], tf.uint8), image, factor)


def sharpness(image: tf.Tensor, factor: float) -> tf.Tensor:
    """Blend from the image smoothed by [[1,1,1],[1,5,1],[1,1,1]]/13 (border pixels unsmoothed).

    The smoothed value is floor(exact 3x3 weighted sum / 13); needs H, W >= 3.
    """
    x = tf.cast(image, tf.float32)
    # Separable 3x3 box sum plus 4 x centre: integers <= 3315, exact in float32, so the single
    # division by 13 followed by floor is the exact truncation of the true smoothed value.
    rows = x[:, :-2] + x[:, 1:-1] + x[:, 2:]
    centre = x[1:-1, 1:-1]
    total = rows[:-2] + rows[1:-1] + rows[2:] + 4.0 * centre
    smooth = tf.floor(total / 13.0)
    inner = smooth + factor * (centre - smooth)
    inner = tf.cast(tf.clip_by_value(inner, 0.0, 255.0), tf.uint8)
    # On the border the degenerate image equals the image, so the blend leaves it unchanged.
    middle = tf.concat([image[1:-1, :1], inner, image[1:-1, -1:]], axis=1)
    return tf.concat([image[:1], middle, image[-1:]], axis=0)


def shear_x(image: tf.Tensor, level: float | tf.Tensor, replace: int = REPLACE) -> tf.Tensor:
    """Output (x, y) samples input (x + level * y, y); empty pixels = `replace`."""
    level = tf.cast(level, tf.float32)
    return _transform(image, tf.stack([1.0, level, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]), replace)


def shear_y(image: tf.Tensor, level: float | tf.Tensor, replace: int = REPLACE) -> tf.Tensor:
    """Output (x, y) samples input (x, level * x + y); empty pixels = `replace`."""
    level = tf.cast(level, tf.float32)
    return _transform(image, tf.stack([1.0, 0.0, 0.0, level, 1.0, 0.0, 0.0, 0.0]), replace)


def translate_x(image: tf.Tensor, pixels: float | tf.Tensor, replace: int = REPLACE) -> tf.Tensor:
    """Output (x, y) samples input (x + pixels, y): content moves left by `pixels`."""
    pixels = tf.cast(pixels, tf.float32)
    return _transform(image, tf.stack([1.0, 0.0, pixels, 0.0, 1.0, 0.0, 0.0, 0.0]), replace)


def translate_y(image: tf.Tensor, pixels: float | tf.Tensor, replace: int = REPLACE) -> tf.Tensor:
    """Output (x, y) samples input (x, y + pixels): content moves up by `pixels`."""
    pixels = tf.cast(pixels, tf.float32)
    return _transform(image, tf.stack([1.0, 0.0, 0.0, 0.0, 1.0, pixels, 0.0, 0.0]), replace)


def cutout_mask(image: tf.Tensor, pad_size: int | tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """[H, W, C] bool, true on the square [cy - pad_size, cy + pad_size) x [cx - pad_size,
    cx + pad_size) clipped to the image; the centre (cy, cx) is uniform over all pixels."""
    shape = tf.shape(image)
    seed_y, seed_x = tf.unstack(tf.random.experimental.stateless_split(_as_seed(seed), 2))
    cy = tf.random.stateless_uniform([], seed_y, minval=0, maxval=shape[0], dtype=tf.int32)
    cx = tf.random.stateless_uniform([], seed_x, minval=0, maxval=shape[1], dtype=tf.int32)
    rows = tf.range(shape[0])
    cols = tf.range(shape[1])
    in_rows = (rows >= cy - pad_size) & (rows < cy + pad_size)
    in_cols = (cols >= cx - pad_size) & (cols < cx + pad_size)
    mask = in_rows[:, None] & in_cols[None, :]
    return tf.tile(mask[:, :, None], [1, 1, _channels(image)])  # full shape: no broadcasting


def cutout(image: tf.Tensor, pad_size: int, seed: tf.Tensor, replace: int = REPLACE) -> tf.Tensor:
    """Fills `cutout_mask(image, pad_size, seed)` of a uint8 image with `replace`."""
    return _select(cutout_mask(image, pad_size, seed), replace, image)


# ----------------------------------------------------------------------------- dispatch


def apply_op(
    image: tf.Tensor,
    op_name: str,
    magnitude: float,
    seed: tf.Tensor,
    translate_const: float = 100.0,
    cutout_const: float = 40.0,
) -> tf.Tensor:
    """Applies one RandAugment op at magnitude M: uint8 [H, W, C] -> uint8 [H, W, C].

    `seed` ([2] int32/int64) drives the random sign of Rotate/Shear/Translate and the Cutout
    centre; translate_const / cutout_const are in pixels (the reference's 100 / 40 at M = 10).
    """
    image = tf.convert_to_tensor(image)
    if image.dtype != tf.uint8:
        raise TypeError(f"RandAugment expects a uint8 image, got {image.dtype}")
    _channels(image)
    seed = _as_seed(seed)
    arg = level_to_arg(op_name, magnitude, translate_const, cutout_const)
    if op_name in _SIGNED_OPS:
        arg = _random_sign(seed) * arg

    if op_name == "AutoContrast":
        out = autocontrast(image)
    elif op_name == "Equalize":
        out = equalize(image)
    elif op_name == "Invert":
        out = invert(image)
    elif op_name == "Rotate":
        out = rotate(image, arg)
    elif op_name == "Posterize":
        out = posterize(image, arg)
    elif op_name == "Solarize":
        out = solarize(image, arg)
    elif op_name == "SolarizeAdd":
        out = solarize_add(image, arg)
    elif op_name == "Color":
        out = color(image, arg)
    elif op_name == "Contrast":
        out = contrast(image, arg)
    elif op_name == "Brightness":
        out = brightness(image, arg)
    elif op_name == "Sharpness":
        out = sharpness(image, arg)
    elif op_name == "ShearX":
        out = shear_x(image, arg)
    elif op_name == "ShearY":
        out = shear_y(image, arg)
    elif op_name == "TranslateX":
        out = translate_x(image, arg)
    elif op_name == "TranslateY":
        out = translate_y(image, arg)
    else:  # Cutout; level_to_arg has rejected unknown names
        out = cutout(image, arg, seed)
    out = tf.convert_to_tensor(out)
    out.set_shape(image.shape)
    return out


def randaugment(
    image: tf.Tensor,
    num_layers: int,
    magnitude: float,
    seed: tf.Tensor,
    translate_const: float = 100.0,
    cutout_const: float = 40.0,
) -> tf.Tensor:
    """RandAugment: `num_layers` ops, each drawn uniformly from `OP_NAMES` and always applied at
    magnitude M. uint8 [H, W, C] -> uint8 [H, W, C]; a pure function of (image, seed)."""
    image = tf.convert_to_tensor(image)
    if image.dtype != tf.uint8:
        raise TypeError(f"RandAugment expects a uint8 image, got {image.dtype}")
    _channels(image)
    if num_layers <= 0:
        return image
    seed = _as_seed(seed)
    layer_seeds = tf.random.experimental.stateless_split(seed, num_layers)
    for layer in range(num_layers):
        select_seed, op_seed = tf.unstack(
            tf.random.experimental.stateless_split(layer_seeds[layer], 2)
        )
        index = tf.random.stateless_uniform(
            [], select_seed, minval=0, maxval=len(OP_NAMES), dtype=tf.int32
        )
        branches = [
            # Default arguments bind the current image and op name to each branch.
            lambda name=name, img=image, op_seed=op_seed: apply_op(
                img, name, magnitude, op_seed, translate_const, cutout_const
            )
            for name in OP_NAMES
        ]
        with tf.name_scope(f"randaugment_layer_{layer}"):
            new_image = tf.switch_case(index, branches)
        new_image.set_shape(image.shape)
        image = new_image
    return image
