"""Training: optimiser and schedule, train state with EMA, the one train program, checkpoints,
the loop, and profiling.

`train_and_evaluate(config, workdir)` is imported lazily so that `import rsjax.train` stays cheap
(the input pipeline pulls in TensorFlow). Profile a config with
`rsjax.train.profile_run.profile_run`.
"""


def train_and_evaluate(config, workdir):
    from rsjax.train.trainer import train_and_evaluate as _impl

    return _impl(config, workdir)


train_and_evaluate.__doc__ = "See `rsjax.train.trainer.train_and_evaluate`."
