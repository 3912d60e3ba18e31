"""Kinetics-400 (Kay et al., 2017) as a tfds builder over a directory of decoded clips.

Nothing is downloaded: the videos are prepared by the user (e.g. decoded to JPEG frames with
ffmpeg) in the builder's manual directory (`data.manual_dir`, or tfds's
`<data_dir>/downloads/manual`):

    <manual_dir>/<split>/<class name>/<video id>/<frame>.jpg     split: train, validation

Frames are read in file-name order. The 400 class names are the sorted subdirectories of
`train` (labels 0..399 in that order; `validation` must use the same names). Each example is
{"video": [L, H, W, 3] uint8 (any L, H, W), "label": int}, so the clip pipeline
(`rsjax.data.clips`) takes clips and crops as for any video dataset.
"""

import pathlib

import tensorflow_datasets as tfds

NUM_CLASSES = 400
SPLITS = ("train", "validation")
FRAME_SUFFIXES = (".jpg", ".jpeg")


def class_names(manual_dir: pathlib.Path) -> list[str]:
    """Sorted class directories of `manual_dir/train`; FileNotFoundError / ValueError when
    missing or not 400 of them."""
    train = manual_dir / "train"
    if not train.is_dir():
        raise FileNotFoundError(
            f"{train} not found: Kinetics-400 is read from decoded clips laid out as "
            "<manual_dir>/<split>/<class>/<video id>/<frame>.jpg (see rsjax/data/kinetics.py)"
        )
    names = sorted(p.name for p in train.iterdir() if p.is_dir())
    if len(names) != NUM_CLASSES:
        raise ValueError(f"{train} holds {len(names)} class directories, not {NUM_CLASSES}")
    return names


def video_frames(directory: pathlib.Path) -> list[str]:
    """The frame files of one decoded video, in file-name order."""
    return sorted(str(p) for p in directory.iterdir() if p.suffix.lower() in FRAME_SUFFIXES)


class Kinetics400(tfds.core.GeneratorBasedBuilder):
    """Kinetics-400 from decoded JPEG frames in the manual directory (module docstring)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Decoded clips from a manual directory."}  # noqa: RUF012
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Decode each video to JPEG frames under <manual_dir>/<split>/<class>/<video id>/."
    )

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "video": tfds.features.Video(shape=(None, None, None, 3)),
                    "label": tfds.features.ClassLabel(num_classes=NUM_CLASSES),
                }
            ),
            supervised_keys=("video", "label"),
            homepage="https://deepmind.com/research/open-source/kinetics",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        manual = pathlib.Path(dl_manager.manual_dir)
        names = class_names(manual)
        return {split: self._generate_examples(manual / split, names) for split in SPLITS}

    def _generate_examples(self, directory: pathlib.Path, names: list[str]):
        for label, name in enumerate(names):
            for video in sorted((directory / name).iterdir()):
                frames = video_frames(video)
                if frames:
                    yield f"{name}/{video.name}", {"video": frames, "label": label}
