"""Trains (or profiles) one run of a sweep in its own process: `python -m rsjax.sweep.worker DIR`.

DIR/run.json names the run (written by the launcher). The worker takes the run's lock first and
exits with `state.LOCKED_EXIT_CODE` if another process holds it, or `state.DONE_EXIT_CODE` at
once if the run is already done; otherwise it trains with `rsjax.train.train_and_evaluate`
(which resumes from DIR's checkpoints). The run's identity (run id, sweep, name) is in its
config, so the trainer's record carries it from the start. The runs of a sweep share a
persistent XLA compilation cache in DIR/../.jax_cache ($JAX_COMPILATION_CACHE_DIR wins).
"""

import argparse
import json
import sys
import traceback

from etils import epath

from rsjax import configs, paper_tables
from rsjax.sweep import state
from rsjax.sweep.grid import build_config

CACHE_DIR = ".jax_cache"  # in the sweep's workdir


def run_one(
    run_dir: epath.Path,
    profile_only: bool = False,
    batch_per_device: int = paper_tables.PROFILE_BATCH_PER_DEVICE,
) -> int:
    """Exit code: 0 trained (or profiled, starting at `batch_per_device`), 1 failed,
    LOCKED_EXIT_CODE when another process holds the run, DONE_EXIT_CODE when it was already
    done."""
    run = state.run_from_json(json.loads((run_dir / state.RUN_FILE).read_text()))
    with state.run_lock(run_dir) as acquired:
        if not acquired:
            return state.LOCKED_EXIT_CODE
        if state.is_done(run_dir, profile_only):
            return state.DONE_EXIT_CODE
        config = configs.validate(build_config(run))
        from rsjax.train import compilation

        compilation.use_persistent_cache(run_dir.parent / CACHE_DIR)
        try:
            if profile_only:
                from rsjax.train.profile_run import profile_run

                profile_run(config, run_dir, batch_per_device=batch_per_device)
            else:
                from rsjax.train import train_and_evaluate

                train_and_evaluate(config, run_dir)
        except (
            Exception
        ):  # reported in result.json (and error.log) and on stderr; the sweep goes on
            traceback.print_exc()
            return 1
        return 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=epath.Path)
    parser.add_argument("--profile_only", action="store_true")
    parser.add_argument(
        "--batch_per_device",
        type=int,
        default=paper_tables.PROFILE_BATCH_PER_DEVICE,
        help="profile's first batch",
    )
    args = parser.parse_args(argv)
    sys.exit(run_one(args.run_dir.resolve(), args.profile_only, args.batch_per_device))


if __name__ == "__main__":
    main()
