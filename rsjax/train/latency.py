"""Training-step latency and memory as the paper measures them (Appendix H).

The train step (`rsjax.train.programs`: the trainer's own program for the config, sharded over
its mesh, with its schedule form, EMA, label smoothing and dtype) runs on random data, starting at
`batch_per_device` x data-axis devices and halving the batch on out-of-memory until it fits: the
backend's RESOURCE_EXHAUSTED, or, before the step runs, a compiled peak larger than the device's
memory (`device_memory_bytes`: on CPU most of the host's available RAM, where an allocation too
large would not fail but swap or be killed); the latency is normalised back to the starting batch
(step_s x start / fitted). Memory: XLA's compiled memory analysis of the step, and the
device's own peak where it reports one (GPU/TPU).
"""

import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh

from rsjax import configs, paper_tables
from rsjax.train import programs, sharding

Measure = Callable[..., dict[str, Any]]


class CompiledPeakTooLarge(MemoryError):
    """The compiled step's peak memory exceeds what the device has: out of memory, found before
    anything runs."""


def with_batch(config: ml_collections.ConfigDict, global_batch: int) -> ml_collections.ConfigDict:
    """A copy of `config` training on batches of `global_batch` (everything else as it is)."""
    config = config.copy_and_resolve_references()
    config.global_batch_size = global_batch
    return config


def measure_step(
    config: ml_collections.ConfigDict,
    global_batch: int,
    mesh: Mesh,
    *,
    steps: int,
    warmup: int,
) -> dict[str, Any]:
    """Compiles the config's train step (`rsjax.train.programs`: the trainer's) for
    `global_batch` and times `steps` steps after `warmup` on random data.

    Returns {"step_s" (median, seconds), "step_s_min", "step_s_max", "compile_s",
    "compiled_peak_bytes"}. Out-of-memory surfaces as the backend's error (RESOURCE_EXHAUSTED),
    or as CompiledPeakTooLarge when the compiled peak exceeds `device_memory_bytes()`.
    """
    config = with_batch(config, global_batch)
    image_shape = configs.example_shape(config)
    program = programs.build(config, mesh, image_shape)
    rng = np.random.default_rng(jax.process_index())
    local_batch = global_batch // jax.process_count()  # each process feeds its share
    host = {
        "images": rng.standard_normal((local_batch, *image_shape)).astype(np.float32),
        "labels": rng.integers(0, config.data.num_classes, local_batch).astype(np.int32),
    }
    if pseudo := configs.pseudo_batch_size(config) // jax.process_count():  # co-training
        logits = rng.standard_normal((pseudo, config.data.num_classes))
        host["pseudo_images"] = rng.standard_normal((pseudo, *image_shape)).astype(np.float32)
        host["pseudo_probabilities"] = (
            np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        ).astype(np.float32)
    batch = sharding.global_batch(host, mesh)
    if batch["labels"].shape[0] != global_batch:  # the processes' shares make the batch
        raise ValueError(f"timed batch {batch['labels'].shape[0]} != {global_batch}")
    schedule = program.schedule(nominal_durations(config))
    state = program.init(jax.random.key(config.seed))
    start = time.perf_counter()
    compiled = program.train_step.lower(state, batch, schedule).compile()
    compile_s = time.perf_counter() - start
    peak, available = compiled_peak_bytes(compiled), device_memory_bytes()
    if peak is not None and available is not None and peak > available:
        raise CompiledPeakTooLarge(
            f"the step at batch {global_batch} needs {peak / 2**30:.1f} GiB (compiled peak); "
            f"the device has {available / 2**30:.1f} GiB"
        )
    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        state, metrics = compiled(state, batch, schedule)
        jax.block_until_ready(metrics)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return {
        "step_s": statistics.median(times),
        "step_s_min": min(times),
        "step_s_max": max(times),
        "compile_s": compile_s,
        "compiled_peak_bytes": peak,
    }


def nominal_durations(config: ml_collections.ConfigDict) -> programs.Durations:
    """The run's durations where the split size is unknown (no dataset is read): the schedule's
    values are traced arguments, so they change no operation of the timed step."""
    return programs.durations(config, steps_per_epoch=max(config.data.train_examples, 1))


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


# A step's host memory exceeds XLA's compiled peak by the runtime's own buffers: EfficientNet-B0 at
# 224 px, batch 128, bfloat16, compiled peak 19.4 GiB, was killed with 21.2 GiB available.
CPU_MEMORY_FRACTION = 0.8


def device_memory_bytes() -> int | None:
    """Bytes one device can hold: the backend's limit where it reports one (GPU/TPU); on CPU
    `CPU_MEMORY_FRACTION` of the host's available memory (MemAvailable), shared by its devices;
    None if unknown."""
    device = jax.local_devices()[0]
    limit = (device.memory_stats() or {}).get("bytes_limit")
    if limit is not None:
        return int(limit)
    if device.platform != "cpu":
        return None
    try:
        with open("/proc/meminfo") as meminfo:
            fields = dict(line.split(":", 1) for line in meminfo)
        available = int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return int(available * CPU_MEMORY_FRACTION) // jax.local_device_count()


def is_out_of_memory(error: BaseException) -> bool:
    return (
        isinstance(error, CompiledPeakTooLarge)
        or "RESOURCE_EXHAUSTED" in str(error)
        or "Out of memory" in str(error)
    )


def profile_train_step(
    config: ml_collections.ConfigDict,
    mesh: Mesh,
    *,
    batch_per_device: int = paper_tables.PROFILE_BATCH_PER_DEVICE,
    steps: int = 10,
    warmup: int = 2,
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
            timing = measure(config, batch, mesh, steps=steps, warmup=warmup)
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
