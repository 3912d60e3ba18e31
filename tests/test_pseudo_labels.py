"""Noisy-Student pseudo-labels: selection and balancing, the student's targets and loss against
google-research/noisystudent's formula, and `rsjax pseudo-label` on a real teacher run."""

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rsjax.train import pseudo_labels
from rsjax.train.step import cotrain_loss, pseudo_targets
from tests.test_train import tiny_config


def probs(rows) -> np.ndarray:
    return np.asarray(rows, np.float32)


def test_the_threshold_drops_unconfident_images():
    p = probs([[0.9, 0.1], [0.55, 0.45], [0.2, 0.8], [0.5, 0.5]])
    assert pseudo_labels.select(p, threshold=0.6).tolist() == [1, 0, 1, 0]
    assert pseudo_labels.select(p).tolist() == [1, 1, 1, 1]
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="threshold"):
            pseudo_labels.select(p, threshold=bad)


def test_balancing_keeps_the_most_confident_of_full_classes_and_repeats_short_ones():
    # class 0: five images (confidences .9 .6 .8 .7 .95); class 1: two (.85, .65)
    p = probs([[0.9, 0.1], [0.6, 0.4], [0.8, 0.2], [0.7, 0.3], [0.95, 0.05],
               [0.15, 0.85], [0.35, 0.65]])  # fmt: skip
    copies = pseudo_labels.select(p, per_class=3)
    assert copies[:5].tolist() == [1, 0, 1, 0, 1]  # the 3 most confident of class 0
    assert copies[5:].tolist() == [2, 1]  # 3 copies over 2 images, the surer one twice
    assert pseudo_labels.select(p, per_class=7)[5:].tolist() == [4, 3]
    # ties: the earlier image first; the threshold applies before balancing
    tied = probs([[0.7, 0.3]] * 3 + [[0.4, 0.6]])
    assert pseudo_labels.select(tied, per_class=2).tolist() == [1, 1, 0, 2]
    assert pseudo_labels.select(tied, threshold=0.65, per_class=2).tolist() == [1, 1, 0, 0]
    summary = pseudo_labels.summary(p, copies, labels=np.array([0, 0, 1, 0, 0, 1, 0]))
    assert summary["copies_per_class"] == [3, 3] and summary["student_examples"] == 6
    assert summary["accuracy_all"] == pytest.approx(5 / 7)
    assert summary["accuracy_student"] == pytest.approx(4 / 6)  # images 2 and 6 are wrong
    indices = pseudo_labels.PseudoLabels(p, copies, None, {}).student_indices()
    assert indices.tolist() == [0, 2, 4, 5, 5, 6]


def reference_loss(lab_logits, labels, unl_logits, unl_targets, ratio, smoothing):
    """google-research/noisystudent main.py's data loss, written out in numpy (float64)."""

    def log_softmax(x):
        x = np.asarray(x, np.float64)
        return (
            x
            - x.max(-1, keepdims=True)
            - np.log(np.exp(x - x.max(-1, keepdims=True)).sum(-1, keepdims=True))
        )

    k = lab_logits.shape[-1]
    one_hot = np.eye(k)[labels] * (1 - smoothing) + smoothing / k
    lab_loss = np.mean(-(one_hot * log_softmax(lab_logits)).sum(-1))
    unl_loss = np.mean(-(np.asarray(unl_targets, np.float64) * log_softmax(unl_logits)).sum(-1))
    lab_bsz, unl_bsz = len(labels), len(labels) * ratio
    return (lab_loss * lab_bsz + unl_loss * unl_bsz) / lab_bsz


@pytest.mark.parametrize("hard", [False, True])
def test_the_cotraining_loss_is_the_references_formula(hard):
    rng = np.random.default_rng(0)
    lab_logits = rng.normal(size=(8, 5)).astype(np.float32) * 3
    labels = rng.integers(0, 5, 8)
    unl_logits = rng.normal(size=(24, 5)).astype(np.float32) * 3
    teacher_logits = rng.normal(size=(24, 5)).astype(np.float32) * 2
    teacher = np.asarray(jax.nn.softmax(teacher_logits))
    targets = pseudo_targets(jnp.asarray(teacher), hard=hard, temperature=2.0,
                             label_smoothing=0.1)  # fmt: skip
    if hard:
        want_targets = np.eye(5)[teacher.argmax(-1)] * 0.9 + 0.1 / 5
    else:  # softmax(logits / T) is the reference's p^(1/T) / sum
        want_targets = np.asarray(jax.nn.softmax(teacher_logits / 2.0))
    np.testing.assert_allclose(targets, want_targets, atol=1e-6)
    got = cotrain_loss(jnp.asarray(lab_logits), jnp.asarray(labels), jnp.asarray(unl_logits),
                       targets, ratio=3, label_smoothing=0.1)  # fmt: skip
    want = reference_loss(lab_logits, labels, unl_logits, want_targets, 3, 0.1)
    assert abs(float(got) - want) < 1e-6 * max(1.0, abs(want))


@pytest.fixture(scope="module")
def teacher(small_fmnist, tmp_path_factory):
    from rsjax.train import trainer

    run_dir = tmp_path_factory.mktemp("teacher")
    trainer.train_and_evaluate(tiny_config(small_fmnist, num_train_steps=8), run_dir)
    return run_dir


def test_rsjax_pseudo_label_writes_deterministic_probabilities_and_refuses_bad_input(
    teacher, tmp_path, capsys
):
    from rsjax import cli

    argv = ["pseudo-label", "--teacher", str(teacher), "--split", "train[:100]",
            "--per_class", "12", "--batch_size", "32"]  # fmt: skip
    assert cli.main([*argv, "--out", str(tmp_path / "a")]) == 0
    first = pseudo_labels.load(tmp_path / "a")
    assert first.probabilities.shape == (100, 10) and first.labels.shape == (100,)
    np.testing.assert_allclose(first.probabilities.sum(1), 1.0, atol=1e-5)
    assert first.copies.sum() == 12 * len(set(first.probabilities.argmax(1)))
    np.testing.assert_array_equal(
        first.copies, pseudo_labels.select(first.probabilities, per_class=12)
    )
    assert first.info["split"] == "train[:100]" and first.info["per_class"] == 12
    info = json.loads((tmp_path / "a" / pseudo_labels.INFO_FILE).read_text())
    assert 0.0 <= info["accuracy_all"] <= 1.0 and info["teacher_run_id"]
    probabilities, _ = pseudo_labels.label_split(teacher, "train[:100]", batch_size=50)
    np.testing.assert_array_equal(probabilities, first.probabilities)  # deterministic teacher
    assert cli.main([*argv, "--shuffle_seed", "0", "--out", str(tmp_path / "shuffled")]) == 0
    shuffled = pseudo_labels.load(tmp_path / "shuffled")  # the same rows, moved to other images
    assert shuffled.info["shuffle_seed"] == 0 and first.info["shuffle_seed"] is None
    assert not np.array_equal(shuffled.probabilities, first.probabilities)
    np.testing.assert_array_equal(
        np.sort(shuffled.probabilities, 0), np.sort(first.probabilities, 0)
    )
    np.testing.assert_array_equal(shuffled.labels, first.labels)
    capsys.readouterr()
    five = tmp_path / "five_classes"
    shutil.copytree(teacher, five)
    config = json.loads((five / "config.json").read_text())
    config["data"]["num_classes"] = 5
    (five / "config.json").write_text(json.dumps(config))
    for bad, message in (
        (["--teacher", str(tmp_path / "nope"), "--out", str(tmp_path / "b")], "not an rsjax run"),
        ([*argv[1:], "--threshold", "1.0", "--out", str(tmp_path / "b")], "--threshold must"),
        ([*argv[1:], "--per_class", "-1", "--out", str(tmp_path / "b")], "--per_class must"),
        ([*argv[1:], "--out", str(tmp_path / "a")], "already holds pseudo-labels"),
        (["--teacher", str(five), "--out", str(tmp_path / "b")], "predicts 5 classes"),
    ):
        assert cli.main(["pseudo-label", *bad]) == 2, bad
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "b").exists()
