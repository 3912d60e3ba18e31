"""The training loop: `train_and_evaluate(config, workdir) -> final metrics`.

Side effects live here only: checkpoints, metric files, progress lines and `result.json`. Every
config and workdir problem is a `UsageError` raised before the input pipeline starts or anything
compiles; from the moment the run starts, its record (`rsjax.results.RunRecord`) says how it
ended: complete, failed (any exception) or preempted (SIGTERM, after a checkpoint).
"""

import contextlib
import dataclasses
import json
import math
import os
import signal
import statistics
import time
import uuid
from collections.abc import Iterator
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import numpy as np
from absl import logging
from etils import epath

import rsjax
from rsjax import configs, malloc_tuning, profiling
from rsjax.errors import UsageError
from rsjax.models import EfficientNet, ResNet3D, abstract_variables, layouts
from rsjax.results import RunRecord, ema_is_warm, existing_result
from rsjax.train import checkpoint, distributed, init_from, programs, pseudo_labels, sharding
from rsjax.train.state import TrainState, resolve_layout

# Train steps the host may dispatch beyond the last one finished. Without a bound it runs up to a
# log interval ahead, and a preemption's checkpoint (which needs the newest state) waits for all
# of them. Two keep the device fed.
MAX_STEPS_AHEAD = 2


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite."""


def resolve_state_layout(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A copy of `config` with `state_layout` "auto" resolved for this backend, so config.json
    records the checkpoint's actual layout (a resume under another layout is then refused)."""
    resolved = config.copy_and_resolve_references()
    resolved.state_layout = resolve_layout(config.state_layout)
    if config.is_locked:
        resolved.lock()
    return resolved


def prepare_workdir(workdir: str | os.PathLike) -> epath.Path:
    """Creates the workdir (local paths made absolute, as Orbax requires), or raises UsageError
    saying why it cannot be used."""
    path = epath.Path(workdir)
    if "://" not in os.fspath(workdir):
        path = path.resolve()
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".rsjax_write_test.{uuid.uuid4().hex}"  # one per process of a run
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise UsageError(f"workdir {workdir} is not usable: {e}") from None
    return path


def versions() -> dict[str, str]:
    import flax
    import optax

    return {
        "rsjax": rsjax.__version__,
        "jax": jax.__version__,
        "flax": flax.__version__,
        "optax": optax.__version__,
    }


def model_record(
    config: ml_collections.ConfigDict, model: nn.Module, channels: int, variables: Any = None
) -> dict:
    """The `model` block of result.json: family, layout, width, resolution, params, FLOPs per
    image (an EfficientNet has a depth multiplier instead of a depth and layer count; a video
    model's FLOPs are per clip of `frames` frames)."""
    if variables is None:
        variables = abstract_variables(model, channels)
    frames = config.data.num_frames
    if isinstance(model, ResNet3D):
        shape = {
            "family": "resnet3d",
            "depth": model.depth if not config.model.stage_sizes else None,
            "layers": layouts.layer_count(model.blocks_per_stage),
            "width_multiplier": model.width_multiplier,
            "frames": frames,
        }
    elif isinstance(model, EfficientNet):
        shape = {
            "family": "efficientnet",
            "depth": None,
            "depth_multiplier": model.depth,
            "layers": None,
            "width_multiplier": model.width,
        }
    else:
        shape = {
            "family": "resnet_rs",
            "depth": model.depth if not config.model.stage_sizes else None,
            "layers": layouts.layer_count(model.blocks_per_stage),
            "width_multiplier": model.width_multiplier,
        }
    return {
        **shape,
        "stage_sizes": list(model.blocks_per_stage),
        "image_resolution": config.data.image_size,
        "params": profiling.count_params(model, variables=variables),
        "flops_per_image": (
            profiling.flops_per_clip(
                model, frames, config.data.image_size, channels, variables=variables
            )
            if frames
            else profiling.flops_per_image(
                model, config.data.image_size, channels, variables=variables
            )
        ),
    }


def record_header(
    config: ml_collections.ConfigDict, model: nn.Module, channels: int, variables: Any = None
) -> dict:
    """The fields every result.json starts with: schema, the run's identity (run_id, name,
    sweep), its config, model and versions, and empty metrics."""
    return {
        "schema": 1,
        "run_id": configs.run_id(config),
        "name": config.name,
        "sweep": config.sweep or None,
        "config": json.loads(config.to_json()),
        "model": model_record(config, model, channels, variables),
        "metrics": {},
        "versions": versions(),
    }


@dataclasses.dataclass(frozen=True)
class _Dataset:
    """The run's input: the tfds builder, its channel count, the train steps per epoch and,
    when co-training, the pseudo-labelled stream (`rsjax.data.pseudo_stream.PseudoStream`)."""

    builder: Any
    channels: int
    steps_per_epoch: int
    pseudo: Any = None


def _open_dataset(config: ml_collections.ConfigDict) -> _Dataset:
    """The config's dataset, checked against the config (UsageError on a mismatch)."""
    from rsjax.data import input_pipeline  # TensorFlow is imported only now

    try:
        builder = input_pipeline.get_builder(config.data, converter=jax.process_index() == 0)
    except (ValueError, FileNotFoundError) as e:
        raise UsageError(str(e)) from None
    info_classes = builder.info.features["label"].num_classes
    if info_classes != config.data.num_classes:
        raise UsageError(
            f"data.num_classes is {config.data.num_classes} but {config.data.name} has "
            f"{info_classes} classes"
        )
    shape = input_pipeline.media_shape(builder)
    channels = shape[-1]
    if channels != config.data.channels:
        raise UsageError(
            f"data.channels is {config.data.channels} but {config.data.name} examples have "
            f"{channels} channels"
        )
    _check_clips(config, input_pipeline.media_key(builder), shape)
    try:
        steps_per_epoch = input_pipeline.steps_per_epoch(
            builder, config.data, config.global_batch_size, jax.process_count()
        )
    except ValueError as e:
        raise UsageError(str(e)) from None
    if steps_per_epoch < 1:
        raise UsageError(f"global_batch_size {config.global_batch_size} exceeds the train split")
    return _Dataset(builder, channels, steps_per_epoch)


def _check_clips(config: ml_collections.ConfigDict, key: str, shape: tuple) -> None:
    """UsageError unless a video dataset gets a video model with clips it can cut from its
    videos, and an image dataset an image model."""
    data = config.data
    if key == "video" and data.num_frames == 0:
        raise UsageError(
            f"{data.name} holds videos, but this config trains an image model "
            f"(model.family={config.model.family}, data.num_frames=0): use a video config "
            "(model.family=resnet3d, data.num_frames > 0)"
        )
    if key == "image" and data.num_frames > 0:
        raise UsageError(
            f"data.num_frames={data.num_frames} asks for clips, but {data.name} holds images"
        )
    from rsjax.data import clips

    span = clips.clip_span(data.num_frames, data.frame_stride)
    if key == "video" and shape[0] is not None and span > shape[0]:
        raise UsageError(
            f"a clip of data.num_frames={data.num_frames} frames at data.frame_stride="
            f"{data.frame_stride} spans {span} frames, longer than {data.name}'s "
            f"{shape[0]}-frame videos"
        )


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict:
    """Trains and evaluates per `config`, resuming from `workdir`'s newest readable checkpoint.

    Returns the final metrics (top1/top5/loss for raw and EMA weights on the eval split; {} when
    preempted). `workdir/result.json` is written when the run starts and on every way it ends
    (see `rsjax.results.lifecycle`). Raises UsageError for a bad config or workdir before
    anything compiles; any other error is re-raised after the record says "failed". The
    checkpoint manager and the TensorBoard writer are closed on every way out.
    """
    configs.validate(config)
    config = resolve_state_layout(config)
    if jax.default_backend() == "cpu" and (hint := malloc_tuning.advice()):
        logging.warning(hint)
    mesh = sharding.config_mesh(config)
    workdir = prepare_workdir(workdir)
    is_main = jax.process_index() == 0
    if is_main:
        checkpoint.check_or_write_config(workdir, config)
    if not checkpoint.has_steps(workdir):  # a resumed run no longer reads its source
        init_from.check(config.init_from)
    pseudo = pseudo_labels.load_for(config) if config.cotrain.pseudo_labels else None
    data = _open_dataset(config)
    if pseudo is not None:
        data = dataclasses.replace(data, pseudo=pseudo_labels.stream(config, data.builder, pseudo))
    program = programs.build(config, mesh, configs.example_shape(config, data.channels))
    plan = programs.durations(config, data.steps_per_epoch)

    with contextlib.ExitStack() as closers:
        manager = closers.enter_context(checkpoint.create_manager(workdir, config.keep_checkpoints))
        if (manager.latest_step() or 0) >= plan.total_steps:
            done = existing_result(workdir)
            if done and done["status"] == "complete":  # a rerun of a finished run keeps its record
                if is_main:
                    print(f"already complete at step {plan.total_steps}; results in {workdir}")
                return done["metrics"]
        restored = checkpoint.restore(manager, program.abstract_state_on_mesh())
        variables = {
            "params": program.abstract_state.params,
            "batch_stats": program.abstract_state.batch_stats,
        }
        source = None  # pretrained weights, read only when the run starts from nothing
        if restored is None and config.init_from.path:
            source = init_from.source_variables(config.init_from, program.model)
            init_from.transfer(variables, source)  # a mismatch fails before any step compiles
        header = record_header(config, program.model, data.channels, variables)
        if config.init_from.path:
            header["init_from"] = init_from.source_summary(config.init_from)
        if pseudo is not None:
            header["cotrain"] = _cotrain_summary(config, pseudo)
        header["train"] = {
            "steps": plan.total_steps,
            "epochs": plan.total_steps / data.steps_per_epoch,
            "global_batch": config.global_batch_size,
            "steps_per_epoch": data.steps_per_epoch,
            "ema_warm": ema_is_warm(config.ema_decay, plan.total_steps),
        }
        header["profile"] = {
            "device_kind": jax.devices()[0].device_kind,
            "num_devices": jax.device_count(),
            "num_processes": jax.process_count(),
        }
        run = RunRecord.start(workdir, header, enabled=is_main)
        try:
            log = closers.enter_context(_MetricsLog(workdir, is_main))
            if restored is None:
                state, start_step = program.init(jax.random.key(config.seed)), 0
                if source is not None:
                    state = init_from.initial_state(state, source)
            else:
                (state, start_step) = restored
                logging.info("Resumed from checkpoint at step %d", start_step)
                if is_main:
                    print(f"resumed from step {start_step}", flush=True)
            loop = _Loop(config, program, plan, data, manager, log, is_main)
            outcome = loop.run(state, start_step)
            manager.wait_until_finished()
        except BaseException as error:
            with contextlib.suppress(Exception):  # a failed save must not hide the error
                manager.wait_until_finished()
            run.fail(error)
            raise
        if outcome.preempted:
            run.preempt(outcome.step)
            if is_main:
                print(f"preempted: checkpoint saved at step {outcome.step}", flush=True)
            return {}
        run.complete(
            metrics=outcome.metrics,
            train=outcome.train_block(),
            profile=outcome.profile_block(config),
        )
        if is_main:
            print(
                f"done: top1 {outcome.metrics.get('top1', math.nan):.4f}, ema_top1 "
                f"{outcome.metrics.get('ema_top1', math.nan):.4f}; results in "
                f"{workdir / 'result.json'}",
                flush=True,
            )
        return outcome.metrics


def _cotrain_summary(config: ml_collections.ConfigDict, pseudo: pseudo_labels.PseudoLabels) -> dict:
    """The record's `cotrain` block: where the pseudo-labels come from and what they hold."""
    summary = pseudo_labels.summary(pseudo.probabilities, pseudo.copies, pseudo.labels)
    keys = ("teacher", "teacher_run_id", "split", "threshold", "per_class")
    return {
        "pseudo_labels": str(config.cotrain.pseudo_labels),
        **{k: pseudo.info.get(k) for k in keys},
        "pseudo_batch": configs.pseudo_batch_size(config),
        **summary,
    }


def images_per_step(config: ml_collections.ConfigDict) -> int:
    """Images one train step computes on: the global batch plus, when co-training, its
    pseudo-labelled batch (what images/s counts)."""
    return config.global_batch_size + configs.pseudo_batch_size(config)


# Splits also evaluated after the last step (eval preprocessing): metric prefix -> data key.
EXTRA_EVAL_SPLITS = {"train_": "train_eval_split", "val_": "validation_split"}


def due(step: int, every_steps: int, last: bool = False) -> bool:
    """Whether a periodic action (log, eval, checkpoint) runs after `step`: every `every_steps`
    steps (0: never) and always after the last step."""
    return last or (every_steps > 0 and step % every_steps == 0)


@dataclasses.dataclass
class _Outcome:
    """How the loop ended: the step it started from and its last step, the final eval metrics,
    whether it was preempted, and the timing it measured."""

    start_step: int
    step: int
    metrics: dict[str, float]
    preempted: bool
    wall_s: float
    step_times: list[float]

    def median_step_s(self) -> float | None:
        return statistics.median(self.step_times) if self.step_times else None

    def train_block(self) -> dict:
        """What the run's `train` block adds at its end: time, core-hours, median step."""
        return {
            "wall_s": self.wall_s,
            "core_hours": self.wall_s * jax.device_count() / 3600,
            "step_s": self.median_step_s(),
            "resumed_from_step": self.start_step,
        }

    def profile_block(self, config: ml_collections.ConfigDict) -> dict:
        """What the run's `profile` block adds at its end: the measured step time."""
        step_s = self.median_step_s()
        return {
            "step_s": step_s,
            "batch": config.global_batch_size,
            # every image a step computes on: labelled and, when co-training, pseudo-labelled
            "images_per_s": images_per_step(config) / step_s if step_s else None,
        }


class _Loop:
    """The train loop of one run: steps, then after each step its due periodic actions."""

    def __init__(
        self,
        config: ml_collections.ConfigDict,
        program: programs.Program,
        plan: programs.Durations,
        data: _Dataset,
        manager: Any,
        log: "_MetricsLog",
        is_main: bool,
    ) -> None:
        self.config = config
        self.program = program
        self.plan = plan
        self.data = data
        self.manager = manager
        self.log = log
        self.progress = is_main and config.progress
        self.schedule = program.schedule(plan)
        self.steps = program.compile_steps(self.schedule)
        distributed.barrier("rsjax.trainer: steps compiled")  # every process compiled

    def run(self, state: TrainState, start_step: int) -> _Outcome:
        from rsjax.data import input_pipeline

        config, plan = self.config, self.plan
        where = dict(
            seed=config.seed,
            local_batch=config.global_batch_size // jax.process_count(),
            start_step=start_step,
            end_step=plan.total_steps,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
        )
        if self.data.pseudo is None:
            batches = input_pipeline.train_batches(self.data.builder, config.data, **where)
        else:
            from rsjax.data import pseudo_stream

            batches = pseudo_stream.cotrain_batches(
                self.data.builder, config.data, self.data.pseudo, **where
            )
        timer = _Timer(start_step)
        pending = _PendingMetrics()
        metrics: dict[str, float] = {}
        step = start_step
        with _Preemption() as preemption:
            while step < plan.total_steps:
                with timer.waiting_for_input():
                    host_batch = next(batches)
                state, step_metrics = self.steps.train(
                    state, sharding.global_batch(host_batch, self.program.mesh), self.schedule
                )
                step += 1
                pending.add(step, step_metrics)
                last = step == plan.total_steps
                if step == start_step + 1 and not last and not due(step, config.log_every_steps):
                    timer.restart_after_first_step(step, step_metrics)
                if due(step, config.log_every_steps, last):
                    self._log_train(step, pending.flush(), timer)
                if due(step, plan.eval_every_steps, last):
                    metrics = self._evaluate(state, step)
                if due(step, config.checkpoint_every_steps, last) or preemption.requested:
                    pending.flush()  # never checkpoint a state with a non-finite loss
                    with timer.checkpointing():
                        checkpoint.save(self.manager, step, state)
                if preemption.requested and not last:
                    self.manager.wait_until_finished()
                    return timer.outcome(step, metrics, preempted=True)
        if not metrics:  # resumed from the final checkpoint: nothing left to train
            metrics = self._evaluate(state, step)
        for prefix, key in EXTRA_EVAL_SPLITS.items():
            if config.data[key]:
                metrics = {**metrics, **self._evaluate(state, step, prefix)}
        return timer.outcome(step, metrics, preempted=False)

    def _log_train(self, step: int, summary: dict[str, float], timer: "_Timer") -> None:
        images_per_s = timer.end_interval(step, images_per_step(self.config))
        summary.update(images_per_s=images_per_s, **timer.take_waits())
        self.log.write(step, "train", summary)
        if self.progress:
            remaining = self.plan.total_steps - step
            eta = remaining * images_per_step(self.config) / max(images_per_s, 1e-9)
            print(
                f"step {step}/{self.plan.total_steps} "
                f"({step / self.data.steps_per_epoch:.2f} ep) | loss {summary['loss']:.4f} | "
                f"top1 {summary['top1']:.3f} | lr {summary['learning_rate']:.4f} | "
                f"{images_per_s:.0f} img/s | ETA {_format_duration(eta)}",
                flush=True,
            )

    def _evaluate(self, state: TrainState, step: int, prefix: str = "") -> dict[str, float]:
        """Mean top1/top5/loss (raw and EMA) over the eval split, or, with a prefix of
        `EXTRA_EVAL_SPLITS`, over that split (keys prefixed: "train_top1", "val_ema_top1")."""
        from rsjax.data import input_pipeline

        totals: dict[str, float] = {}
        for host_batch in input_pipeline.eval_batches(
            self.data.builder,
            self.config.data,
            local_batch=self.config.eval_batch_size // jax.process_count(),
            process_index=jax.process_index(),
            process_count=jax.process_count(),
            split=self.config.data[EXTRA_EVAL_SPLITS[prefix]] if prefix else None,
        ):
            sums = self.steps.eval(state, sharding.global_batch(host_batch, self.program.mesh))
            for k, v in jax.device_get(sums).items():
                totals[k] = totals.get(k, 0.0) + float(v)
        count = max(totals.pop("count"), 1.0)
        metrics = {k: v / count for k, v in totals.items()}
        metrics = {f"{prefix}{k}": v for k, v in metrics.items()}
        self.log.write(step, f"{prefix}eval", metrics)
        if self.progress:
            print(
                f"{prefix}eval @ {step}: top1 {metrics[prefix + 'top1']:.4f} | "
                f"ema_top1 {metrics[prefix + 'ema_top1']:.4f}",
                flush=True,
            )
        return metrics


class _PendingMetrics:
    """Metrics of dispatched steps not yet fetched; at most MAX_STEPS_AHEAD steps run ahead."""

    def __init__(self) -> None:
        self._pending: list[tuple[int, dict]] = []

    def add(self, step: int, metrics: dict) -> None:
        self._pending.append((step, metrics))
        if len(self._pending) > MAX_STEPS_AHEAD:
            # Bounded dispatch-ahead: a SIGTERM's checkpoint waits for few queued steps.
            jax.block_until_ready(self._pending[-1 - MAX_STEPS_AHEAD][1])

    def flush(self) -> dict[str, float]:
        """Means over the steps since the last flush ({} if none); raises NonFiniteLossError."""
        fetched = [(s, jax.device_get(m)) for s, m in self._pending]
        self._pending.clear()
        for s, m in fetched:
            if not np.isfinite(m["loss"]):
                raise NonFiniteLossError(f"loss is {m['loss']} at step {s}")
        if not fetched:
            return {}
        return {k: float(np.mean([m[k] for _, m in fetched])) for k in fetched[-1][1]}


class _Timer:
    """Step times per log interval (the interval holding the first step excluded), and seconds
    blocked on input and on checkpoint saves since the last log."""

    def __init__(self, start_step: int) -> None:
        self.start = time.time()
        self.start_step = start_step
        self.interval_start, self.interval_step = self.start, start_step
        self.step_times: list[float] = []
        self.waits = {"input_wait_s": 0.0, "checkpoint_s": 0.0}

    @contextlib.contextmanager
    def _adding_to(self, key: str) -> Iterator[None]:
        began = time.time()
        try:
            yield
        finally:
            self.waits[key] += time.time() - began

    def waiting_for_input(self) -> contextlib.AbstractContextManager:
        return self._adding_to("input_wait_s")

    def checkpointing(self) -> contextlib.AbstractContextManager:
        return self._adding_to("checkpoint_s")

    def restart_after_first_step(self, step: int, metrics: dict) -> None:
        """The first step is slow (buffers allocated, caches cold): time the rest from its end,
        so that every log interval (even the only one of a short run) measures steps alone."""
        jax.block_until_ready(metrics)
        self.interval_start, self.interval_step = time.time(), step

    def end_interval(self, step: int, global_batch: int) -> float:
        """Closes the log interval ending at `step`; returns its images/s."""
        now = time.time()
        seconds = max(now - self.interval_start, 1e-9)
        if self.interval_step > self.start_step:  # an interval from the resume step warms up
            self.step_times.append(seconds / (step - self.interval_step))
        images_per_s = (step - self.interval_step) * global_batch / seconds
        self.interval_start, self.interval_step = now, step
        return images_per_s

    def take_waits(self) -> dict[str, float]:
        waits, self.waits = self.waits, dict.fromkeys(self.waits, 0.0)
        return waits

    def outcome(self, step: int, metrics: dict[str, float], preempted: bool) -> _Outcome:
        return _Outcome(
            self.start_step, step, metrics, preempted, time.time() - self.start, self.step_times
        )


class _Preemption:
    """Turns SIGTERM into a flag the loop polls: save a checkpoint, then stop cleanly."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    def __enter__(self) -> "_Preemption":
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread
            self._previous = None
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


class _MetricsLog:
    """JSON lines (process 0 only) and TensorBoard events in the workdir."""

    def __init__(self, workdir: epath.Path, enabled: bool) -> None:
        self.enabled = enabled
        self.path = workdir / "metrics.jsonl"
        self._writer = None
        if enabled:
            import tensorflow as tf

            self._tf = tf
            self._writer = tf.summary.create_file_writer(os.fspath(workdir / "tensorboard"))

    def write(self, step: int, kind: str, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, "kind": kind, **values}) + "\n")
        with self._writer.as_default(step=step):
            for name, value in values.items():
                self._tf.summary.scalar(f"{kind}/{name}", value)
        self._writer.flush()

    def __enter__(self) -> "_MetricsLog":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._writer is not None:
            self._writer.close()


def _format_duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"
