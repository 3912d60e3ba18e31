"""The one exception type for input a user can fix: the CLI prints it as one line and exits 2."""


class UsageError(ValueError):
    """Bad input (a config, a flag, a path, a workdir), reported before any expensive work.

    A ValueError, so library callers that catch ValueError keep working.
    """


def first_line(error: BaseException) -> str:
    """The first line of an error's message (its type name when the message is empty): what a
    one-line report or a record's `error` field shows."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
