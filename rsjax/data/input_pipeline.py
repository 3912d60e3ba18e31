"""tfds -> tf.data -> numpy host batches, deterministic in (seed, step).

Training data order is a pure function of the run seed and the global step: epoch e reads its
files and shuffles its buffer with seeds derived from (seed, e), each image's augmentation uses a
stateless seed from (seed, e, position in epoch), and every epoch yields exactly
`steps_per_epoch` batches. Resuming at step s therefore starts at epoch s // steps_per_epoch and
skips the raw examples already consumed, without preprocessing them. All epochs run in one
tf.data pipeline (the seeds are tensors of the epoch number), so an epoch boundary only refills
the shuffle buffer, behind the prefetched batches, and nothing is rebuilt or retraced.

Input shards: the train split is cut into S contiguous shards (`data.input_shards`; 0 means one
per process); shard k yields batches of global_batch / S and the global batch of a step is the
shards' batches in shard order. Each process reads its own S / P consecutive shards and yields
their concatenation as its host-local batch, so with a fixed S the global batches (and the run)
do not depend on the number of processes P. `rsjax.train.sharding` turns host batches into
global `jax.Array`s; eval splits are read per process (`tfds.split_for_jax_process`).

Video datasets (a "video" feature [L, H, W, C] instead of "image") take the same path with
`data.num_frames` > 0: each example becomes one clip (`rsjax.data.clips.train_clip`) in
training, and `data.eval_clips` x `data.eval_crops` views (`clips.eval_views`) in evaluation.
"""

import contextlib
import dataclasses
import functools
import math
import os
from collections.abc import Iterator
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from rsjax.data import augment, clips, fashion_mnist
from rsjax.data import kinetics as _kinetics  # noqa: F401  (registers the "kinetics400" builder)

# TF only feeds the host: keep it off accelerators so JAX owns them.
for _kind in ("GPU", "TPU"):
    with contextlib.suppress(RuntimeError, ValueError):
        tf.config.set_visible_devices([], _kind)

Batch = dict[str, np.ndarray]


def get_builder(
    data: ml_collections.ConfigDict, converter: bool = True
) -> tfds.core.DatasetBuilder:
    """The tfds builder of `data.name`: 'fashion_mnist' and 'fashion_mnist_transfer/classes_0to4'
    (or '_5to9') read the Debian files (`rsjax.data.fashion_mnist`); else any tfds name.

    `converter`: this process may write the Fashion-MNIST conversion (False: wait for the one
    that does; in a multi-process run that is process 0). Raises ValueError for an unknown
    dataset name, FileNotFoundError for missing local files.
    """
    if fashion_mnist.is_debian_dataset(data.name):
        return fashion_mnist.prepare(
            data.data_dir, data.manual_dir, converter=converter, name=data.name
        )
    try:
        return tfds.builder(data.name, data_dir=data.data_dir)
    except tfds.core.registered.DatasetNotFoundError as e:
        raise ValueError(f"Unknown dataset {data.name!r}: {e}") from None


def media_key(builder: tfds.core.DatasetBuilder) -> str:
    """The feature a dataset's examples carry: "video" ([L, H, W, C] frames) or "image"."""
    return "video" if "video" in builder.info.features else "image"


def media_shape(builder: tfds.core.DatasetBuilder) -> tuple:
    """Shape of one stored example's image [H, W, C] or video [L, H, W, C] (None: varies)."""
    return tuple(builder.info.features[media_key(builder)].shape)


def _options(data: ml_collections.ConfigDict) -> tf.data.Options:
    options = tf.data.Options()
    options.deterministic = True
    if data.threads > 0:
        options.threading.private_threadpool_size = data.threads
    options.threading.max_intra_op_parallelism = 1
    options.autotune.enabled = bool(data.autotune)
    return options


def process_split(split: str, process_index: int, process_count: int, drop_remainder: bool) -> Any:
    return tfds.split_for_jax_process(
        split,
        process_index=process_index,
        process_count=process_count,
        drop_remainder=drop_remainder,
    )


def split_size(builder: tfds.core.DatasetBuilder, split: str, override: int = 0) -> int:
    """Examples in `split`: `override` when > 0, else the tfds metadata (ValueError if absent)."""
    if override > 0:
        return override
    try:
        return builder.info.splits[split].num_examples
    except KeyError:
        raise ValueError(
            f"{builder.name} has no size for split {split!r} (not prepared?); prepare it or set "
            "data.train_examples / data.eval_examples."
        ) from None


def input_shards(data: ml_collections.ConfigDict, global_batch: int, process_count: int) -> int:
    """The run's number of input shards S: `data.input_shards`, or `process_count` when 0.
    ValueError unless S is a multiple of `process_count` and divides `global_batch`."""
    shards = data.input_shards or process_count
    if shards % process_count:
        raise ValueError(
            f"data.input_shards {shards} is not a multiple of the {process_count} processes."
        )
    if global_batch % shards:
        raise ValueError(
            f"global batch {global_batch} is not divisible by data.input_shards ({shards})."
        )
    return shards


def steps_per_epoch(
    builder: tfds.core.DatasetBuilder,
    data: ml_collections.ConfigDict,
    global_batch: int,
    process_count: int = 1,
) -> int:
    """Training steps in one epoch of the train split: every shard's batches (all steps
    together)."""
    shards = input_shards(data, global_batch, process_count)
    return (split_size(builder, data.train_split, data.train_examples) // shards) // (
        global_batch // shards
    )


def train_batches(
    builder: tfds.core.DatasetBuilder, data: ml_collections.ConfigDict, **where: Any
) -> Iterator[Batch]:
    """The host batches of `train_dataset(builder, data, **where)` as numpy, prefetched:
    {"images": [b, S, S, C] (clips: [b, T, S, S, C]) float32, "labels": [b] int32},
    b = `local_batch`."""
    return as_host_batches(train_dataset(builder, data, **where), data)


def as_host_batches(ds: tf.data.Dataset, data: ml_collections.ConfigDict) -> Iterator[Batch]:
    """Numpy batches of `ds`, `data.prefetch_batches` prepared ahead, with the run's options."""
    ds = ds.prefetch(data.prefetch_batches)
    return iter(tfds.as_numpy(ds.with_options(_options(data))))


def train_dataset(
    builder: tfds.core.DatasetBuilder,
    data: ml_collections.ConfigDict,
    *,
    seed: int,
    local_batch: int,
    start_step: int = 0,
    end_step: int | None = None,
    process_index: int = 0,
    process_count: int = 1,
) -> tf.data.Dataset:
    """Host batches from `start_step` (a tf.data pipeline, not yet prefetched): this process's
    input shards' batches of `local_batch` examples, concatenated in shard order.

    Endless when `end_step` is None; otherwise the pipeline stops at the end of the epoch that
    holds step `end_step - 1`, and no later epoch is prepared.
    """
    shards = input_shards(data, local_batch * process_count, process_count)
    mine = shards // process_count
    shard_batch = local_batch // mine
    per_epoch = steps_per_epoch(builder, data, local_batch * process_count, process_count)
    if per_epoch < 1:
        raise ValueError(
            f"The {data.train_split!r} split has fewer examples per input shard than one shard "
            f"batch ({shard_batch})."
        )
    first_epoch, offset = divmod(start_step, per_epoch)
    plan = _ShardPlan(
        shards=shards,
        shard_batch=shard_batch,
        per_epoch=per_epoch,
        first_epoch=first_epoch,
        offset=offset,
        last_epoch=None if end_step is None else max(first_epoch + 1, -(-end_step // per_epoch)),
    )
    streams = [
        _shard_batches(builder, data, seed, shard, plan)
        for shard in range(process_index * mine, (process_index + 1) * mine)
    ]
    if len(streams) == 1:
        return streams[0]
    return tf.data.Dataset.zip(tuple(streams)).map(
        lambda *parts: {k: tf.concat([p[k] for p in parts], axis=0) for k in parts[0]}
    )


@dataclasses.dataclass(frozen=True)
class _ShardPlan:
    """What every shard of one `train_batches` call reads: `shards` shards of batches of
    `shard_batch`, `per_epoch` batches an epoch, from batch `offset` of epoch `first_epoch` to
    the end of epoch `last_epoch - 1` (endless when None)."""

    shards: int
    shard_batch: int
    per_epoch: int
    first_epoch: int
    offset: int
    last_epoch: int | None


def _shard_batches(
    builder: tfds.core.DatasetBuilder,
    data: ml_collections.ConfigDict,
    seed: int,
    shard: int,
    plan: _ShardPlan,
) -> tf.data.Dataset:
    """The batches of input shard `shard` (its contiguous part of the train split) per `plan`."""
    shards, shard_batch, first_epoch = plan.shards, plan.shard_batch, plan.first_epoch
    epochs = (
        tf.data.Dataset.counter(first_epoch)
        if plan.last_epoch is None
        else tf.data.Dataset.range(first_epoch, plan.last_epoch)
    )
    split = process_split(data.train_split, shard, shards, drop_remainder=True)
    source = _RecordSource(builder, split, decoded_cache=bool(data.decoded_cache))
    epoch_examples = plan.per_epoch * shard_batch

    def epoch_records(epoch: tf.Tensor) -> tf.data.Dataset:
        """(augmentation seed, position, record) of one epoch, in its own order; the resumed
        part only."""
        ds = source.records(epoch_seed(seed, epoch, 1))
        ds = ds.shuffle(data.shuffle_buffer, seed=epoch_seed(seed, epoch, 2))
        ds = ds.take(epoch_examples).enumerate()
        resumed = tf.constant(plan.offset * shard_batch, tf.int64)
        ds = ds.skip(tf.where(epoch == first_epoch, resumed, 0))
        augment_seed = epoch_seed(seed, epoch, 3)
        return ds.map(lambda position, record: (augment_seed, position, record))

    if data.num_frames > 0:
        preprocess = functools.partial(clips.train_clip, **clip_preprocess_args(data))
    else:
        preprocess = functools.partial(augment.train_preprocess, **train_preprocess_args(data))

    def preprocess_example(augment_seed: tf.Tensor, position: tf.Tensor, record: Any) -> Batch:
        example = source.parse(record)
        # Distinct per shard: the same position in two shards is two different random draws.
        example_seed = tf.stack([augment_seed, position * shards + shard])
        image = preprocess(example[source.key], example_seed)
        return {"images": image, "labels": tf.cast(example["label"], tf.int32)}

    ds = epochs.flat_map(epoch_records)
    ds = ds.map(preprocess_example, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(shard_batch, drop_remainder=True)


def train_preprocess_args(data: ml_collections.ConfigDict) -> dict[str, Any]:
    """Keyword arguments of `augment.train_preprocess` from the data config."""
    return dict(
        size=data.image_size,
        area_range=tuple(data.area_range),
        flip=data.flip,
        randaugment_layers=data.randaugment_layers,
        randaugment_magnitude=float(data.randaugment_magnitude),
        resize_method=data.resize_method,
        mean=tuple(data.mean),
        std=tuple(data.std),
        cutout_pad=int(data.cutout_pad),
    )


def clip_preprocess_args(data: ml_collections.ConfigDict) -> dict[str, Any]:
    """Keyword arguments of `clips.train_clip` from the data config."""
    return dict(
        frames=data.num_frames,
        stride=data.frame_stride,
        size=data.image_size,
        scale_range=tuple(float(s) for s in data.scale_range),
        flip=data.flip,
        resize_method=data.resize_method,
        mean=tuple(data.mean),
        std=tuple(data.std),
    )


def eval_size(data: ml_collections.ConfigDict) -> int:
    """The evaluation resolution: `data.eval_image_size`, or the training one when 0."""
    return data.eval_image_size or data.image_size


def epoch_seed(seed: int, epoch: tf.Tensor, purpose: int) -> tf.Tensor:
    """An int64 seed in [0, 2^31), a pure function of (seed, epoch, purpose) (Philox). Purposes
    0-7; the train split's stream uses 1-3, `rsjax.data.pseudo_stream` 5-6."""
    return tf.random.stateless_uniform(
        [2],
        seed=tf.stack([tf.constant(seed, tf.int64), tf.cast(epoch, tf.int64) * 8 + purpose]),
        minval=0,
        maxval=2**31 - 1,
        dtype=tf.int64,
    )[0]


class _RecordSource:
    """One epoch's raw examples in a seeded file order, and how to parse one of them.

    TFRecord datasets are read directly from the split's files (the shuffle buffer then holds
    serialized records: Fashion-MNIST's 60k-example buffer fills in 0.3 s instead of 2.5 s, and
    parsing runs in the parallel map); anything else (ArrayRecord, tfds mocks) goes through
    `as_dataset` in a fixed file order, and the shuffle buffer alone orders each epoch.

    `decoded_cache`: decode the split once into host memory ([N, H, W, C] uint8 and [N] labels)
    and stream indices into it instead of records; the file order, the shuffle and therefore the
    batches are the same as without it (the epoch's records are the same examples in the same
    order), only the per-epoch decoding is gone. For splits that fit in memory.

    `key`: the examples' image or video feature (`media_key`).
    """

    def __init__(
        self, builder: tfds.core.DatasetBuilder, split: Any, decoded_cache: bool = False
    ) -> None:
        self.features = builder.info.features
        self.key = media_key(builder)
        try:
            instructions = builder.info.splits[split].file_instructions
        except KeyError:  # no split metadata (a mocked dataset)
            instructions = []
        filenames = [os.fspath(i.filename) for i in instructions]
        self.files = None
        self.cache = None
        # A mocked builder may list files it never wrote; a prepared one has all of them (one
        # existence check, not one per shard: ImageNet has 1024 shards, on GCS each a round trip).
        if (
            filenames
            and builder.info.file_format == tfds.core.FileFormat.TFRECORD
            and tf.io.gfile.exists(filenames[0])
        ):
            counts = [i.examples_in_shard - i.skip if i.take < 0 else i.take for i in instructions]
            # (file, skip, take, index of its first example in the split's stored order)
            self.files = tf.data.Dataset.from_tensor_slices(
                (
                    filenames,
                    np.array([i.skip for i in instructions], np.int64),
                    np.array(counts, np.int64),
                    np.cumsum([0, *counts[:-1]]).astype(np.int64),
                )
            )
            self.num_files = len(instructions)
        else:
            self.examples = builder.as_dataset(
                split=split,
                shuffle_files=False,
                decoders={self.key: tfds.decode.SkipDecoding()},
            )
        if decoded_cache:
            self.cache = {k: tf.constant(v) for k, v in self.decode_all().items()}

    def decode_all(self) -> dict[str, np.ndarray]:
        """{key: [N, H, W, C] (video: [N, L, H, W, C]) uint8, "label": [N]}: the split decoded
        in stored order (file after file), which the indices of `records` refer to. ValueError
        for examples of no one shape."""
        shape = self.features[self.key].shape
        if None in shape:
            raise ValueError(
                f"data.decoded_cache needs {self.key}s of one shape; these are {shape} (turn it "
                "off)."
            )
        stored = self.examples if self.files is None else self.files.flat_map(_read_records)
        ds = stored.map(self._parse_stored, num_parallel_calls=tf.data.AUTOTUNE).batch(4096)
        parts = list(tfds.as_numpy(ds))
        return {k: np.concatenate([p[k] for p in parts]) for k in (self.key, "label")}

    def records(self, file_seed: tf.Tensor) -> tf.data.Dataset:
        """The epoch's elements, files in a seeded order: serialized records, `as_dataset`
        examples, or (with the decoded cache) int64 indices of the same examples."""
        if self.files is None:
            if self.cache is None:
                return self.examples
            return tf.data.Dataset.range(self.cache["label"].shape[0])

        def read_indices(filename, skip, take, start):
            del filename, skip
            return tf.data.Dataset.range(start, start + take)

        return self.files.shuffle(self.num_files, seed=file_seed).interleave(
            _read_records if self.cache is None else read_indices,
            cycle_length=min(16, self.num_files),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )

    def parse(self, record: Any) -> dict[str, tf.Tensor]:
        """{key: uint8 [H, W, C] (video [L, H, W, C]), "label": int} from an element of
        `records`."""
        if self.cache is not None:
            return {k: tf.gather(v, record) for k, v in self.cache.items()}
        return self._parse_stored(record)

    def _parse_stored(self, record: Any) -> dict[str, tf.Tensor]:
        if self.files is not None:
            return self.features.deserialize_example(record)
        return {
            self.key: self.features[self.key].decode_example(record[self.key]),
            "label": record["label"],
        }


def decode_split(builder: tfds.core.DatasetBuilder, split: str) -> dict[str, np.ndarray]:
    """{"image": [N, H, W, C] uint8, "label": [N]}: all of `split` (tfds slicing works) decoded
    in stored order, the order `eval_batches` reads it in. ValueError for images of no one
    shape."""
    return _RecordSource(builder, split).decode_all()


def _read_records(
    filename: tf.Tensor, skip: tf.Tensor, take: tf.Tensor, start: tf.Tensor
) -> tf.data.Dataset:
    """The records one file contributes to a split (`start` is for the decoded cache)."""
    del start
    return tf.data.TFRecordDataset(filename).skip(skip).take(take)


def eval_batches(
    builder: tfds.core.DatasetBuilder,
    data: ml_collections.ConfigDict,
    *,
    local_batch: int,
    process_index: int = 0,
    process_count: int = 1,
    split: str | None = None,
) -> Iterator[Batch]:
    """One pass over `split` (default: the eval split) with eval preprocessing: {"images",
    "labels", "mask"} host batches of fixed size; "images" [b, S, S, C] float32, or for clips
    [b, V, T, S, S, C] (V = `data.eval_clips` x `data.eval_crops` views), S = `eval_size`.

    The last batch is padded (mask 0), and every process yields the same number of batches.
    """
    if split is None:
        split, examples = data.eval_split, data.eval_examples
    else:
        examples = 0  # a sliced split's size comes from the metadata ("train[:6000]")
    largest_share = math.ceil(split_size(builder, split, examples) / process_count)
    num_batches = math.ceil(largest_share / local_batch)
    key = media_key(builder)
    common = dict(resize_method=data.resize_method, mean=tuple(data.mean), std=tuple(data.std))
    if data.num_frames > 0:
        preprocess = functools.partial(
            clips.eval_views,
            frames=data.num_frames,
            stride=data.frame_stride,
            size=eval_size(data),
            clips=data.eval_clips,
            crops=data.eval_crops,
            **common,
        )
    else:
        preprocess = functools.partial(
            augment.eval_preprocess,
            size=eval_size(data),
            crop_fraction=data.eval_crop_fraction,
            **common,
        )
    ds = builder.as_dataset(
        split=process_split(split, process_index, process_count, drop_remainder=False),
        shuffle_files=False,
        read_config=tfds.ReadConfig(options=_options(data)),
    )
    ds = (
        ds.map(
            lambda ex: {
                "images": preprocess(ex[key]),
                "labels": tf.cast(ex["label"], tf.int32),
            },
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        .batch(local_batch)
        .prefetch(2)
    )
    channels = media_shape(builder)[-1]
    size = eval_size(data)
    views = (data.eval_clips * data.eval_crops, data.num_frames) if data.num_frames > 0 else ()
    empty = {
        "images": np.zeros((local_batch, *views, size, size, channels), np.float32),
        "labels": np.zeros((local_batch,), np.int32),
        "mask": np.zeros((local_batch,), np.float32),
    }
    produced = 0
    for batch in tfds.as_numpy(ds):
        yield _pad(batch, local_batch)
        produced += 1
    for _ in range(num_batches - produced):
        yield dict(empty)


def _pad(batch: Batch, size: int) -> Batch:
    n = len(batch["labels"])
    mask = np.concatenate([np.ones(n, np.float32), np.zeros(size - n, np.float32)])
    padded = {
        k: np.concatenate([v, np.zeros((size - n, *v.shape[1:]), v.dtype)])
        for k, v in batch.items()
    }
    return {**padded, "mask": mask}
