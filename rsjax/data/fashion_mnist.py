"""Fashion-MNIST from the Debian package files, as a tfds dataset builder.

The four IDX files of `dataset-fashion-mnist` (`/usr/share/datasets/fashion-mnist/`) are read
offline as the builder's manual directory, so Fashion-MNIST flows through exactly the same tfds ->
tf.data code as ImageNet. The prepared dataset (28x28x1 uint8 images, 10 classes, 60,000 train /
10,000 test) is written once under the tfds data dir as `fashion_mnist_debian`.
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


def prepare(
    data_dir: str | None,
    manual_dir: str | pathlib.Path = DEFAULT_DIR,
    converter: bool = True,
    wait_s: float = 900.0,
):
    """The prepared builder, converting the Debian files on first use (about half a minute).

    In a multi-process run one process converts (`converter`); the others (converter=False) wait
    up to `wait_s` seconds for its dataset to appear in `data_dir` instead of writing it too.
    Two runs converting into one `data_dir` at once (a sweep's) both end with the one that
    finished first.
    """
    builder = FashionMnistDebian(data_dir=data_dir)
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
            builder = FashionMnistDebian(data_dir=data_dir)
        return builder
    check_files(manual_dir)
    try:
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir))
        )
    except FileExistsError:
        # Another run (a sweep's runs share data_dir) finished the same conversion first.
        builder = FashionMnistDebian(data_dir=data_dir)
        if not builder.is_prepared():
            raise
    return builder
