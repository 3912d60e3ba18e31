"""Training-step latency and memory as the paper measures them (Appendix H).

The train step (`rsjax.train.step.train_step`, the trainer's own, sharded over the config's mesh)
runs on random data, starting at `batch_per_device` x data-axis devices and halving the batch on
out-of-memory (RESOURCE_EXHAUSTED) until it fits; the latency is normalised back to the starting
batch (step_s x start / fitted). Memory: XLA's compiled memory analysis of the step, and the
device's own peak where it reports one (GPU/TPU).
"""

import functools
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh

from rsjax.train import compilation, optim, sharding
from rsjax.train.state import create_train_state
from rsjax.train.step import train_step

Measure = Callable[..., dict[str, Any]]


def jit_train_step(
    model: Any,
    optim_config: ml_collections.ConfigDict,
    image_shape: tuple[int, int, int],
    mesh: Mesh,
    *,
    fsdp: bool = False,
    learning_rate: float = 0.1,
    label_smoothing: float = 0.1,
    ema_decay: float = 0.9999,
    layout: str = "auto",
) -> tuple[Callable[[jax.Array], Any], Callable[[Any, dict], tuple[Any, dict]], Any]:
    """(init(key) -> state, step(state, batch) -> (state, metrics), state shardings), jitted.

    The step is the trainer's (`train_step`) at a constant learning rate, sharded over `mesh`
    like the trainer's, with the state (in `layout`, see `rsjax.train.state`) donated.
    """
    schedule = optax.constant_schedule(learning_rate)
    tx = optim.make_optimizer(optim_config, schedule, layout)
    init = functools.partial(
        create_train_state, model=model, tx=tx, image_shape=image_shape, layout=layout
    )
    abstract = jax.eval_shape(init, jax.random.key(0))
    state_shardings = sharding.tree_shardings(abstract, mesh, fsdp=fsdp)
    step = functools.partial(
        train_step,
        model=model,
        tx=tx,
        schedule=schedule,
        seed=0,
        label_smoothing=label_smoothing,
        ema=ema_decay,
        ema_warmup=True,
    )
    jitted_step = jax.jit(
        step,
        in_shardings=(state_shardings, sharding.batch_sharding(mesh)),
        out_shardings=(state_shardings, sharding.replicated(mesh)),
        donate_argnums=0,
    )
    return compilation.jit_once(init, out_shardings=state_shardings), jitted_step, state_shardings


def measure_step(
    model: Any,
    optim_config: ml_collections.ConfigDict,
    image_shape: tuple[int, int, int],
    global_batch: int,
    mesh: Mesh,
    *,
    steps: int,
    warmup: int,
    fsdp: bool = False,
    layout: str = "auto",
) -> dict[str, Any]:
    """Compiles the train step for `global_batch` and times `steps` steps after `warmup`.

    Returns {"step_s" (median, seconds), "step_s_min", "step_s_max", "compile_s",
    "compiled_peak_bytes"}. Out-of-memory surfaces as the backend's error (RESOURCE_EXHAUSTED).
    """
    init, step, _ = jit_train_step(model, optim_config, image_shape, mesh, fsdp=fsdp, layout=layout)
    rng = np.random.default_rng(0)
    host = {
        "images": rng.standard_normal((global_batch, *image_shape)).astype(np.float32),
        "labels": rng.integers(0, model.num_classes, global_batch).astype(np.int32),
    }
    batch = sharding.global_batch(host, mesh)
    state = init(jax.random.key(0))
    start = time.perf_counter()
    compiled = step.lower(state, batch).compile()
    compile_s = time.perf_counter() - start
    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        state, metrics = compiled(state, batch)
        jax.block_until_ready(metrics)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return {
        "step_s": statistics.median(times),
        "step_s_min": min(times),
        "step_s_max": max(times),
        "compile_s": compile_s,
        "compiled_peak_bytes": compiled_peak_bytes(compiled),
    }


def compiled_peak_bytes(compiled: Any) -> int | None:
    """Arguments + outputs - aliased + temporaries of a compiled computation (None if unknown)."""
    analysis = compiled.memory_analysis()
    if analysis is None:
        return None
    return (
        analysis.argument_size_in_bytes
        + analysis.output_size_in_bytes
        - analysis.alias_size_in_bytes
        + analysis.temp_size_in_bytes
    )


def device_peak_bytes() -> int | None:
    """The first device's peak allocated bytes, where the backend reports it (not on CPU)."""
    stats = jax.local_devices()[0].memory_stats() or {}
    return stats.get("peak_bytes_in_use")


def is_out_of_memory(error: BaseException) -> bool:
    return "RESOURCE_EXHAUSTED" in str(error) or "Out of memory" in str(error)


def profile_train_step(
    model: Any,
    optim_config: ml_collections.ConfigDict,
    image_shape: tuple[int, int, int],
    mesh: Mesh,
    *,
    batch_per_device: int = 128,
    steps: int = 10,
    warmup: int = 2,
    fsdp: bool = False,
    layout: str = "auto",
    measure: Measure = measure_step,
    log: Callable[[str], None] = lambda message: None,
) -> dict[str, Any]:
    """Appendix H latency: start at batch_per_device x data devices, halve on OOM, normalise.

    Returns the `profile` block of result.json: step_s (at the fitted batch), batch,
    normalized_batch, normalized_step_s, images_per_s, compile_s, peak memory, devices.
    Raises RuntimeError when not even one example per device fits.
    """
    if batch_per_device < 1 or steps < 1 or warmup < 0:
        raise ValueError("batch_per_device and steps must be >= 1, warmup >= 0.")
    data_devices = mesh.shape["data"]
    start_batch = batch = batch_per_device * data_devices
    while True:
        try:
            timing = measure(
                model,
                optim_config,
                image_shape,
                batch,
                mesh,
                steps=steps,
                warmup=warmup,
                fsdp=fsdp,
                layout=layout,
            )
            break
        except Exception as error:  # the backend's OOM type differs across platforms
            if not is_out_of_memory(error):
                raise
            if batch // 2 < data_devices:
                raise RuntimeError(
                    f"The train step does not fit even at one example per device ({batch})."
                ) from error
            log(f"batch {batch} does not fit (out of memory); trying {batch // 2}")
            batch //= 2
    normalized = timing["step_s"] * start_batch / batch
    return {
        **timing,
        "batch": batch,
        "normalized_batch": start_batch,
        "normalized_step_s": normalized,
        "images_per_s": batch / timing["step_s"],
        "device_peak_bytes": device_peak_bytes(),
        "device_kind": jax.devices()[0].device_kind,
        "num_devices": int(np.prod(list(mesh.shape.values()))),
    }
