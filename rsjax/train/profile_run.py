"""Profiles a config without training it: the `profiled` result of `--profile_only` sweeps.

The profile (`rsjax.train.latency.profile_train_step`: Appendix H latency with batch halving,
compiled memory) and the model's params and FLOPs go into the same result.json a training run
writes, so a Pareto plot's latency axis exists before any training.
"""

import datetime
import os

import jax
import ml_collections

from rsjax.results.schema import write_result
from rsjax.train import latency, sharding, trainer


def profile_run(
    config: ml_collections.ConfigDict,
    workdir: str | os.PathLike | None = None,
    *,
    batch_per_device: int = 128,
    steps: int = 10,
    warmup: int = 2,
    log=print,
) -> dict:
    """Returns (and, with `workdir`, writes) a result record with status "profiled"."""
    trainer.validate_config(config)
    model = trainer.build_model(config)
    mesh = sharding.make_mesh(config.mesh.data, config.mesh.model)
    image_shape = (config.data.image_size, config.data.image_size, config.data.channels)
    started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    profile = latency.profile_train_step(
        model,
        config.optim,
        image_shape,
        mesh,
        batch_per_device=batch_per_device,
        steps=steps,
        warmup=warmup,
        fsdp=config.fsdp,
        layout=config.state_layout,
        log=log,
    )
    record = {
        **trainer.record_header(config, model, config.data.channels, "profiled"),
        "profile": profile,
        "started": started,
        "finished": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    if workdir is not None and jax.process_index() == 0:
        write_result(trainer.prepare_workdir(workdir), record)
    return record
