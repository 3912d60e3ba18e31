"""Profiles a config without training it: the `profiled` result of `--profile_only` sweeps.

The profile (`rsjax.train.latency.profile_train_step`: Appendix H latency of the trainer's own
step with batch halving, compiled memory) and the model's params and FLOPs go into the same
result.json a training run writes, so a Pareto plot's latency axis exists before any training.
"""

import os

import jax
import ml_collections
from etils import epath

from rsjax import configs, paper_tables
from rsjax.results import RunRecord
from rsjax.train import latency, sharding, trainer


def profile_run(
    config: ml_collections.ConfigDict,
    workdir: str | os.PathLike | None = None,
    *,
    batch_per_device: int = paper_tables.PROFILE_BATCH_PER_DEVICE,
    steps: int = 10,
    warmup: int = 2,
    log=print,
) -> dict:
    """Returns (and, with `workdir`, writes) a result record with status "profiled"."""
    configs.validate(config)
    config = trainer.resolve_state_layout(config)
    model = configs.build_model(config)
    mesh = sharding.config_mesh(config, check_batches=False)  # the profile picks its batch
    header = trainer.record_header(config, model, config.data.channels)
    enabled = workdir is not None and jax.process_index() == 0
    path = trainer.prepare_workdir(workdir) if enabled else epath.Path(".")
    run = RunRecord.start(path, header, enabled)
    try:
        profile = latency.profile_train_step(
            config,
            mesh,
            batch_per_device=batch_per_device,
            steps=steps,
            warmup=warmup,
            log=log,
        )
    except BaseException as error:
        run.fail(error)
        raise
    run.profiled(profile)
    return run.record
