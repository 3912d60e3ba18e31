"""Noisy-Student pseudo-labels (Xie et al., 2020; the paper's Section 7.3): a teacher labels a
split, and the confident, class-balanced part of it becomes a student's extra data.

`label_split` runs a finished rsjax run (the teacher: its EMA weights, eval mode, eval
preprocessing, no augmentation) over every image of a split in stored order and keeps the
softmax probabilities [N, K]. `select` then decides how many copies of each image the student
sees, as google-research/noisystudent's `filter_unlabel.py` does: images whose top probability is
below `threshold` are dropped; with `per_class` = P, a class with more than P confident images
keeps its P most confident, and a class with n < P repeats each image P // n times, its
P % n most confident once more (deterministic here, where the reference rounds the fraction
at random). `save` writes both, with the teacher's identity, into one directory.

How the student uses them (`pseudo_targets`, `cotrain_loss` in `rsjax.train.step`): soft labels
p^(1/T) / sum(p^(1/T)) (= softmax(logits / T)), or hard labels argmax(p) with label smoothing.
A run with `cotrain.pseudo_labels` set reads them through `load_for` (checked against the run's
config before anything compiles) and `stream` (the split decoded, `rsjax.data.pseudo_stream`).
"""

import dataclasses
import json
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from etils import epath

from rsjax import configs
from rsjax.errors import UsageError
from rsjax.fileio import atomic_write_text
from rsjax.train import init_from
from rsjax.train.step import view_log_probabilities

ARRAYS_FILE = "pseudo_labels.npz"
INFO_FILE = "pseudo_labels.json"


@dataclasses.dataclass(frozen=True)
class PseudoLabels:
    """A teacher's predictions on a split and the copies of each image the student gets.

    probabilities: [N, K] float32 teacher softmax, in the split's stored order.
    copies: [N] int, 0 for images left out (`select`).
    labels: [N] int true labels where the split has them (for reporting only), else None.
    info: teacher run, split, selection settings and counts (JSON-able).
    """

    probabilities: np.ndarray
    copies: np.ndarray
    labels: np.ndarray | None
    info: dict[str, Any]

    def student_indices(self) -> np.ndarray:
        """Positions in the split the student trains on, each repeated by its copies."""
        return np.repeat(np.arange(len(self.copies)), self.copies)


def select(probabilities: np.ndarray, threshold: float = 0.0, per_class: int = 0) -> np.ndarray:
    """Copies [N] of each image: 1 if its top probability >= `threshold`, else 0; with
    `per_class` > 0, balanced to `per_class` copies per predicted class (module docstring).
    Confidence ties go to the earlier image."""
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"threshold must be in [0, 1), got {threshold}")
    if per_class < 0:
        raise ValueError(f"per_class must be >= 0 (0: no balancing), got {per_class}")
    confidence, predicted = probabilities.max(axis=1), probabilities.argmax(axis=1)
    copies = (confidence >= threshold).astype(np.int64)
    if not per_class:
        return copies
    for k in range(probabilities.shape[1]):
        kept = np.flatnonzero((predicted == k) & (copies > 0))
        order = kept[np.lexsort((kept, -confidence[kept]))]  # most confident first
        copies[kept] = 0
        if len(order) >= per_class:
            copies[order[:per_class]] = 1
        elif len(order):
            copies[order] = per_class // len(order)
            copies[order[: per_class % len(order)]] += 1
    return copies


def teacher_config(teacher: str | epath.PathLike) -> ml_collections.ConfigDict:
    """The teacher run's config (UsageError if `teacher` is not an rsjax run with checkpoints)."""
    path = epath.Path(teacher)
    if not (path / "config.json").exists() or not (path / "checkpoints").is_dir():
        raise UsageError(f"{teacher} is not an rsjax run (no config.json and checkpoints/)")
    return configs.from_saved(json.loads((path / "config.json").read_text()))


def label_split(
    teacher: str | epath.PathLike,
    split: str,
    *,
    data: ml_collections.ConfigDict | None = None,
    batch_size: int = 500,
    log=print,
) -> tuple[np.ndarray, np.ndarray | None]:
    """(probabilities [N, K], labels [N] or None): the teacher's EMA weights on every image of
    `split` of `data` (default: the teacher's own dataset), with the teacher's eval
    preprocessing (a video teacher's: the mean softmax of each clip's views). UsageError if the
    dataset's class count is not the teacher's."""
    config = teacher_config(teacher)  # before TensorFlow is imported: a bad run fails at once
    from rsjax.data import input_pipeline

    data = data or config.data
    builder = input_pipeline.get_builder(data)
    classes = builder.info.features["label"].num_classes
    if classes != config.data.num_classes:
        raise UsageError(
            f"the teacher {teacher} predicts {config.data.num_classes} classes; "
            f"{data.name} has {classes}"
        )
    model = configs.build_model(config)
    variables = init_from.run_variables(epath.Path(teacher), 0, "ema")
    if data.num_frames > 0:  # clips: the mean softmax of each video's views
        apply = jax.jit(lambda v, x: jnp.exp(view_log_probabilities(model, v, x)))
    else:
        apply = jax.jit(lambda v, x: jax.nn.softmax(model.apply(v, x, train=False)))
    probabilities, labels = [], []
    for i, batch in enumerate(
        input_pipeline.eval_batches(builder, data, local_batch=batch_size, split=split)
    ):
        valid = batch["mask"] > 0
        probabilities.append(np.asarray(apply(variables, batch["images"]))[valid])
        labels.append(batch["labels"][valid])
        if i % 20 == 0:
            log(f"[pseudo-label] {sum(len(p) for p in probabilities)} images labelled")
    return np.concatenate(probabilities), np.concatenate(labels)


def check_new_out(out: str | epath.PathLike) -> epath.Path:
    """`out` as a path; UsageError if it already holds pseudo-labels (nothing is overwritten)."""
    out = epath.Path(out)
    if (out / INFO_FILE).exists():
        raise UsageError(f"{out} already holds pseudo-labels; choose a new --out")
    return out


def save(out: str | epath.PathLike, pseudo: PseudoLabels) -> epath.Path:
    """Writes OUT/pseudo_labels.npz and OUT/pseudo_labels.json (UsageError if they exist)."""
    out = check_new_out(out)
    out.mkdir(parents=True, exist_ok=True)
    arrays = {"probabilities": pseudo.probabilities, "copies": pseudo.copies}
    if pseudo.labels is not None:
        arrays["labels"] = pseudo.labels
    with (out / ARRAYS_FILE).open("wb") as f:
        np.savez(f, **arrays)
    atomic_write_text(out / INFO_FILE, json.dumps(pseudo.info, indent=2, sort_keys=True))
    return out


def load(path: str | epath.PathLike) -> PseudoLabels:
    """Reads what `save` wrote (UsageError naming a missing or unreadable file)."""
    path = epath.Path(path)
    try:
        info = json.loads((path / INFO_FILE).read_text())
        with (path / ARRAYS_FILE).open("rb") as f, np.load(f) as arrays:
            probabilities, copies = arrays["probabilities"], arrays["copies"]
            labels = arrays["labels"] if "labels" in arrays.files else None
    except (OSError, ValueError, KeyError) as e:
        raise UsageError(f"{path}: no readable pseudo-labels ({e})") from None
    return PseudoLabels(probabilities, copies, labels, info)


def summary(probabilities: np.ndarray, copies: np.ndarray, labels: np.ndarray | None) -> dict:
    """Counts per predicted class and, where true labels exist, pseudo-label accuracy over all
    images and over the student's copies."""
    predicted = probabilities.argmax(axis=1)
    per_class = np.bincount(predicted, weights=copies, minlength=probabilities.shape[1])
    result: dict[str, Any] = {
        "images": len(copies),
        "kept_images": int((copies > 0).sum()),
        "student_examples": int(copies.sum()),
        "copies_per_class": per_class.astype(int).tolist(),
    }
    if labels is not None:
        correct = predicted == labels
        result["accuracy_all"] = float(correct.mean())
        result["accuracy_student"] = float((correct * copies).sum() / max(copies.sum(), 1))
    return result


def load_for(config: ml_collections.ConfigDict) -> PseudoLabels:
    """The pseudo-labels named by `config.cotrain.pseudo_labels`, checked against the run: the
    same dataset and class count (UsageError otherwise)."""
    path = config.cotrain.pseudo_labels
    pseudo = load(path)
    classes = pseudo.probabilities.shape[1]
    if classes != config.data.num_classes:
        raise UsageError(
            f"cotrain.pseudo_labels {path}: the teacher predicts {classes} classes; this run has "
            f"data.num_classes {config.data.num_classes}"
        )
    if pseudo.info.get("dataset") != config.data.name:
        raise UsageError(
            f"cotrain.pseudo_labels {path} label {pseudo.info.get('dataset')!r}, but this run "
            f"trains on {config.data.name!r}"
        )
    if not pseudo.copies.any():
        raise UsageError(f"cotrain.pseudo_labels {path} keep no image (lower the threshold)")
    return pseudo


def stream(config: ml_collections.ConfigDict, builder: Any, pseudo: PseudoLabels) -> Any:
    """The `rsjax.data.pseudo_stream.PseudoStream` of `pseudo`: its split decoded from the run's
    dataset `builder`. UsageError when the split's images are not the ones labelled (another
    count, or other labels where the pseudo-labels stored the true ones)."""
    from rsjax.data import input_pipeline, pseudo_stream

    split = pseudo.info["split"]
    try:
        decoded = input_pipeline.decode_split(builder, split)
    except ValueError as e:
        raise UsageError(f"cotrain.pseudo_labels: split {split!r}: {e}") from None
    if len(decoded["label"]) != len(pseudo.copies) or (
        pseudo.labels is not None and not np.array_equal(decoded["label"], pseudo.labels)
    ):
        raise UsageError(
            f"cotrain.pseudo_labels {config.cotrain.pseudo_labels}: split {split!r} of "
            f"{config.data.name} is not the split they label ({len(decoded['label'])} images, "
            f"{len(pseudo.copies)} labelled)"
        )
    result = pseudo_stream.PseudoStream(
        images=decoded["image"],
        probabilities=pseudo.probabilities.astype(np.float32),
        positions=pseudo.student_indices(),
        global_batch=configs.pseudo_batch_size(config),
    )
    try:
        pseudo_stream.check(result, jax.process_count())
    except ValueError as e:
        raise UsageError(f"cotrain.pseudo_labels: {e}") from None
    return result
