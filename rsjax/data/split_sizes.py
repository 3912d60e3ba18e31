"""Split sizes of the datasets rsjax's configs name, for estimates made without the data.

`train_examples(data)` is what a run's epochs are counted in: `data.train_examples` when set,
else the published size of a known (dataset, split), else a ValueError asking for the override.
The trainer itself always reads the size from the tfds metadata (`input_pipeline.split_size`).
"""

import ml_collections

# (tfds name, split) -> examples, from the tfds catalogue.
KNOWN_SPLIT_SIZES: dict[tuple[str, str], int] = {
    ("imagenet2012", "train"): 1_281_167,
    ("imagenet2012", "validation"): 50_000,
    ("fashion_mnist", "train"): 60_000,
    ("fashion_mnist", "test"): 10_000,
    # `rsjax.data.fashion_mnist.FashionMnistMotion` (MOTION_SPLITS).
    ("fashion_mnist_motion", "train"): 10_000,
    ("fashion_mnist_motion", "test"): 2_000,
}
# The class halves of `rsjax.data.fashion_mnist.FashionMnistTransfer`.
TRANSFER_SPLITS = {"train": 27_500, "validation": 2_500, "train_100": 500, "test": 5_000}
for _half in ("classes_0to4", "classes_5to9"):
    for _split, _size in TRANSFER_SPLITS.items():
        KNOWN_SPLIT_SIZES[(f"fashion_mnist_transfer/{_half}", _split)] = _size


def train_examples(data: ml_collections.ConfigDict) -> int:
    """Examples in the config's train split without reading it (ValueError when unknown)."""
    if data.train_examples > 0:
        return int(data.train_examples)
    try:
        return KNOWN_SPLIT_SIZES[(data.name, data.train_split)]
    except KeyError:
        raise ValueError(
            f"the size of {data.name}:{data.train_split} is not known without the data; "
            "set data.train_examples"
        ) from None
