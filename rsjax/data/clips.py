"""Per-video preprocessing in TensorFlow: clip sampling, scale jittering, crop, flip, views.

A clip is `frames` frames `stride` apart: it spans (frames - 1) x stride + 1 frames of the video.
Training takes one clip at a random start and one random crop and flip for all of its frames;
evaluation takes `clips` clips at evenly spaced starts x `crops` crops evenly spaced along the
frame's longer side (the paper's 30 views are 10 clips x 3 crops, Appendix G). A video shorter
than a clip's span repeats from its first frame (a variable-length dataset's short videos);
`rsjax.configs.validate` and the trainer refuse clips longer than a fixed-length dataset's videos.

Every random choice is a stateless TF op driven by an explicit `seed` ([2] int64), as
`rsjax.data.augment` does for images: a clip's pixels are a pure function of (run seed, epoch,
position).
"""

import tensorflow as tf

from rsjax.data import augment


def clip_span(frames: int, stride: int) -> int:
    """Frames of the video a clip of `frames` frames `stride` apart covers."""
    return (frames - 1) * stride + 1


def clip_frames(video: tf.Tensor, start: tf.Tensor, frames: int, stride: int) -> tf.Tensor:
    """Frames start, start + stride, ... of `video` [L, H, W, C] (indices wrap at L):
    -> [frames, H, W, C]."""
    length = tf.shape(video)[0]
    indices = (tf.cast(start, tf.int32) + stride * tf.range(frames)) % length
    return tf.gather(video, indices)


def _resize_short_side(clip: tf.Tensor, short_side: tf.Tensor, method: str) -> tf.Tensor:
    """[T, H, W, C] any dtype -> [T, h, w, C] float32 in [0, 255] with min(h, w) = short_side,
    the aspect ratio kept."""
    shape = tf.cast(tf.shape(clip)[1:3], tf.float32)
    scale = tf.cast(short_side, tf.float32) / tf.reduce_min(shape)
    size = tf.maximum(tf.cast(tf.round(shape * scale), tf.int32), short_side)
    return augment.resize(clip, size, method)


def train_clip(
    video: tf.Tensor,
    seed: tf.Tensor,
    *,
    frames: int,
    stride: int,
    size: int,
    scale_range: tuple[float, float],
    flip: bool,
    resize_method: str,
    mean: tuple[float, ...],
    std: tuple[float, ...],
) -> tf.Tensor:
    """Training view of one video: [L, H, W, C] uint8 -> [frames, size, size, C] float32,
    normalised.

    A clip at a uniform random start; its frames' shorter side resized to size x s, s uniform in
    `scale_range` (scale jittering; (1, 1) resizes to `size` exactly); one random size x size crop
    and (with `flip`) one horizontal flip for every frame of the clip.
    """
    start_seed, scale_seed, crop_seed, flip_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, 4)
    )
    span = clip_span(frames, stride)
    last_start = tf.maximum(tf.shape(video)[0] - span, 0)
    start = tf.random.stateless_uniform([], start_seed, 0, last_start + 1, tf.int32)
    clip = clip_frames(video, start, frames, stride)
    low, high = scale_range
    scale = tf.random.stateless_uniform([], scale_seed, low, high) if high > low else low
    short_side = tf.maximum(tf.cast(tf.round(size * scale), tf.int32), size)
    clip = _resize_short_side(clip, short_side, resize_method)
    crop_shape = tf.stack([frames, size, size, tf.shape(clip)[-1]])
    clip = tf.image.stateless_random_crop(clip, crop_shape, crop_seed)
    if flip:
        flipped = tf.random.stateless_uniform([], flip_seed) < 0.5
        clip = tf.cond(flipped, lambda: tf.reverse(clip, axis=[2]), lambda: clip)
    clip.set_shape([frames, size, size, video.shape[-1]])
    return augment.normalize(clip, mean, std)


def evenly_spaced(count: int, last: tf.Tensor) -> tf.Tensor:
    """`count` int32 offsets from 0 to `last` evenly spaced, i x last // (count - 1) (rounded
    down); [last // 2] for one."""
    if count == 1:
        return tf.reshape(last // 2, [1])
    return tf.range(count) * last // (count - 1)


def eval_views(
    video: tf.Tensor,
    *,
    frames: int,
    stride: int,
    size: int,
    clips: int,
    crops: int,
    resize_method: str,
    mean: tuple[float, ...],
    std: tuple[float, ...],
) -> tf.Tensor:
    """The evaluation views of one video: [L, H, W, C] uint8 -> [clips x crops, frames, size,
    size, C] float32, normalised; view index = clip x crops + crop.

    Clip starts evenly spaced from 0 to L - span (the middle one for one clip); every clip's
    frames resized to shorter side `size`; crops of size x size evenly spaced along the longer
    side (centred across the shorter; the centre one for one crop).
    """
    span = clip_span(frames, stride)
    starts = evenly_spaced(clips, tf.maximum(tf.shape(video)[0] - span, 0))
    views = []
    for c in range(clips):
        clip = clip_frames(video, starts[c], frames, stride)
        clip = _resize_short_side(clip, size, resize_method)
        height, width = tf.shape(clip)[1], tf.shape(clip)[2]
        along = evenly_spaced(crops, tf.maximum(height, width) - size)
        across = (tf.minimum(height, width) - size) // 2
        for k in range(crops):
            top = tf.where(height > width, along[k], across)
            left = tf.where(height > width, across, along[k])
            views.append(clip[:, top : top + size, left : left + size])
    stacked = tf.stack(views)
    stacked.set_shape([clips * crops, frames, size, size, video.shape[-1]])
    return augment.normalize(stacked, mean, std)
