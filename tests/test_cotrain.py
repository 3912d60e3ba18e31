"""Noisy-Student co-training: the pseudo-labelled stream's order (a pure function of seed and
step, independent of the process count, resumable mid-epoch), the trainer's co-training runs,
and bad input refused before anything compiles."""

import numpy as np
import pytest

from rsjax.configs import fashion_mnist as fmnist_config
from rsjax.data import pseudo_stream
from rsjax.results import read_result
from rsjax.train import pseudo_labels, trainer
from tests.test_train import tiny_config

N, K = 60, 4


def synthetic_stream(copies=None, global_batch=8) -> pseudo_stream.PseudoStream:
    """N random 8x8 images; row i of the probabilities encodes i (`indices_of` reads it back)."""
    rng = np.random.default_rng(0)
    probabilities = np.zeros((N, K), np.float32)
    probabilities[:, 0] = np.arange(N) / 1000
    probabilities[:, 1] = 1 - probabilities[:, 0]
    copies = np.ones(N, np.int64) if copies is None else copies
    return pseudo_stream.PseudoStream(
        images=rng.integers(0, 256, (N, 8, 8, 1), dtype=np.uint8),
        probabilities=probabilities,
        positions=np.repeat(np.arange(N), copies),
        global_batch=global_batch,
    )


def indices_of(batch) -> np.ndarray:
    return np.rint(batch["pseudo_probabilities"][:, 0] * 1000).astype(int)


def stream_data(augment=True):
    c = fmnist_config.get_config("tiny")
    c.unlock()
    c.data.image_size = 8
    c.data.randaugment_magnitude = 5.0 if augment else 0.0
    return c.data


def batches(stream, data, steps, **kwargs):
    ds = pseudo_stream.pseudo_dataset(stream, data, seed=3, **kwargs)
    return list(ds.take(steps).as_numpy_iterator())


def test_a_pseudo_epoch_is_a_permutation_of_the_students_copies():
    copies = np.zeros(N, np.int64)
    copies[:20], copies[20:40] = 1, 2  # 20 left out, 20 twice: 60 positions, 7 steps of 8
    stream = synthetic_stream(copies)
    assert stream.steps_per_epoch == 7
    first, second = (
        np.concatenate([indices_of(b) for b in batches(stream, stream_data(), 14)[i::2]])
        for i in (0, 1)
    )
    seen = np.concatenate([indices_of(b) for b in batches(stream, stream_data(), 7)])
    counts = np.bincount(seen, minlength=N)
    assert counts[40:].sum() == 0 and counts[:40].sum() == 56  # 4 of the 60 dropped
    assert counts.max() <= 2 and (counts[:20] <= 1).all()
    assert not np.array_equal(first, second)  # epochs are shuffled anew


def test_the_stream_resumes_mid_epoch_and_does_not_depend_on_the_process_count():
    stream, data = synthetic_stream(), stream_data()
    straight = batches(stream, data, 12)  # 7 steps an epoch: crosses an epoch boundary
    resumed = batches(stream, data, 7, start_step=5)
    for a, b in zip(straight[5:], resumed, strict=True):
        np.testing.assert_array_equal(a["pseudo_images"], b["pseudo_images"])
        np.testing.assert_array_equal(a["pseudo_probabilities"], b["pseudo_probabilities"])
    halves = [batches(stream, data, 12, process_index=p, process_count=2) for p in (0, 1)]
    for whole, first, second in zip(straight, *halves, strict=True):
        for key in whole:
            np.testing.assert_array_equal(whole[key], np.concatenate([first[key], second[key]]))
    other_seed = list(
        pseudo_stream.pseudo_dataset(stream, data, seed=4).take(1).as_numpy_iterator()
    )
    assert not np.array_equal(indices_of(other_seed[0]), indices_of(straight[0]))


def test_the_student_sees_augmented_images():
    stream = synthetic_stream()
    plain, noisy = (batches(stream, stream_data(augment), 1)[0] for augment in (False, True))
    np.testing.assert_array_equal(indices_of(plain), indices_of(noisy))
    assert not np.allclose(plain["pseudo_images"], noisy["pseudo_images"])


def test_a_stream_too_small_for_one_batch_is_refused():
    with pytest.raises(ValueError, match="fewer than one pseudo-labelled batch"):
        pseudo_stream.check(synthetic_stream(global_batch=64), 1)
    with pytest.raises(ValueError, match="not divisible by the 3 processes"):
        pseudo_stream.check(synthetic_stream(global_batch=8), 3)


def write_pseudo_labels(out, split="train[128:]", size=128, classes=10, labels=None, **info):
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(size, classes)) * 2
    probabilities = (np.exp(logits) / np.exp(logits).sum(1, keepdims=True)).astype(np.float32)
    info = {"dataset": "fashion_mnist", "split": split, "teacher": "synthetic", **info}
    copies = np.ones(size, np.int64)
    return pseudo_labels.save(out, pseudo_labels.PseudoLabels(probabilities, copies, labels, info))


def cotrain_config(small_fmnist, pseudo_dir, **overrides):
    return tiny_config(
        small_fmnist,
        **{
            "data.train_split": "train[:128]",
            "cotrain.pseudo_labels": str(pseudo_dir),
            "cotrain.ratio": 2.0,
            "num_train_steps": 6,
            **overrides,
        },
    )


def test_a_cotraining_run_records_its_pseudo_labels(small_fmnist, tmp_path):
    pseudo_dir = write_pseudo_labels(tmp_path / "pl")
    metrics = trainer.train_and_evaluate(cotrain_config(small_fmnist, pseudo_dir), tmp_path / "run")
    assert 0.0 <= metrics["ema_top1"] <= 1.0
    record = read_result(tmp_path / "run" / "result.json")
    assert record["status"] == "complete"
    block = record["cotrain"]
    assert block["pseudo_batch"] == 64 and block["student_examples"] == 128
    assert block["split"] == "train[128:]" and block["teacher"] == "synthetic"
    profile = record["profile"]  # images/s counts both batches: 32 labelled + 64
    assert profile["images_per_s"] == pytest.approx(96 / profile["step_s"])
    logged = (tmp_path / "run" / "metrics.jsonl").read_text()
    assert '"pseudo_agreement"' in logged


@pytest.mark.parametrize(
    "overrides, pseudo, message",
    [
        ({"cotrain.ratio": 0.0}, {}, "cotrain.ratio must be > 0"),
        ({"cotrain.ratio": 0.3}, {}, "must be a whole number of images"),
        ({"cotrain.temperature": 0.0}, {}, "cotrain.temperature must be > 0"),
        ({}, {"classes": 5}, "the teacher predicts 5 classes"),
        ({}, {"dataset": "mnist"}, "label 'mnist', but this run trains on 'fashion_mnist'"),
        (
            {},
            {"size": 100, "split": "train[:100]", "labels": np.zeros(100, int)},
            "is not the split they label",
        ),
        (
            {"cotrain.ratio": 4.0},
            {"size": 100, "split": "train[:100]"},
            "fewer than one pseudo-labelled batch",
        ),
        ({"cotrain.pseudo_labels": "/nonexistent/pl"}, {}, "no readable pseudo-labels"),
    ],
)
def test_bad_cotraining_input_fails_before_compilation(
    small_fmnist, tmp_path, monkeypatch, overrides, pseudo, message
):
    pseudo_dir = write_pseudo_labels(tmp_path / "pl", **pseudo)

    def no_compile(*args, **kwargs):
        raise AssertionError("compilation started before the input was checked")

    monkeypatch.setattr(trainer.jax, "jit", no_compile)
    with pytest.raises(ValueError, match=message):
        trainer.train_and_evaluate(
            cotrain_config(small_fmnist, pseudo_dir, **overrides), tmp_path / "run"
        )


@pytest.mark.slow
def test_sigkill_then_restart_of_a_cotraining_run_is_bit_identical(small_fmnist, tmp_path):
    """As the plain run's test: 20 steps, 4 labelled steps an epoch (128 images, batch 32) and 3
    pseudo-labelled ones (128 images, 40 a step), checkpoints every 7 steps (a resume from 7 or
    14 is inside an epoch of both streams), RandAugment on."""
    from tests.test_train import assert_sigkill_resume_is_bit_identical, config_flags

    pseudo_dir = write_pseudo_labels(tmp_path / "pl")
    flags = [
        *config_flags(small_fmnist, steps=20, checkpoint_every=7),
        "--config.data.train_split=train[:128]",
        f"--config.cotrain.pseudo_labels={pseudo_dir}",
        "--config.cotrain.ratio=1.25",
        "--config.data.randaugment_magnitude=5.0",
    ]
    assert_sigkill_resume_is_bit_identical(tmp_path, flags, 20, 7, 128 // 32)
