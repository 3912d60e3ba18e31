"""Input pipeline: Fashion-MNIST builder, deterministic resumable training order, padded eval,
and the ImageNet path on tfds mock data."""

import itertools

import numpy as np
import pytest
import tensorflow_datasets as tfds

from rsjax.configs import imagenet as imagenet_config
from rsjax.data import fashion_mnist, input_pipeline
from tests.conftest import make_fashion_mnist_files, small_fmnist_config


def fmnist_data(small_fmnist, **overrides):
    return small_fmnist_config(small_fmnist, **{f"data.{k}": v for k, v in overrides.items()}).data


def test_idx_round_trip_and_missing_files_name_the_package(tmp_path):
    directory = make_fashion_mnist_files(tmp_path / "f", 12, 5)
    images = fashion_mnist.read_idx(directory / "train-images-idx3-ubyte.gz")
    assert images.shape == (12, 28, 28) and images.dtype == np.uint8
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        fashion_mnist.check_files(tmp_path / "nowhere")


def test_a_conversion_another_run_finished_first_is_used(tmp_path, monkeypatch):
    """Two runs converting into one data_dir: the loser's rename fails (FileExistsError) and it
    uses the winner's dataset; with no winner the error stands."""
    manual = make_fashion_mnist_files(tmp_path / "manual", 12, 5)
    real = fashion_mnist.FashionMnistDebian.download_and_prepare

    def other_run_wins(self, **kwargs):
        real(fashion_mnist.FashionMnistDebian(data_dir=self.data_dir_root), **kwargs)
        raise FileExistsError("Cannot rename incomplete.X_1.0.0: destination already exists")

    def nobody_wins(self, **kwargs):
        raise FileExistsError("Cannot rename")

    monkeypatch.setattr(fashion_mnist.FashionMnistDebian, "download_and_prepare", other_run_wins)
    builder = fashion_mnist.prepare(str(tmp_path / "tfds"), manual)
    assert builder.is_prepared() and builder.info.splits["train"].num_examples == 12
    monkeypatch.setattr(fashion_mnist.FashionMnistDebian, "download_and_prepare", nobody_wins)
    with pytest.raises(FileExistsError):
        fashion_mnist.prepare(str(tmp_path / "other"), manual)


def test_builder_yields_grayscale_examples(small_fmnist):
    builder = input_pipeline.get_builder(fmnist_data(small_fmnist))
    assert builder.info.splits["train"].num_examples == 256
    assert builder.info.features["label"].num_classes == 10
    example = next(iter(tfds.as_numpy(builder.as_dataset(split="test"))))
    assert example["image"].shape == (28, 28, 1) and example["image"].dtype == np.uint8


def test_unknown_dataset_is_a_clear_error(small_fmnist):
    data = fmnist_data(small_fmnist, name="not_a_dataset_xyz")
    with pytest.raises(ValueError, match="Unknown dataset 'not_a_dataset_xyz'"):
        input_pipeline.get_builder(data)


def take(iterator, n):
    return [dict(b) for b in itertools.islice(iterator, n)]


def test_train_batches_are_deterministic_and_resume_exactly(small_fmnist):
    data = fmnist_data(small_fmnist, randaugment_magnitude=0.0)
    builder = input_pipeline.get_builder(data)
    kwargs = dict(seed=3, local_batch=32)  # 256 examples -> 8 steps per epoch
    full = take(input_pipeline.train_batches(builder, data, **kwargs), 12)
    again = take(input_pipeline.train_batches(builder, data, **kwargs), 12)
    resumed = take(input_pipeline.train_batches(builder, data, start_step=6, **kwargs), 6)
    other_seed = take(input_pipeline.train_batches(builder, data, seed=4, local_batch=32), 1)
    assert full[0]["images"].shape == (32, 28, 28, 1) and full[0]["images"].dtype == np.float32
    assert full[0]["labels"].dtype == np.int32
    for a, b in zip(full, again, strict=True):
        np.testing.assert_array_equal(a["images"], b["images"])
    for a, b in zip(full[6:], resumed, strict=True):  # crosses the epoch boundary at step 8
        np.testing.assert_array_equal(a["images"], b["images"])
        np.testing.assert_array_equal(a["labels"], b["labels"])
    assert not np.array_equal(full[0]["images"], other_seed[0]["images"])
    assert not np.array_equal(full[0]["labels"], full[8]["labels"])  # epochs differ in order


@pytest.mark.parametrize("shards", [2, 4])
def test_with_fixed_input_shards_the_processes_batches_make_the_one_process_batch(
    small_fmnist, shards
):
    """data.input_shards fixed: the 2 processes' host batches, concatenated in process order,
    are the 1-process batch at every step (across the epoch boundary at step 8, and resumed
    mid-epoch), with augmentation on; one shard per process (0) is another order."""
    data = fmnist_data(small_fmnist, input_shards=shards)
    builder = input_pipeline.get_builder(data)
    one = take(input_pipeline.train_batches(builder, data, seed=3, local_batch=32), 12)
    parts = [
        take(input_pipeline.train_batches(builder, data, seed=3, local_batch=16,
                                          process_index=i, process_count=2), 12)
        for i in range(2)
    ]  # fmt: skip
    resumed = [
        take(input_pipeline.train_batches(builder, data, seed=3, local_batch=16, start_step=5,
                                          process_index=i, process_count=2), 7)
        for i in range(2)
    ]  # fmt: skip
    for step, batch in enumerate(one):
        for key in ("images", "labels"):
            union = np.concatenate([parts[0][step][key], parts[1][step][key]])
            np.testing.assert_array_equal(union, batch[key])
            if step >= 5:
                again = np.concatenate([resumed[0][step - 5][key], resumed[1][step - 5][key]])
                np.testing.assert_array_equal(again, batch[key])
    assert input_pipeline.steps_per_epoch(builder, data, 32, process_count=2) == 8
    per_process = fmnist_data(small_fmnist, input_shards=0)
    other = take(input_pipeline.train_batches(builder, per_process, seed=3, local_batch=32), 1)
    assert not np.array_equal(other[0]["images"], one[0]["images"])
    with pytest.raises(ValueError, match="not a multiple of the 2 processes"):
        input_pipeline.input_shards(fmnist_data(small_fmnist, input_shards=3), 48, 2)
    with pytest.raises(ValueError, match=r"not divisible by data\.input_shards"):
        input_pipeline.input_shards(data, 33, 1)


def test_each_epoch_holds_every_training_image_once(small_fmnist):
    """Without augmentation a train batch is the normalised split: over each epoch of 8 steps,
    every (image, label) of the 256 appears exactly once (the second epoch in another order)."""
    data = fmnist_data(small_fmnist, randaugment_magnitude=0.0, area_range=(1.0, 1.0), flip=False)
    builder = input_pipeline.get_builder(data)
    batches = take(input_pipeline.train_batches(builder, data, seed=3, local_batch=32), 16)

    def key(image, label):
        return (int(label), np.round(np.asarray(image, np.float32), 3).tobytes())

    split = sorted(
        key((ex["image"] - np.float32(data.mean[0])) / np.float32(data.std[0]), ex["label"])
        for ex in tfds.as_numpy(builder.as_dataset(split="train"))
    )
    assert len(set(split)) == 256  # the synthetic images are distinct
    for epoch in (batches[:8], batches[8:]):
        seen = sorted(
            key(image, label)
            for b in epoch
            for image, label in zip(b["images"], b["labels"], strict=True)
        )
        assert seen == split


def test_autotune_changes_no_batch(small_fmnist):
    """`data.autotune` is a resumable key: the batches are the same with it on or off."""
    batches = {}
    for autotune in (False, True):
        data = fmnist_data(small_fmnist, randaugment_magnitude=0.0, autotune=autotune)
        builder = input_pipeline.get_builder(data)
        iterator = input_pipeline.train_batches(builder, data, seed=3, local_batch=32)
        batches[autotune] = take(iterator, 3)
        assert input_pipeline._options(data).autotune.enabled is autotune
    for a, b in zip(batches[False], batches[True], strict=True):
        np.testing.assert_array_equal(a["images"], b["images"])
        np.testing.assert_array_equal(a["labels"], b["labels"])


@pytest.mark.parametrize("split", ["train", "train[10:250]"])
def test_the_decoded_cache_changes_no_batch(tmp_path, small_fmnist, split):
    """`data.decoded_cache` is a resumable key: over three epochs (augmentation on, files in a
    seeded order each epoch, a sliced split's skip/take) and from a mid-epoch resume, the batches
    are the same with the split decoded once as with records decoded every epoch."""
    builder = fashion_mnist.FashionMnistDebian(data_dir=str(tmp_path / "tfds"))
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(
            manual_dir=small_fmnist["manual_dir"], num_shards=3
        )
    )
    source = input_pipeline._RecordSource(builder, split, decoded_cache=True)
    assert source.num_files == 3 and source.cache["image"].dtype == np.uint8
    batches = {}
    for cached in (False, True):
        data = fmnist_data(small_fmnist, decoded_cache=cached, train_split=split, input_shards=2)
        kwargs = dict(seed=5, local_batch=24)  # two shards of 12
        batches[cached] = take(input_pipeline.train_batches(builder, data, **kwargs), 30)
        resumed = take(input_pipeline.train_batches(builder, data, start_step=13, **kwargs), 5)
        for a, b in zip(batches[cached][13:], resumed, strict=False):
            np.testing.assert_array_equal(a["images"], b["images"])
    for a, b in zip(batches[False], batches[True], strict=True):
        np.testing.assert_array_equal(a["images"], b["images"])
        np.testing.assert_array_equal(a["labels"], b["labels"])


def test_the_decoded_cache_of_a_mocked_dataset_holds_its_examples(tmp_path):
    """Without files (tfds mocks) the cache decodes `as_dataset`'s examples, in its order;
    images of varying shape (ImageNet's) are a clear error."""
    data = small_fmnist_config({"manual_dir": "", "data_dir": str(tmp_path)}).data
    data.unlock()
    data.name = "mnist"
    with tfds.testing.mock_data(num_examples=6, data_dir=str(tmp_path)):
        builder = input_pipeline.get_builder(data)
        plain = input_pipeline._RecordSource(builder, "train")
        source = input_pipeline._RecordSource(builder, "train", decoded_cache=True)
        indices = [int(i) for i in tfds.as_numpy(source.records(0))]
        expected = [plain.parse(r)["image"].numpy() for r in plain.records(0)]
        images = [source.parse(i)["image"].numpy() for i in indices]
        imagenet = input_pipeline.get_builder(imagenet_config.get_config("resnetrs50_i160").data)
        with pytest.raises(ValueError, match="needs images of one shape"):
            input_pipeline._RecordSource(imagenet, "train", decoded_cache=True)
    assert indices == list(range(6))
    for a, b in zip(expected, images, strict=True):
        np.testing.assert_array_equal(a, b)


def test_train_batches_stop_after_the_epoch_of_end_step(small_fmnist):
    data = fmnist_data(small_fmnist, randaugment_magnitude=0.0)
    builder = input_pipeline.get_builder(data)
    kwargs = dict(seed=3, local_batch=32)  # 8 steps per epoch
    endless = take(input_pipeline.train_batches(builder, data, **kwargs), 10)
    bounded = list(input_pipeline.train_batches(builder, data, end_step=10, **kwargs))
    assert len(bounded) == 16  # epochs 0 and 1, nothing prepared beyond
    for a, b in zip(endless, bounded, strict=False):
        np.testing.assert_array_equal(a["images"], b["images"])
    resumed = list(input_pipeline.train_batches(builder, data, start_step=5, end_step=8, **kwargs))
    assert len(resumed) == 3


def test_train_batches_are_normalised(small_fmnist):
    data = fmnist_data(small_fmnist)
    builder = input_pipeline.get_builder(data)
    batch = next(input_pipeline.train_batches(builder, data, seed=0, local_batch=64))
    low, high = [(v - data.mean[0]) / data.std[0] for v in (0.0, 255.0)]
    assert batch["images"].min() >= low - 1e-4 and batch["images"].max() <= high + 1e-4


def test_cutout_blanks_one_square_and_changes_nothing_else(small_fmnist):
    data = fmnist_data(small_fmnist)
    builder = input_pipeline.get_builder(data)
    plain = next(input_pipeline.train_batches(builder, data, seed=0, local_batch=64))["images"]
    data = fmnist_data(small_fmnist, cutout_pad=4)
    cut = next(input_pipeline.train_batches(builder, data, seed=0, local_batch=64))["images"]
    again = next(input_pipeline.train_batches(builder, data, seed=0, local_batch=64))["images"]
    np.testing.assert_array_equal(cut, again)  # deterministic under the seed
    changed = (cut != plain)[..., 0]  # [b, H, W]; crops, flips and the rest are unchanged
    assert changed.any(axis=(1, 2)).mean() > 0.9
    for cut_image, differs in zip(cut[..., 0], changed, strict=True):
        np.testing.assert_array_equal(cut_image[differs], 0.0)  # the mean, once normalised
        if differs.any():
            ys, xs = np.nonzero(differs)
            assert ys.max() - ys.min() < 8 and xs.max() - xs.min() < 8  # one 2 * pad square


@pytest.mark.parametrize("process_count", [1, 3])
def test_eval_batches_pad_and_cover_the_split_once(small_fmnist, process_count):
    data = fmnist_data(small_fmnist)
    builder = input_pipeline.get_builder(data)
    per_process = [
        list(
            input_pipeline.eval_batches(
                builder, data, local_batch=16, process_index=i, process_count=process_count
            )
        )
        for i in range(process_count)
    ]
    assert len({len(batches) for batches in per_process}) == 1  # every host steps together
    total = sum(b["mask"].sum() for batches in per_process for b in batches)
    assert total == 100
    last = per_process[0][-1]
    assert last["images"].shape == (16, 28, 28, 1)
    assert np.all(last["images"][last["mask"] == 0] == 0)


@pytest.mark.slow
@pytest.mark.parametrize("preset, size", [("resnetrs50_i160", 160), ("resnetrs152_i224", 224)])
def test_imagenet_pipeline_on_mock_data(tmp_path, preset, size):
    data = imagenet_config.get_config(preset).data
    data.unlock()
    data.train_examples, data.eval_examples = 8, 8  # mock data has no split metadata
    with tfds.testing.mock_data(num_examples=8, data_dir=str(tmp_path)):
        builder = input_pipeline.get_builder(data)
        batch = next(input_pipeline.train_batches(builder, data, seed=0, local_batch=4))
        evals = next(input_pipeline.eval_batches(builder, data, local_batch=4))
    assert batch["images"].shape == (4, size, size, 3) and batch["images"].dtype == np.float32
    assert np.all((batch["labels"] >= 0) & (batch["labels"] < 1000))
    assert evals["images"].shape == (4, size, size, 3)
    assert np.isfinite(batch["images"]).all() and batch["images"].std() > 0.1


def test_both_record_sources_resume_exactly(tmp_path, small_fmnist):
    """TFRecord files are read directly; a mocked dataset (no files) goes through as_dataset."""
    fmnist = fmnist_data(small_fmnist)
    fmnist_builder = input_pipeline.get_builder(fmnist)
    assert input_pipeline._RecordSource(fmnist_builder, "train").files is not None
    data = imagenet_config.get_config("resnetrs50_i160").data
    data.unlock()
    data.image_size, data.train_examples = 64, 8
    kwargs = dict(seed=1, local_batch=4)  # 2 steps per epoch
    with tfds.testing.mock_data(num_examples=8, data_dir=str(tmp_path)):
        builder = input_pipeline.get_builder(data)
        assert input_pipeline._RecordSource(builder, "train").files is None
        full = take(input_pipeline.train_batches(builder, data, **kwargs), 4)
        resumed = take(input_pipeline.train_batches(builder, data, start_step=1, **kwargs), 3)
    for a, b in zip(full[1:], resumed, strict=True):
        np.testing.assert_array_equal(a["images"], b["images"])
        np.testing.assert_array_equal(a["labels"], b["labels"])
    epochs = [np.concatenate([b["labels"] for b in full[i : i + 2]]) for i in (0, 2)]
    assert sorted(epochs[0]) == sorted(epochs[1]) and not np.array_equal(*epochs)
