"""Co-training input: the labelled train stream zipped with a pseudo-labelled stream.

The pseudo-labelled stream reads an unlabelled split decoded once into host memory (it must fit,
as with `data.decoded_cache`) and the teacher's probabilities for it, in the split's stored
order. Its data order is a pure function of (seed, step), like the labelled stream's:

- A pseudo epoch is a seeded permutation of the student's positions (each image repeated by its
  copies, `rsjax.train.pseudo_labels.select`); it holds M // PB steps of PB images
  (PB = `cotrain.ratio` x global batch), independent of the labelled epochs.
- Step t takes row t mod (M // PB) of pseudo epoch t // (M // PB). Process p of P reads columns
  [p PB / P, (p + 1) PB / P) of the row, so the global pseudo batch does not depend on P.
- Image j of a row is augmented (the train preprocessing of `data`: crops, flips,
  RandAugment: the student's input noise) with a stateless seed from (seed, pseudo epoch,
  its position in the epoch).

Resuming at step s therefore rebuilds pseudo epoch s // (M // PB) and skips its first rows.
"""

import dataclasses
import math
from collections.abc import Iterator
from typing import Any

import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from rsjax.data import augment, input_pipeline

# Seed purposes (`input_pipeline.epoch_seed`): the permutation and the augmentation.
_ORDER, _AUGMENT = 5, 6


@dataclasses.dataclass(frozen=True)
class PseudoStream:
    """What the pseudo-labelled stream reads.

    images: [N, H, W, C] uint8, the unlabelled split in stored order.
    probabilities: [N, K] float32 teacher probabilities, in the same order.
    positions: [M] int64 positions (into N) the student trains on, repeated by their copies.
    global_batch: PB, pseudo-labelled images per step over all processes.
    """

    images: np.ndarray
    probabilities: np.ndarray
    positions: np.ndarray
    global_batch: int

    @property
    def steps_per_epoch(self) -> int:
        """Steps in one pass over the student's positions (the remainder is dropped)."""
        return len(self.positions) // self.global_batch


def check(stream: PseudoStream, process_count: int) -> None:
    """ValueError unless the stream can feed every step: at least one pseudo batch of
    positions, a batch that splits over the processes, and arrays that agree."""
    if len(stream.images) != len(stream.probabilities):
        raise ValueError(
            f"the unlabelled split has {len(stream.images)} images but the pseudo-labels hold "
            f"{len(stream.probabilities)}"
        )
    if stream.steps_per_epoch < 1:
        raise ValueError(
            f"the pseudo-labels keep {len(stream.positions)} images, fewer than one "
            f"pseudo-labelled batch ({stream.global_batch}); lower cotrain.ratio or the threshold"
        )
    if stream.global_batch % process_count:
        raise ValueError(
            f"the pseudo-labelled batch {stream.global_batch} is not divisible by the "
            f"{process_count} processes"
        )


def pseudo_dataset(
    stream: PseudoStream,
    data: ml_collections.ConfigDict,
    *,
    seed: int,
    start_step: int = 0,
    end_step: int | None = None,
    process_index: int = 0,
    process_count: int = 1,
) -> tf.data.Dataset:
    """Host batches from `start_step`: {"pseudo_images": [b, S, S, C] float32,
    "pseudo_probabilities": [b, K] float32}, b = PB / P (module docstring). Endless when
    `end_step` is None, else it ends with the pseudo epoch holding step `end_step - 1`."""
    check(stream, process_count)
    batch, per_epoch = stream.global_batch, stream.steps_per_epoch
    local = batch // process_count
    first_column = process_index * local
    first_epoch, offset = divmod(start_step, per_epoch)
    epochs = (
        tf.data.Dataset.counter(first_epoch)
        if end_step is None
        else tf.data.Dataset.range(
            first_epoch, max(first_epoch + 1, math.ceil(end_step / per_epoch))
        )
    )
    images = tf.constant(stream.images)
    probabilities = tf.constant(stream.probabilities, tf.float32)
    positions = tf.constant(stream.positions, tf.int64)
    used = per_epoch * batch

    def epoch_elements(epoch: tf.Tensor) -> tf.data.Dataset:
        """(augmentation seed, image index, position in the epoch) of this process's columns."""
        order_seed = tf.stack(
            [input_pipeline.epoch_seed(seed, epoch, _ORDER), tf.constant(0, tf.int64)]
        )
        order = tf.random.experimental.stateless_shuffle(positions, seed=order_seed)

        def columns(values: tf.Tensor) -> tf.Tensor:
            rows = tf.reshape(values[:used], [per_epoch, batch])
            return tf.reshape(rows[:, first_column : first_column + local], [-1])

        ds = tf.data.Dataset.from_tensor_slices(
            (columns(order), columns(tf.range(used, dtype=tf.int64)))
        )
        ds = ds.skip(tf.where(epoch == first_epoch, tf.constant(offset * local, tf.int64), 0))
        augment_seed = input_pipeline.epoch_seed(seed, epoch, _AUGMENT)
        return ds.map(lambda index, position: (augment_seed, index, position))

    preprocess = input_pipeline.train_preprocess_args(data)

    def preprocess_example(augment_seed: tf.Tensor, index: tf.Tensor, position: tf.Tensor) -> dict:
        image = tf.gather(images, index)
        image = augment.train_preprocess(image, tf.stack([augment_seed, position]), **preprocess)
        return {"pseudo_images": image, "pseudo_probabilities": tf.gather(probabilities, index)}

    ds = epochs.flat_map(epoch_elements)
    ds = ds.map(preprocess_example, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(local, drop_remainder=True)


def cotrain_batches(
    builder: tfds.core.DatasetBuilder,
    data: ml_collections.ConfigDict,
    stream: PseudoStream,
    **where: Any,
) -> Iterator[dict[str, np.ndarray]]:
    """`input_pipeline.train_batches(builder, data, **where)` with each step's pseudo-labelled
    batch added: {"images", "labels", "pseudo_images", "pseudo_probabilities"}."""
    pseudo = pseudo_dataset(
        stream,
        data,
        **{k: v for k, v in where.items() if k != "local_batch"},
    )
    labelled = input_pipeline.train_dataset(builder, data, **where)
    ds = tf.data.Dataset.zip((labelled, pseudo)).map(lambda a, b: {**a, **b})
    return input_pipeline.as_host_batches(ds, data)
