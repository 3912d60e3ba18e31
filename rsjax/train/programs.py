"""The one train program: `build(config, mesh, image_shape)` -> model, init, train and eval steps.

The trainer, `rsjax profile`, the benchmarks and the tests all take their steps from here, so the
step that is timed is the step that trains: the same optimiser (built once), the same schedule
form (a traced `WarmupCosineSchedule` argument), EMA, label smoothing, dtype and shardings.

Durations: `durations(config, steps_per_epoch)` turns the config's epochs (or steps) into steps,
the one place that does.
"""

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import Mesh, NamedSharding

from rsjax import configs
from rsjax.configs import build_model
from rsjax.models import EfficientNet, ResNet3D
from rsjax.train import compilation, optim, sharding
from rsjax.train.state import TrainState, create_train_state
from rsjax.train.step import Cotraining, eval_step, train_step


@dataclasses.dataclass(frozen=True)
class Durations:
    """A run's length in train steps, and its warmup and evaluation interval (0: at the end)."""

    total_steps: int
    warmup_steps: int
    eval_every_steps: int
    decay_every_steps: float = 0.0  # of the exponential schedule (optim.decay_epochs in steps)


def durations(config: ml_collections.ConfigDict, steps_per_epoch: int) -> Durations:
    """Steps from the config's `num_train_steps` (when > 0) or `num_epochs` x steps_per_epoch."""
    total = (
        config.num_train_steps
        if config.num_train_steps > 0
        else max(1, round(config.num_epochs * steps_per_epoch))
    )
    every = config.eval_every_epochs
    return Durations(
        total_steps=total,
        warmup_steps=round(config.optim.warmup_epochs * steps_per_epoch),
        eval_every_steps=max(1, round(every * steps_per_epoch)) if every > 0 else 0,
        decay_every_steps=config.optim.decay_epochs * steps_per_epoch,
    )


class CompiledSteps(NamedTuple):
    """A program's steps compiled ahead: called like `Program.train_step` / `eval_step`."""

    train: jax.stages.Compiled
    eval: jax.stages.Compiled


@dataclasses.dataclass(frozen=True)
class Program:
    """A config's compiled-on-call train program on a mesh.

    init(key) -> TrainState, placed on `state_shardings` (compiled cheaply, called once).
    train_step(state, batch, schedule) -> (state, metrics): batch {"images": [B, *image_shape]
      float32, "labels": [B] int32} on `batch_sharding`, schedule from `schedule()`; the state
      is donated. Metrics: loss, top1, learning_rate, grad_norm (replicated scalars).
    eval_step(state, batch) -> sums over a padded batch ({"images": [B, *eval_shape], "mask"
      [B]}) for raw and EMA weights; clips come as views [B, V, T, H, W, C], averaged.
    """

    config: ml_collections.ConfigDict
    model: nn.Module  # a ResNetRS, an EfficientNet or a ResNet3D
    mesh: Mesh
    image_shape: tuple[int, ...]  # of one train example: [H, W, C], or a clip's [T, H, W, C]
    eval_shape: tuple[int, ...]  # of one eval example: [H', W', C], or views [V, T, H', W', C]
    abstract_state: TrainState
    state_shardings: Any
    batch_sharding: NamedSharding
    replicated: NamedSharding
    init: Callable[[jax.Array], TrainState]
    train_step: Any
    eval_step: Any

    def schedule(self, durations: Durations) -> optim.Schedule:
        """The learning-rate schedule for a run of `durations`, replicated on the mesh."""
        config = self.config.optim
        peak = optim.peak_learning_rate(config.base_learning_rate, self.config.global_batch_size)
        schedule = optim.make_schedule(
            config,
            peak,
            durations.total_steps,
            durations.warmup_steps,
            durations.decay_every_steps,
        )
        return jax.device_put(schedule, self.replicated)

    def abstract_batch(self, global_batch: int, *, eval: bool = False) -> dict:
        """ShapeDtypeStructs of a global batch on `batch_sharding`: {"images": [B, *image_shape]
        float32, "labels": [B] int32}; with `eval`, images [B, *eval_shape] and "mask": [B]
        float32; else, when the config co-trains, "pseudo_images" [R, H, W, C] and
        "pseudo_probabilities" [R, K] float32, R = `cotrain.ratio` x B."""
        example = self.eval_shape if eval else self.image_shape
        shapes = {"images": ((global_batch, *example), jnp.float32)}
        shapes["labels"] = ((global_batch,), jnp.int32)
        pseudo = configs.pseudo_batch_size(self.config, global_batch)
        if eval:
            shapes["mask"] = ((global_batch,), jnp.float32)
        elif pseudo:
            shapes["pseudo_images"] = ((pseudo, *self.image_shape), jnp.float32)
            shapes["pseudo_probabilities"] = ((pseudo, self.config.data.num_classes), jnp.float32)
        return {
            k: jax.ShapeDtypeStruct(shape, dtype, sharding=self.batch_sharding)
            for k, (shape, dtype) in shapes.items()
        }

    def compile_steps(self, schedule: optim.Schedule) -> "CompiledSteps":
        """The train step (for `schedule`'s form) and the eval step compiled now, for the
        config's global batch and eval batch. A multi-process run compiles them before its
        processes meet at a barrier, so no process waits inside a collective for a peer that is
        still compiling (CPU collectives give up after about 30 s)."""
        state = self.abstract_state_on_mesh()
        train = self.train_step.lower(
            state, self.abstract_batch(self.config.global_batch_size), schedule
        ).compile()
        evaluate = self.eval_step.lower(
            state, self.abstract_batch(self.config.eval_batch_size, eval=True)
        ).compile()
        return CompiledSteps(train=train, eval=evaluate)

    def abstract_state_on_mesh(self) -> TrainState:
        """ShapeDtypeStructs of the state with its shardings (what a restore fills in)."""
        return jax.tree.map(
            lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
            self.abstract_state,
            self.state_shardings,
        )


def build(config: ml_collections.ConfigDict, mesh: Mesh, image_shape: tuple[int, ...]) -> Program:
    """The train program of a validated `config` (see `rsjax.configs.validate`) on `mesh`, for
    images of `image_shape` (H, W, C), or clips (T, H, W, C) (`configs.example_shape`). Nothing
    compiles until a step is first called."""
    model = build_model(config)
    layout = config.state_layout
    # The schedule is an argument of the step; the optimiser is a function of it, built once.
    make_tx = functools.partial(optim.make_optimizer, config.optim, layout=layout)
    placeholder = optim.make_schedule(config.optim, 0.0, 1, 0, 1.0)
    cotrain = config.cotrain
    cotraining = (
        Cotraining(cotrain.ratio, cotrain.hard, cotrain.temperature, cotrain.label_smoothing)
        if cotrain.pseudo_labels
        else None
    )
    init_fn = functools.partial(
        create_train_state,
        model=model,
        tx=make_tx(placeholder),  # the optimiser state's structure does not depend on the rates
        image_shape=image_shape,
        layout=layout,
    )
    abstract_state = jax.eval_shape(init_fn, jax.random.key(config.seed))
    state_shardings = sharding.tree_shardings(abstract_state, mesh, fsdp=config.fsdp)
    batch_sh = sharding.batch_sharding(mesh)
    repl = sharding.replicated(mesh)

    def step_with_schedule(
        state: TrainState, batch: dict, schedule: optim.Schedule
    ) -> tuple[TrainState, dict]:
        return train_step(
            state,
            batch,
            model=model,
            tx=make_tx(schedule),
            schedule=schedule,
            seed=config.seed,
            label_smoothing=config.label_smoothing,
            ema=config.ema_decay,
            ema_warmup=config.ema_warmup,
            cotraining=cotraining,
        )

    return Program(
        config=config,
        model=model,
        mesh=mesh,
        image_shape=tuple(image_shape),
        eval_shape=configs.example_shape(config, image_shape[-1], eval=True),
        abstract_state=abstract_state,
        state_shardings=state_shardings,
        batch_sharding=batch_sh,
        replicated=repl,
        init=compilation.jit_once(init_fn, out_shardings=state_shardings),
        train_step=jax.jit(
            step_with_schedule,
            in_shardings=(state_shardings, batch_sh, repl),
            out_shardings=(state_shardings, repl),
            donate_argnums=0,
        ),
        eval_step=jax.jit(
            functools.partial(eval_step, model=model, views=config.data.num_frames > 0),
            in_shardings=(state_shardings, batch_sh),
            out_shardings=repl,
            compiler_options=compilation.forward_compiler_options(),
        ),
    )


def model_config(
    model: nn.Module,
    image_size: int,
    global_batch: int,
    channels: int = 3,
    base: str = "imagenet:resnetrs50_i160",
    **overrides: Any,
) -> ml_collections.ConfigDict:
    """The `base` config (the paper's recipe) set to train `model` at `image_size` px on batches
    of `global_batch` on one device: how benchmarks and tests get the trainer's program for a
    model they built (`build(model_config(m, ...), mesh, shape).model == m`). `overrides` are
    further dotted keys."""
    dtypes = {v: k for k, v in configs.DTYPES.items()}
    if isinstance(model, ResNet3D):
        raise ValueError("a video network's program comes from its config (model.temporal)")
    if isinstance(model, EfficientNet):
        fields = {
            "family": "efficientnet",
            "depth": 0,
            "dtype": dtypes[model.dtype],
            **{key: getattr(model, f) for key, f in configs.EFFICIENTNET_FIELDS.items()},
        }
    else:
        fields = {
            "depth": model.depth if model.stage_sizes is None else 0,
            "stage_sizes": tuple(model.stage_sizes or ()),
            "dtype": dtypes[model.dtype],
            **{name: getattr(model, name) for name in configs.MODEL_FIELDS},
        }
    config = configs.load(
        base,
        {
            **{f"model.{k}": v for k, v in fields.items()},
            "data.num_classes": model.num_classes,
            "data.channels": channels,
            "data.image_size": image_size,
            "global_batch_size": global_batch,
            "mesh.data": 1,
            "mesh.model": 1,
            **overrides,
        },
    )
    built = build_model(config)
    if built != model:
        raise ValueError(f"{model} has fields a config cannot express (built {built}).")
    return configs.validate(config)
