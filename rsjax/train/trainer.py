"""The training loop: `train_and_evaluate(config, workdir) -> final metrics`.

Side effects live here only: checkpoints, metric files, progress lines and `result.json`. Every
config and workdir problem is reported before the input pipeline starts or anything compiles.
"""

import contextlib
import datetime
import functools
import json
import math
import os
import signal
import statistics
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from etils import epath

import rsjax
from rsjax import malloc_tuning, profiling
from rsjax.models import ResNetRS, abstract_variables, layouts
from rsjax.results import existing_result, write_result
from rsjax.train import checkpoint, compilation, optim, sharding
from rsjax.train.state import TrainState, create_train_state, resolve_layout
from rsjax.train.step import eval_step, train_step

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
# Train steps the host may dispatch beyond the last one finished. Without a bound it runs up to a
# log interval ahead, and a preemption's checkpoint (which needs the newest state) waited for all
# of them: 10.6-13.5 s on the Fashion-MNIST long preset. Two keep the device fed.
MAX_STEPS_AHEAD = 2


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite."""


def build_model(config: ml_collections.ConfigDict) -> ResNetRS:
    """The ResNetRS a config describes (ValueError for bad fields)."""
    m = config.model
    if m.dtype not in DTYPES:
        raise ValueError(f"model.dtype must be one of {sorted(DTYPES)}, got {m.dtype!r}.")
    return ResNetRS(
        depth=m.depth,
        stage_sizes=tuple(m.stage_sizes) or None,
        width_multiplier=m.width_multiplier,
        num_classes=config.data.num_classes,
        se_ratio=m.se_ratio,
        dropout_rate=m.dropout_rate,
        stochastic_depth_rate=m.stochastic_depth_rate,
        stem_downsample=m.stem_downsample,
        stem_stride=m.stem_stride,
        conv_impl=m.conv_impl,
        scan_blocks=m.scan_blocks,
        remat=m.remat,
        bn_momentum=m.bn_momentum,
        bn_group_size=m.bn_group_size,
        dtype=DTYPES[m.dtype],
    )


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Cheap checks of values no other layer checks (ValueError naming the key)."""
    if config.num_epochs < 0:
        raise ValueError(f"num_epochs must be >= 0, got {config.num_epochs}.")
    if config.num_train_steps <= 0 and config.num_epochs <= 0:
        raise ValueError("Set num_epochs > 0 or num_train_steps > 0.")
    for key in (
        "global_batch_size",
        "eval_batch_size",
        "log_every_steps",
        "checkpoint_every_steps",
        "keep_checkpoints",
    ):
        if config[key] <= 0:
            raise ValueError(f"{key} must be > 0, got {config[key]}.")
    if config.eval_every_epochs < 0:
        raise ValueError(f"eval_every_epochs must be >= 0, got {config.eval_every_epochs}.")
    if not 0 <= config.ema_decay < 1:
        raise ValueError(f"ema_decay must be in [0, 1), got {config.ema_decay}.")
    if not 0 <= config.label_smoothing < 1:
        raise ValueError(f"label_smoothing must be in [0, 1), got {config.label_smoothing}.")
    if config.data.image_size <= 0:
        raise ValueError(f"data.image_size must be > 0, got {config.data.image_size}.")
    if not 0 <= config.data.cutout_pad < config.data.image_size:
        raise ValueError(
            f"data.cutout_pad must be in [0, data.image_size), got {config.data.cutout_pad}."
        )


def resolve_state_layout(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A copy of `config` with `state_layout` "auto" resolved for this backend, so config.json
    records the checkpoint's actual layout (a resume under another layout is then refused)."""
    resolved = config.copy_and_resolve_references()
    resolved.state_layout = resolve_layout(config.state_layout)
    if config.is_locked:
        resolved.lock()
    return resolved


def prepare_workdir(workdir: str | os.PathLike) -> epath.Path:
    """Creates the workdir (local paths made absolute, as Orbax requires), or raises ValueError
    saying why it cannot be used."""
    path = epath.Path(workdir)
    if "://" not in os.fspath(workdir):
        path = path.resolve()
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".rsjax_write_test"
        probe.write_text("ok")
        probe.unlink()
    except (OSError, PermissionError) as e:
        raise ValueError(f"workdir {workdir} is not usable: {e}") from None
    return path


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
    config: ml_collections.ConfigDict, model: ResNetRS, channels: int, variables: Any = None
) -> dict:
    """The `model` block of result.json: layout, width, resolution, params, FLOPs per image."""
    if variables is None:
        variables = abstract_variables(model, channels)
    return {
        "depth": model.depth if not config.model.stage_sizes else None,
        "layers": layouts.layer_count(model.blocks_per_stage),
        "stage_sizes": list(model.blocks_per_stage),
        "width_multiplier": model.width_multiplier,
        "image_resolution": config.data.image_size,
        "params": profiling.count_params(model, variables=variables),
        "flops_per_image": profiling.flops_per_image(
            model, config.data.image_size, channels, variables=variables
        ),
    }


def record_header(
    config: ml_collections.ConfigDict,
    model: ResNetRS,
    channels: int,
    status: str,
    variables: Any = None,
) -> dict:
    """The fields every result.json starts with: schema, name, status, config, model, versions,
    start time, and empty metrics."""
    return {
        "schema": 1,
        "name": config.name,
        "status": status,
        "error": None,
        "config": json.loads(config.to_json()),
        "model": model_record(config, model, channels, variables),
        "metrics": {},
        "versions": versions(),
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict:
    """Trains and evaluates per `config`, resuming from `workdir`'s checkpoint if there is one.

    Returns the final metrics (top1/top5/loss for raw and EMA weights on the eval split) and
    writes `workdir/result.json` (status "complete", or "failed" with the error). The checkpoint
    manager and the TensorBoard writer are closed on every way out (pending saves finished), so a
    process can run one call after another.
    """
    with contextlib.ExitStack() as closers:
        return _train_and_evaluate(config, workdir, closers)


def _train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str | os.PathLike, closers: contextlib.ExitStack
) -> dict:
    validate_config(config)
    config = resolve_state_layout(config)
    if jax.default_backend() == "cpu" and (hint := malloc_tuning.advice()):
        logging.warning(hint)
    model = build_model(config)
    mesh = sharding.make_mesh(config.mesh.data, config.mesh.model)
    sharding.check_batch_divisible(config.global_batch_size, mesh)
    sharding.check_batch_divisible(config.eval_batch_size, mesh, "eval batch")
    workdir = prepare_workdir(workdir)
    is_main = jax.process_index() == 0
    if is_main:
        checkpoint.check_or_write_config(workdir, config)

    from rsjax.data import input_pipeline  # TensorFlow is imported only now

    builder = input_pipeline.get_builder(config.data)
    info_classes = builder.info.features["label"].num_classes
    if info_classes != config.data.num_classes:
        raise ValueError(
            f"data.num_classes is {config.data.num_classes} but {config.data.name} has "
            f"{info_classes} classes."
        )
    channels = builder.info.features["image"].shape[-1]
    if channels != config.data.channels:
        raise ValueError(
            f"data.channels is {config.data.channels} but {config.data.name} images have "
            f"{channels} channels."
        )
    image_shape = (config.data.image_size, config.data.image_size, channels)
    steps_per_epoch = input_pipeline.steps_per_epoch(builder, config.data, config.global_batch_size)
    if steps_per_epoch < 1:
        raise ValueError(f"global_batch_size {config.global_batch_size} exceeds the train split.")
    total_steps = (
        config.num_train_steps
        if config.num_train_steps > 0
        else max(1, round(config.num_epochs * steps_per_epoch))
    )
    schedule = optim.learning_rate_schedule(
        optim.peak_learning_rate(config.optim.base_learning_rate, config.global_batch_size),
        total_steps,
        round(config.optim.warmup_epochs * steps_per_epoch),
    )
    # The optimiser state's structure does not depend on the schedule: this `tx` only
    # initialises it; the step builds its own from the schedule it receives traced.
    tx = optim.make_optimizer(config.optim, schedule, config.state_layout)
    init_fn = functools.partial(
        create_train_state,
        model=model,
        tx=tx,
        image_shape=image_shape,
        layout=config.state_layout,
    )
    abstract_state = jax.eval_shape(init_fn, jax.random.key(config.seed))
    variables_shape = {"params": abstract_state.params, "batch_stats": abstract_state.batch_stats}

    record = {
        **record_header(config, model, channels, "running", variables_shape),
        "train": {
            "steps": total_steps,
            "epochs": total_steps / steps_per_epoch,
            "global_batch": config.global_batch_size,
            "steps_per_epoch": steps_per_epoch,
        },
        "profile": {"device_kind": jax.devices()[0].device_kind, "num_devices": jax.device_count()},
    }

    state_shardings = sharding.tree_shardings(abstract_state, mesh, fsdp=config.fsdp)
    manager = closers.enter_context(checkpoint.create_manager(workdir, config.keep_checkpoints))
    done = existing_result(workdir) if (manager.latest_step() or 0) >= total_steps else None
    if done and done["status"] == "complete":  # a rerun of a finished run keeps its record
        if is_main:
            print(f"already complete at step {total_steps}; results in {workdir}", flush=True)
        return done["metrics"]
    restored = checkpoint.restore(
        manager,
        jax.tree.map(
            lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
            abstract_state,
            state_shardings,
        ),
    )
    if restored is None:
        init = compilation.jit_once(init_fn, out_shardings=state_shardings)
        state = init(jax.random.key(config.seed))
        start_step = 0
    else:
        state, start_step = restored
        logging.info("Resumed from checkpoint at step %d", start_step)
        if is_main:
            print(f"resumed from step {start_step}", flush=True)

    repl = sharding.replicated(mesh)
    batch_sh = sharding.batch_sharding(mesh)
    schedule = jax.device_put(schedule, repl)

    def step_with_schedule(
        state: TrainState, batch: dict, schedule: optim.WarmupCosineSchedule
    ) -> tuple[TrainState, dict]:
        # The schedule is an argument, not a constant: one compiled step serves every run length.
        return train_step(
            state,
            batch,
            model=model,
            tx=optim.make_optimizer(config.optim, schedule, config.state_layout),
            schedule=schedule,
            seed=config.seed,
            label_smoothing=config.label_smoothing,
            ema=config.ema_decay,
            ema_warmup=config.ema_warmup,
        )

    p_train_step = jax.jit(
        step_with_schedule,
        in_shardings=(state_shardings, batch_sh, repl),
        out_shardings=(state_shardings, repl),
        donate_argnums=0,
    )
    p_eval_step = jax.jit(
        functools.partial(eval_step, model=model),
        in_shardings=(state_shardings, batch_sh),
        out_shardings=repl,
        compiler_options=compilation.forward_compiler_options(),
    )

    process_count = jax.process_count()
    local_batch = config.global_batch_size // process_count
    train_iter = input_pipeline.train_batches(
        builder,
        config.data,
        seed=config.seed,
        local_batch=local_batch,
        start_step=start_step,
        end_step=total_steps,
        process_index=jax.process_index(),
        process_count=process_count,
    )

    def evaluate(state: TrainState) -> dict[str, float]:
        totals: dict[str, float] = {}
        for host_batch in input_pipeline.eval_batches(
            builder,
            config.data,
            local_batch=config.eval_batch_size // process_count,
            process_index=jax.process_index(),
            process_count=process_count,
        ):
            sums = p_eval_step(state, sharding.global_batch(host_batch, mesh))
            for k, v in jax.device_get(sums).items():
                totals[k] = totals.get(k, 0.0) + float(v)
        count = max(totals.pop("count"), 1.0)
        return {k: v / count for k, v in totals.items()}

    log = closers.enter_context(_MetricsLog(workdir, is_main))
    eval_every = (
        max(1, round(config.eval_every_epochs * steps_per_epoch))
        if config.eval_every_epochs > 0
        else 0
    )
    step_times: list[float] = []
    pending: list[tuple[int, dict]] = []
    final_metrics: dict[str, float] = {}
    train_start = time.time()
    last_log_time, last_log_step = train_start, start_step
    input_wait_s = checkpoint_s = 0.0  # seconds blocked on input / checkpoint saves per interval

    def flush_pending() -> dict[str, float]:
        """Fetches the metrics of the steps since the last flush; raises on a non-finite loss."""
        fetched = [(s, jax.device_get(m)) for s, m in pending]
        pending.clear()
        for s, m in fetched:
            if not np.isfinite(m["loss"]):
                raise NonFiniteLossError(f"loss is {m['loss']} at step {s}")
        return {k: float(np.mean([m[k] for _, m in fetched])) for k in fetched[-1][1]}

    try:
        with _Preemption() as preemption:
            step = start_step
            while step < total_steps:
                wait_start = time.time()
                host_batch = next(train_iter)
                input_wait_s += time.time() - wait_start
                state, metrics = p_train_step(
                    state, sharding.global_batch(host_batch, mesh), schedule
                )
                step += 1
                pending.append((step, metrics))
                if len(pending) > MAX_STEPS_AHEAD:
                    # Bounded dispatch-ahead: a SIGTERM's checkpoint waits for few queued steps.
                    jax.block_until_ready(pending[-1 - MAX_STEPS_AHEAD][1])
                last = step == total_steps
                if step == start_step + 1 and not last and step % config.log_every_steps:
                    # The first step compiles: time the rest from its end, so that every log
                    # interval (even the only one of a short run) measures steps alone.
                    jax.block_until_ready(metrics)
                    last_log_time, last_log_step = time.time(), step
                if step % config.log_every_steps == 0 or last:
                    summary = flush_pending()
                    now = time.time()
                    interval_s = max(now - last_log_time, 1e-9)
                    images_per_s = (step - last_log_step) * config.global_batch_size / interval_s
                    if last_log_step > start_step:  # an interval from the resume step compiles
                        step_times.append(interval_s / (step - last_log_step))
                    last_log_time, last_log_step = now, step
                    summary["images_per_s"] = images_per_s
                    summary["input_wait_s"] = input_wait_s
                    summary["checkpoint_s"] = checkpoint_s
                    input_wait_s = checkpoint_s = 0.0
                    log.write(step, "train", summary)
                    if is_main and config.progress:
                        eta = (
                            (total_steps - step)
                            * config.global_batch_size
                            / max(images_per_s, 1e-9)
                        )
                        print(
                            f"step {step}/{total_steps} ({step / steps_per_epoch:.2f} ep) | "
                            f"loss {summary['loss']:.4f} | top1 {summary['top1']:.3f} | "
                            f"lr {summary['learning_rate']:.4f} | {images_per_s:.0f} img/s | "
                            f"ETA {_format_duration(eta)}",
                            flush=True,
                        )
                if (eval_every and step % eval_every == 0) or last:
                    final_metrics = evaluate(state)
                    log.write(step, "eval", final_metrics)
                    if is_main and config.progress:
                        print(
                            f"eval @ {step}: top1 {final_metrics['top1']:.4f} | "
                            f"ema_top1 {final_metrics['ema_top1']:.4f}",
                            flush=True,
                        )
                if step % config.checkpoint_every_steps == 0 or last or preemption.requested:
                    if pending:
                        flush_pending()  # never checkpoint a state with a non-finite loss
                    save_start = time.time()
                    checkpoint.save(manager, step, state)
                    checkpoint_s += time.time() - save_start
                if preemption.requested and not last:
                    manager.wait_until_finished()
                    record.update(
                        status="running", error="preempted (SIGTERM); resume with the same command"
                    )
                    if is_main:
                        print(f"preempted: checkpoint saved at step {step}", flush=True)
                    return {}
            if not final_metrics:  # resumed from the final checkpoint: nothing left to train
                final_metrics = evaluate(state)
                log.write(step, "eval", final_metrics)
        manager.wait_until_finished()
    except NonFiniteLossError as e:
        manager.wait_until_finished()
        record.update(
            status="failed",
            error=str(e),
            finished=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        )
        if is_main:
            write_result(workdir, record)
        raise

    wall = time.time() - train_start
    record["metrics"] = final_metrics
    record["train"].update(
        wall_s=wall,
        core_hours=wall * jax.device_count() / 3600,
        step_s=statistics.median(step_times) if step_times else None,
        resumed_from_step=start_step,
    )
    record["profile"].update(
        step_s=record["train"]["step_s"],
        batch=config.global_batch_size,
        images_per_s=(
            config.global_batch_size / record["train"]["step_s"]
            if record["train"]["step_s"]
            else None
        ),
    )
    record.update(
        status="complete",
        finished=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    )
    if is_main:
        path = write_result(workdir, record)
        print(
            f"done: top1 {final_metrics.get('top1', math.nan):.4f}, ema_top1 "
            f"{final_metrics.get('ema_top1', math.nan):.4f}; results in {path}",
            flush=True,
        )
    return final_metrics
