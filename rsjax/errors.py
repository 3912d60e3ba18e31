"""The one exception type for input a user can fix: the CLI prints it as one line and exits 2."""


class UsageError(ValueError):
    """Bad input (a config, a flag, a path, a workdir), reported before any expensive work.

    A ValueError, so library callers that catch ValueError keep working.
    """
