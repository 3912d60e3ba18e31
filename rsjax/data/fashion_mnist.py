"""Fashion-MNIST from the Debian package files, as a tfds dataset builder.

The four IDX files of `dataset-fashion-mnist` (`/usr/share/datasets/fashion-mnist/`) are read
offline as the builder's manual directory, so Fashion-MNIST flows through exactly the same tfds ->
tf.data code as ImageNet. The prepared dataset (28x28x1 uint8 images, 10 classes, 60,000 train /
10,000 test) is written once under the tfds data dir as `fashion_mnist_debian`.

Derived datasets from the same files: `fashion_mnist_transfer/classes_0to4` (and `_5to9`), class
halves for transfer learning; `fashion_mnist_motion`, clips of a garment moving up or down, for
the video models (`FashionMnistMotion`).
"""

import gzip
import pathlib
import time

import numpy as np
import tensorflow_datasets as tfds

DEFAULT_DIR = pathlib.Path("/usr/share/datasets/fashion-mnist")
DEBIAN_PACKAGE = "dataset-fashion-mnist"
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
CLASS_NAMES = (
    "t-shirt/top", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle boot",
)  # fmt: skip


def check_files(directory: pathlib.Path | str) -> pathlib.Path:
    """Returns `directory` if it holds the four IDX files; raises FileNotFoundError otherwise."""
    directory = pathlib.Path(directory)
    missing = [f for pair in FILES.values() for f in pair if not (directory / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"Fashion-MNIST files missing in {directory}: {', '.join(missing)}. Install the Debian "
            f"package with `apt-get install {DEBIAN_PACKAGE}` (files go to {DEFAULT_DIR}), or set "
            "config.data.manual_dir to a folder with the four *-ubyte.gz files."
        )
    return directory


def read_idx(path: pathlib.Path) -> np.ndarray:
    """Reads a gzipped IDX file (big-endian header: magic, dims) into a uint8 array."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header promises shape {shape}, file holds {array.size} bytes.")
    return array.reshape(shape)


class FashionMnistDebian(tfds.core.GeneratorBasedBuilder):
    """Fashion-MNIST (Xiao et al., 2017) read from the Debian package's IDX files."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Images and labels from dataset-fashion-mnist."}  # noqa: RUF012
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        f"`apt-get install {DEBIAN_PACKAGE}` puts the four IDX files in {DEFAULT_DIR}."
    )

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(28, 28, 1)),
                    "label": tfds.features.ClassLabel(names=CLASS_NAMES),
                }
            ),
            supervised_keys=("image", "label"),
            homepage="https://github.com/zalandoresearch/fashion-mnist",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        directory = check_files(dl_manager.manual_dir)
        return {split: self._generate_examples(directory, split) for split in FILES}

    def _generate_examples(self, directory: pathlib.Path, split: str):
        image_file, label_file = FILES[split]
        images = read_idx(directory / image_file)[..., None]
        labels = read_idx(directory / label_file)
        for index, (image, label) in enumerate(zip(images, labels, strict=True)):
            yield index, {"image": image, "label": int(label)}


# Transfer halves: builder config -> the original labels it keeps (renumbered 0..4 in order).
TRANSFER_CLASSES = {"classes_0to4": (0, 1, 2, 3, 4), "classes_5to9": (5, 6, 7, 8, 9)}
VALIDATION_PER_CLASS = 500  # the last ones of each class in the train file: model selection
LOW_DATA_PER_CLASS = 100  # the first ones of each class: the low-data split `train_100`


class FashionMnistTransfer(tfds.core.GeneratorBasedBuilder):
    """Half of Fashion-MNIST's classes (labels 0-4), for pretraining on one half and fine-tuning
    on the other. Splits, all carved from the Debian files by class and stored order:
      train:      the half's training images but the validation ones (5 x 5,500);
      validation: the last 500 training images of each class (model selection: never test);
      train_100:  the first 100 training images of each class (the low-data task; in `train`);
      test:       the half's test images (5 x 1,000).
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Class halves of dataset-fashion-mnist."}  # noqa: RUF012
    BUILDER_CONFIGS = [  # noqa: RUF012
        tfds.core.BuilderConfig(name=name, description=f"Fashion-MNIST classes {list(kept)}")
        for name, kept in TRANSFER_CLASSES.items()
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = FashionMnistDebian.MANUAL_DOWNLOAD_INSTRUCTIONS

    def _info(self) -> tfds.core.DatasetInfo:
        kept = TRANSFER_CLASSES[self.builder_config.name]
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(28, 28, 1)),
                    "label": tfds.features.ClassLabel(names=[CLASS_NAMES[k] for k in kept]),
                }
            ),
            supervised_keys=("image", "label"),
            homepage="https://github.com/zalandoresearch/fashion-mnist",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        directory = check_files(dl_manager.manual_dir)
        kept = TRANSFER_CLASSES[self.builder_config.name]
        files = {  # each IDX file read once: three splits come from the train file
            source: (read_idx(directory / images)[..., None], read_idx(directory / labels))
            for source, (images, labels) in FILES.items()
        }
        train = transfer_indices(files["train"][1], kept)
        test = transfer_indices(files["test"][1], kept)
        return {
            "train": self._generate_examples(*files["train"], kept, train["train"]),
            "validation": self._generate_examples(*files["train"], kept, train["validation"]),
            "train_100": self._generate_examples(*files["train"], kept, train["train_100"]),
            "test": self._generate_examples(*files["test"], kept, test["all"]),
        }

    def _generate_examples(self, images: np.ndarray, labels: np.ndarray, kept, indices):
        for index in indices:
            yield int(index), {"image": images[index], "label": kept.index(int(labels[index]))}


def transfer_indices(labels: np.ndarray, kept: tuple[int, ...]) -> dict[str, np.ndarray]:
    """Indices (into a file of `labels`) of the transfer splits of the classes `kept`:
    "validation" (the last VALIDATION_PER_CLASS of each class), "train" (the rest of the kept
    classes), "train_100" (the first LOW_DATA_PER_CLASS of each class) and "all"."""
    per_class = [np.flatnonzero(labels == k) for k in kept]
    validation = np.sort(np.concatenate([i[-VALIDATION_PER_CLASS:] for i in per_class]))
    everything = np.sort(np.concatenate(per_class))
    return {
        "all": everything,
        "validation": validation,
        "train": np.setdiff1d(everything, validation),
        "train_100": np.sort(np.concatenate([i[:LOW_DATA_PER_CLASS] for i in per_class])),
    }


# The motion clips (`FashionMnistMotion`): frames, canvas side, garment side after the 2x
# average-pool, and the garment's centre offset range (px, about the canvas centre).
MOTION_FRAMES = 16
MOTION_CANVAS = 32
MOTION_GARMENT = 14
MOTION_CENTRE_RANGE = 3
MOTION_DIRECTIONS = ("down", "up")
MOTION_SPLITS = {"train": ("train", 10_000), "test": ("test", 2_000)}  # split -> (file, first n)


def motion_video(
    image: np.ndarray, direction: int, centre: int, column: int, frames: int = MOTION_FRAMES
) -> np.ndarray:
    """One clip of the motion dataset: [frames, 32, 32, 1] uint8.

    `image` [28, 28, 1] uint8 is average-pooled 2x to 14x14 and pasted on a black 32x32 canvas
    with its left edge at `column` (0..18). Moving down (direction 0), its top edge is at
    y_t = 9 + centre + t - frames // 2 in frame t (`centre` in -3..3; rows that leave the canvas
    are cut); moving up (direction 1) the same frames play in reverse order. So a clip's frames
    taken as a set (in any order) cannot tell the two directions apart: only their order can.
    """
    g = MOTION_GARMENT
    pooled = image[: 2 * g, : 2 * g, 0].reshape(g, 2, g, 2).astype(np.float32).mean(axis=(1, 3))
    garment = np.round(pooled).astype(np.uint8)
    top = (MOTION_CANVAS - g) // 2 + centre
    video = np.zeros((frames, MOTION_CANVAS, MOTION_CANVAS, 1), np.uint8)
    for t in range(frames):
        rows = np.arange(g) + top + t - frames // 2
        keep = (rows >= 0) & (rows < MOTION_CANVAS)
        video[t, rows[keep], column : column + g, 0] = garment[keep]
    return video if direction == 0 else video[::-1].copy()


def motion_label(garment_class: int, direction: int) -> int:
    """The motion dataset's label: 2 x garment class + direction (0 down, 1 up), 20 classes."""
    return 2 * garment_class + direction


class FashionMnistMotion(tfds.core.GeneratorBasedBuilder):
    """Fashion-MNIST garments moving up or down (`motion_video`): a mechanism test of a video
    model's temporal path, not a stand-in for Kinetics.

    Each clip is 16 frames of 32x32x1 uint8 (`tfds.features.Video`); its label (20 classes) is
    2 x the garment's class + the direction, so half of the label (the class) can be read from any
    one frame and the other half (the direction) only from the frames' order. Splits: `train`
    from the first 10,000 training images, `test` from the first 2,000 test images. The direction,
    centre offset (-3..3 px) and column (0..18) of example i of a split are drawn from
    numpy's default_rng((split number, i)): the dataset is the same on every machine.
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Up/down motion clips of dataset-fashion-mnist garments."}  # noqa: RUF012
    MANUAL_DOWNLOAD_INSTRUCTIONS = FashionMnistDebian.MANUAL_DOWNLOAD_INSTRUCTIONS

    def _info(self) -> tfds.core.DatasetInfo:
        shape = (MOTION_FRAMES, MOTION_CANVAS, MOTION_CANVAS, 1)
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "video": tfds.features.Video(shape=shape),
                    "label": tfds.features.ClassLabel(
                        names=[f"{c} {d}" for c in CLASS_NAMES for d in MOTION_DIRECTIONS]
                    ),
                }
            ),
            supervised_keys=("video", "label"),
            homepage="https://github.com/zalandoresearch/fashion-mnist",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        directory = check_files(dl_manager.manual_dir)
        return {
            split: self._generate_examples(directory, number, *MOTION_SPLITS[split])
            for number, split in enumerate(MOTION_SPLITS)
        }

    def _generate_examples(self, directory: pathlib.Path, number: int, source: str, count: int):
        image_file, label_file = FILES[source]
        images = read_idx(directory / image_file)[:count, ..., None]
        labels = read_idx(directory / label_file)[:count]
        free = MOTION_CANVAS - MOTION_GARMENT
        for index, (image, label) in enumerate(zip(images, labels, strict=True)):
            rng = np.random.default_rng((number, index))
            direction = int(rng.integers(2))
            centre = int(rng.integers(-MOTION_CENTRE_RANGE, MOTION_CENTRE_RANGE + 1))
            column = int(rng.integers(free + 1))
            yield (
                index,
                {
                    "video": motion_video(image, direction, centre, column),
                    "label": motion_label(int(label), direction),
                },
            )


MOTION_NAME = "fashion_mnist_motion"


def builder_for(name: str, data_dir: str | None) -> tfds.core.DatasetBuilder:
    """`fashion_mnist` (all 10 classes), `fashion_mnist_transfer/<config>` or
    `fashion_mnist_motion` (ValueError else)."""
    if name == "fashion_mnist":
        return FashionMnistDebian(data_dir=data_dir)
    if name == MOTION_NAME:
        return FashionMnistMotion(data_dir=data_dir)
    family, _, config = name.partition("/")
    if family != "fashion_mnist_transfer" or config not in TRANSFER_CLASSES:
        known = ", ".join(f"fashion_mnist_transfer/{c}" for c in TRANSFER_CLASSES)
        raise ValueError(
            f"Unknown dataset {name!r}; the Debian ones: fashion_mnist, {known}, {MOTION_NAME}"
        )
    return FashionMnistTransfer(config=config, data_dir=data_dir)


def is_debian_dataset(name: str) -> bool:
    return name in ("fashion_mnist", MOTION_NAME) or name.startswith("fashion_mnist_transfer/")


def prepare(
    data_dir: str | None,
    manual_dir: str | pathlib.Path = DEFAULT_DIR,
    converter: bool = True,
    wait_s: float = 900.0,
    name: str = "fashion_mnist",
):
    """The prepared builder of `name` (`builder_for`), converting the Debian files on first use
    (about half a minute).

    In a multi-process run one process converts (`converter`); the others (converter=False) wait
    up to `wait_s` seconds for its dataset to appear in `data_dir` instead of writing it too.
    Two runs converting into one `data_dir` at once (a sweep's) both end with the one that
    finished first.
    """
    builder = builder_for(name, data_dir)
    if builder.is_prepared():
        return builder
    if not converter:
        deadline = time.monotonic() + wait_s
        while not builder.is_prepared():
            if time.monotonic() > deadline:
                raise FileNotFoundError(
                    f"{builder.name} was not prepared in {data_dir} within {wait_s:.0f} s by the "
                    "converting process"
                )
            time.sleep(1.0)
            builder = builder_for(name, data_dir)
        return builder
    check_files(manual_dir)
    try:
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir))
        )
    except FileExistsError:
        # Another run (a sweep's runs share data_dir) finished the same conversion first.
        builder = builder_for(name, data_dir)
        if not builder.is_prepared():
            raise
    return builder
