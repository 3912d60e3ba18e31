"""Images/s of the rsjax training input pipeline (ImageNet path) against the RS-50 train step.

Runs `rsjax.data.input_pipeline.train_batches` (the trainer's own code: shuffle, inception crop,
resize, flip, RandAugment, normalise, batch) over ImageNet-shaped data: tfds' imagenet2012 builder
is mocked (`tfds.testing.mock_data`) to serve JPEG-encoded 500x375 images, which the pipeline
decodes as tfds would. Nothing is downloaded. Measures each (resolution, RandAugment magnitude)
with tf.data's default threads and with one thread (images/s per core, for TPU-host planning),
then the rsjax resnetrs50 train step at 160 px, and prints how many times faster the pipeline
is than the step consumes.

Examples:
  .venv/bin/python benchmarks/input_pipeline.py
  .venv/bin/python benchmarks/input_pipeline.py --sizes=224 --magnitudes=10 --batches=40
  .venv/bin/python benchmarks/input_pipeline.py --skip_train_step
  taskset -c 0 .venv/bin/python benchmarks/input_pipeline.py --skip_train_step --examples 4096
      --batches 16 --magnitudes 10       # images/s per core, epochs long enough to amortise
Run it alone: on 2 cores anything else running skews every number.
"""

import argparse
import sys
import time

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from common import (
    add_out_flag,
    build_model,
    emit,
    keep_output,
    log,
    make_train_step,
    rate,
    spread,
    time_calls,
)

from rsjax import malloc_tuning
from rsjax.configs import imagenet as imagenet_config
from rsjax.data import input_pipeline

SOURCE_HEIGHT, SOURCE_WIDTH = 375, 500  # a typical ImageNet photo


def jpeg_examples(count: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` JPEG-encoded smooth random images (500x375) and labels."""
    rng = np.random.default_rng(0)
    encoded = []
    for _ in range(count):
        coarse = rng.integers(0, 256, (SOURCE_HEIGHT // 25, SOURCE_WIDTH // 25, 3), np.uint8)
        image = tf.image.resize(coarse, (SOURCE_HEIGHT, SOURCE_WIDTH), method="bilinear")
        image += tf.random.stateless_uniform(image.shape, (0, len(encoded)), 0, 40)
        encoded.append(tf.io.encode_jpeg(tf.cast(tf.clip_by_value(image, 0, 255), tf.uint8)))
    return np.array([e.numpy() for e in encoded], dtype=object), rng.integers(0, 1000, count)


def mock_as_dataset(jpegs: np.ndarray, labels: np.ndarray):
    """A `FileReaderBuilder._as_dataset` stand-in serving the given JPEGs, decoded unless the
    caller asks for the image bytes (`decoders={"image": tfds.decode.SkipDecoding()}`)."""

    def as_dataset(self, split, decoders=None, read_config=None, shuffle_files=False, **kwargs):
        del self, split, read_config, shuffle_files, kwargs
        ds = tf.data.Dataset.from_tensor_slices({"image": jpegs, "label": labels})
        if isinstance((decoders or {}).get("image"), tfds.decode.SkipDecoding):
            return ds
        return ds.map(
            lambda ex: {"image": tf.io.decode_jpeg(ex["image"], channels=3), "label": ex["label"]}
        )

    return as_dataset


def measure_pipeline(data, batch: int, batches: int, windows: int) -> dict:
    """Images/s of train_batches over `windows` windows of `batches` batches (after warmup)."""
    builder = input_pipeline.get_builder(data)
    iterator = input_pipeline.train_batches(builder, data, seed=0, local_batch=batch)
    next(iterator)  # builds the pipeline, fills the shuffle buffer and prefetch
    seconds = time_calls(lambda: [next(iterator) for _ in range(batches)], windows)
    return rate(batch * batches, seconds)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="160,224", help="output resolutions (pixels)")
    parser.add_argument("--magnitudes", default="10,0", help="RandAugment magnitudes (0: off)")
    parser.add_argument("--batch", type=int, default=64, help="host batch")
    parser.add_argument("--batches", type=int, default=8, help="batches per timed window")
    parser.add_argument("--windows", type=int, default=5, help="timed windows (>= 5)")
    parser.add_argument("--examples", type=int, default=512, help="distinct source images")
    parser.add_argument("--skip_train_step", action="store_true", help="pipeline numbers only")
    add_out_flag(parser)
    args = parser.parse_args(argv)
    keep_output(args)
    if min(args.batch, args.batches, args.windows, args.examples) < 1:
        parser.error("--batch, --batches, --windows and --examples must be >= 1")
    return args


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    jpegs, labels = jpeg_examples(args.examples)
    results = {}
    with tfds.testing.mock_data(as_dataset_fn=mock_as_dataset(jpegs, labels)):
        for size in [int(s) for s in args.sizes.split(",")]:
            for magnitude in [float(m) for m in args.magnitudes.split(",")]:
                for threads in (0, 1):
                    data = imagenet_config.get_config("resnetrs50_i160").data
                    data.unlock()
                    data.image_size, data.randaugment_magnitude = size, magnitude
                    data.train_examples, data.threads = args.examples, threads
                    data.shuffle_buffer = min(data.shuffle_buffer, args.examples)
                    start = time.perf_counter()
                    images_per_s = measure_pipeline(data, args.batch, args.batches, args.windows)
                    results[size, magnitude, threads] = images_per_s["median"]
                    emit(
                        {
                            "kind": "input_pipeline",
                            "resolution": size,
                            "randaugment_magnitude": magnitude,
                            "threads": threads or "default",
                            "images_per_s": images_per_s,
                        }
                    )
                    log(
                        f"{size} px, RA {magnitude}, threads {threads or 'default'}: "
                        f"{images_per_s['median']:.0f} img/s ({time.perf_counter() - start:.0f} s)"
                    )
    if args.skip_train_step:
        return
    init, step, _ = make_train_step(build_model("resnetrs50"), batch=16, resolution=160)
    init()
    step_rate = spread([16 / s for s in time_calls(step, 5)])
    emit(
        {
            "kind": "train_step",
            "model": "resnetrs50",
            "resolution": 160,
            "batch": 16,
            "images_per_s": step_rate,
        }
    )
    ratios = {
        f"{size}px RA{magnitude:g} pipeline / RS-50@160 step": value / step_rate["median"]
        for (size, magnitude, threads), value in results.items()
        if threads == 0
    }
    emit({"kind": "summary", "ratios": ratios})


if __name__ == "__main__":
    malloc_tuning.maybe_reexec()  # as the rsjax command does (RSJAX_MALLOC_TUNING=0: off)
    main(sys.argv[1:])
