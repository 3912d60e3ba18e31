"""Training: optimiser and schedule, train state with EMA, sharded steps, checkpoints, the loop.

`train_and_evaluate(config, workdir)` is imported lazily so that `import rsjax.train` stays cheap
(the input pipeline pulls in TensorFlow).
"""


def train_and_evaluate(config, workdir):
    from rsjax.train.trainer import train_and_evaluate as _impl

    return _impl(config, workdir)


train_and_evaluate.__doc__ = "See `rsjax.train.trainer.train_and_evaluate`."


def profile_run(config, workdir=None, **kwargs):
    from rsjax.train.profile_run import profile_run as _impl

    return _impl(config, workdir, **kwargs)


profile_run.__doc__ = "See `rsjax.train.profile_run.profile_run`."
