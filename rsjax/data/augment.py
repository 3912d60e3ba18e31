"""Per-image preprocessing in TensorFlow: inception crop, flip, RandAugment, cutout, resize,
normalise.

Every random choice is a stateless TF op driven by an explicit `seed` ([2] int64), so an image's
augmentation is a pure function of (run seed, epoch, position): resumed runs see the same pixels.
"""

import tensorflow as tf

from rsjax.data import randaugment

IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)


def inception_crop(
    image: tf.Tensor, seed: tf.Tensor, area_range: tuple[float, float] = (0.08, 1.0)
) -> tf.Tensor:
    """Random crop covering `area_range` of the image with aspect ratio in [3/4, 4/3].

    image: [H, W, C] uint8 -> [h, w, C] uint8 (tensorflow/tpu's `distorted_bounding_box_crop`, with
    min_object_covered 0.1 and 10 attempts; the whole image when no attempt fits).
    """
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image),
        bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], shape=[1, 1, 4]),
        seed=seed,
        min_object_covered=0.1,
        aspect_ratio_range=(3 / 4, 4 / 3),
        area_range=area_range,
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    crop = tf.slice(image, begin, size)
    crop.set_shape([None, None, image.shape[-1]])
    return crop


def center_crop(image: tf.Tensor, fraction: float) -> tf.Tensor:
    """The central square of side `fraction * min(H, W)`: [H, W, C] -> [s, s, C]."""
    shape = tf.shape(image)
    side = tf.cast(fraction * tf.cast(tf.minimum(shape[0], shape[1]), tf.float32), tf.int32)
    side = tf.maximum(side, 1)
    top = (shape[0] - side + 1) // 2
    left = (shape[1] - side + 1) // 2
    return image[top : top + side, left : left + side]


def resize(image: tf.Tensor, size: int | tf.Tensor, method: str) -> tf.Tensor:
    """[..., h, w, C] any dtype -> [..., size, size, C] float32 in [0, 255]; `size` an int, or
    the output [height, width] (a clip's frames resize alike)."""
    shape = (size, size) if isinstance(size, int) else size
    image = tf.image.resize(tf.cast(image, tf.float32), shape, method=method, antialias=False)
    return tf.clip_by_value(image, 0.0, 255.0)


def _per_channel(values: tuple[float, ...], channels: int) -> tf.Tensor:
    """[channels] float32: `values` cut to `channels`, or a single value repeated."""
    values = values[:channels] if len(values) >= channels else values * channels
    return tf.constant(values, tf.float32)


def normalize(image: tf.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> tf.Tensor:
    """(image - mean) / std per channel; image [H, W, C] float32 in [0, 255]."""
    channels = image.shape[-1]
    return (image - _per_channel(mean, channels)) / _per_channel(std, channels)


def train_preprocess(
    image: tf.Tensor,
    seed: tf.Tensor,
    *,
    size: int,
    area_range: tuple[float, float],
    flip: bool,
    randaugment_layers: int,
    randaugment_magnitude: float,
    resize_method: str,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    cutout_pad: int = 0,
) -> tf.Tensor:
    """Training view of one image: [H, W, C] uint8 -> [size, size, C] float32, normalised.

    Order as in tensorflow/tpu: inception crop -> resize -> flip -> RandAugment (uint8) ->
    [cutout] -> normalise.
    RandAugment is off when `randaugment_magnitude` or `randaugment_layers` is 0. Cutout (DeVries
    & Taylor, 2017; not in the paper's recipe) fills a square of side 2 * `cutout_pad` px centred
    anywhere in the image (clipped at its borders) with `mean`, i.e. with 0 after normalising;
    off when `cutout_pad` is 0. Its seed is split from the crop's, so the crop, flip and
    RandAugment of an image do not change when cutout is switched on.
    """
    crop_seed, flip_seed, ra_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    image = resize(inception_crop(image, crop_seed, area_range), size, resize_method)
    if flip:
        image = tf.image.stateless_random_flip_left_right(image, flip_seed)
    if randaugment_layers > 0 and randaugment_magnitude > 0:
        translate_const, cutout_const = randaugment.scaled_constants(size)
        image = randaugment.randaugment(
            tf.cast(tf.round(image), tf.uint8),
            randaugment_layers,
            randaugment_magnitude,
            ra_seed,
            translate_const=translate_const,
            cutout_const=cutout_const,
        )
        image = tf.cast(image, tf.float32)
    if cutout_pad > 0:
        cutout_seed = tf.random.experimental.stateless_fold_in(crop_seed, 1)
        mask = randaugment.cutout_mask(image, cutout_pad, cutout_seed)
        image = tf.where(mask, _per_channel(mean, image.shape[-1]), image)
    return normalize(image, mean, std)


def eval_preprocess(
    image: tf.Tensor,
    *,
    size: int,
    crop_fraction: float,
    resize_method: str,
    mean: tuple[float, ...],
    std: tuple[float, ...],
) -> tf.Tensor:
    """Evaluation view: central crop of `crop_fraction`, resized: -> [size, size, C] float32."""
    image = resize(center_crop(image, crop_fraction), size, resize_method)
    return normalize(image, mean, std)
