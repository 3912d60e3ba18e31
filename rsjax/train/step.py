"""Pure train and eval steps (jit them with shardings in the trainer)."""

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from rsjax.train.state import TrainState, averaged_variables, ema_decay, ema_update, ravel

Batch = dict[str, jax.Array]


def cross_entropy(logits: jax.Array, labels: jax.Array, label_smoothing: float) -> jax.Array:
    """Per-example softmax cross-entropy [B] of logits [B, K] against int labels [B], with the
    targets smoothed as (1 - s) * one_hot + s / K."""
    num_classes = logits.shape[-1]
    targets = optax.smooth_labels(jax.nn.one_hot(labels, num_classes), label_smoothing)
    return optax.softmax_cross_entropy(logits, targets)


def pseudo_targets(
    probabilities: jax.Array, *, hard: bool, temperature: float = 1.0, label_smoothing: float = 0.0
) -> jax.Array:
    """A student's targets [B, K] from teacher probabilities [B, K]: soft, p^(1/T) normalised
    (= softmax(teacher logits / T)); or hard, the one-hot argmax smoothed by `label_smoothing`."""
    if hard:
        one_hot = jax.nn.one_hot(jnp.argmax(probabilities, -1), probabilities.shape[-1])
        return optax.smooth_labels(one_hot, label_smoothing)
    scaled = jnp.power(probabilities, 1.0 / temperature)
    return scaled / jnp.sum(scaled, axis=-1, keepdims=True)


def cotrain_loss(
    labelled_logits: jax.Array,
    labels: jax.Array,
    pseudo_logits: jax.Array,
    targets: jax.Array,
    *,
    ratio: float,
    label_smoothing: float,
) -> jax.Array:
    """Noisy Student's data loss: mean CE over the labelled batch [B] (smoothed one-hot) plus
    `ratio` x mean CE over the pseudo-labelled batch [ratio x B] against `targets` [.., K], i.e.
    google-research/noisystudent's (lab_loss x B + unl_loss x ratio x B) / B."""
    labelled = jnp.mean(cross_entropy(labelled_logits, labels, label_smoothing))
    pseudo = jnp.mean(optax.softmax_cross_entropy(pseudo_logits, targets))
    return labelled + ratio * pseudo


@dataclasses.dataclass(frozen=True)
class Cotraining:
    """How a step weighs and targets its pseudo-labelled images (the config's `cotrain`)."""

    ratio: float
    hard: bool
    temperature: float
    label_smoothing: float


def train_step(
    state: TrainState,
    batch: Batch,
    *,
    model: nn.Module,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    seed: int,
    label_smoothing: float,
    ema: float,
    ema_warmup: bool,
    cotraining: Cotraining | None = None,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One SGD step on batch {"images": [B, H, W, C] (or clips [B, T, H, W, C]), "labels": [B]};
    returns (state, metrics).

    Co-training (`cotraining` set and the batch also holds "pseudo_images" [R, H, W, C] and
    "pseudo_probabilities" [R, K]): one forward pass over the B + R images (BatchNorm statistics
    over both), loss `cotrain_loss`; metrics add "pseudo_agreement", the fraction of pseudo-
    labelled images whose prediction is the teacher's. Dropout and stochastic depth draw from
    fold_in(key(seed), step): a pure function of the step, so a resumed run makes the same draws.
    """
    rng = jax.random.fold_in(jax.random.key(seed), state.step)
    pseudo = cotraining is not None and "pseudo_images" in batch
    images = batch["images"]
    if pseudo:
        images = jnp.concatenate([images, batch["pseudo_images"]])
    labelled = batch["labels"].shape[0]

    def loss_fn(params: Any) -> tuple[jax.Array, tuple[jax.Array, Any]]:
        all_logits, updates = model.apply(
            {"params": params, "batch_stats": state.batch_stats},
            images,
            train=True,
            mutable=["batch_stats"],
            rngs={"dropout": rng},
        )
        logits = all_logits[:labelled]
        if pseudo:
            targets = pseudo_targets(
                batch["pseudo_probabilities"],
                hard=cotraining.hard,
                temperature=cotraining.temperature,
                label_smoothing=cotraining.label_smoothing,
            )
            loss = cotrain_loss(
                logits,
                batch["labels"],
                all_logits[labelled:],
                targets,
                ratio=cotraining.ratio,
                label_smoothing=label_smoothing,
            )
        else:
            loss = jnp.mean(cross_entropy(logits, batch["labels"], label_smoothing))
        return loss, (all_logits, updates["batch_stats"])

    (loss, (all_logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params
    )
    logits = all_logits[:labelled]
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    decay = ema_decay(state.step, ema, ema_warmup)
    new_state = state.replace(
        step=state.step + 1,
        params=params,
        batch_stats=batch_stats,
        opt_state=opt_state,
        ema_params=ema_update(state.ema_params, params, decay),
        ema_batch_stats=ema_update(state.ema_batch_stats, batch_stats, decay),
    )
    metrics = {
        "loss": loss,
        "top1": jnp.mean(jnp.argmax(logits, -1) == batch["labels"]),
        "learning_rate": schedule(state.step),
        "grad_norm": _global_norm(grads, state.layout),
    }
    if pseudo:
        teacher = jnp.argmax(batch["pseudo_probabilities"], -1)
        metrics["pseudo_agreement"] = jnp.mean(jnp.argmax(all_logits[labelled:], -1) == teacher)
    return new_state, metrics


def _global_norm(tree: Any, layout: str) -> jax.Array:
    """L2 norm over all leaves: of the raveled vector in the "flat" layout (one fused reduction
    instead of one per leaf), leaf by leaf otherwise (keeps sharded leaves in place)."""
    return jnp.linalg.norm(ravel(tree)) if layout == "flat" else optax.tree.norm(tree)


def _classification_sums(logits: jax.Array, labels: jax.Array, mask: jax.Array) -> dict:
    top5 = jax.lax.top_k(logits, min(5, logits.shape[-1]))[1]
    return {
        "top1": jnp.sum((jnp.argmax(logits, -1) == labels) * mask),
        "top5": jnp.sum(jnp.any(top5 == labels[:, None], axis=-1) * mask),
        "loss": jnp.sum(cross_entropy(logits, labels, 0.0) * mask),
    }


def view_log_probabilities(model: nn.Module, variables: Any, views: jax.Array) -> jax.Array:
    """Multi-view evaluation: log of the mean over the views of the softmax, [B, K], for
    `views` [B, V, ...] (V views of each example, e.g. clips x crops of a video)."""
    batch, count = views.shape[:2]
    logits = model.apply(variables, views.reshape(batch * count, *views.shape[2:]), train=False)
    probabilities = jax.nn.softmax(logits.reshape(batch, count, -1), axis=-1)
    return jnp.log(jnp.mean(probabilities, axis=1))


def eval_step(
    state: TrainState, batch: Batch, *, model: nn.Module, views: bool = False
) -> dict[str, jax.Array]:
    """Sums over the valid examples of a padded batch ({"images", "labels", "mask"}) for the raw
    and the EMA weights: top1/top5 correct counts, loss, and the example count.

    With `views`, "images" holds V views of each example ([B, V, ...]) and the prediction is
    the mean of their softmax (`view_log_probabilities`; the loss is its negative log at the
    label)."""
    sums = {"count": jnp.sum(batch["mask"])}
    for prefix, variables in (
        ("", {"params": state.params, "batch_stats": state.batch_stats}),
        ("ema_", averaged_variables(state)),
    ):
        if views:
            logits = view_log_probabilities(model, variables, batch["images"])
        else:
            logits = model.apply(variables, batch["images"], train=False)
        for name, value in _classification_sums(logits, batch["labels"], batch["mask"]).items():
            sums[prefix + name] = value
    return sums
