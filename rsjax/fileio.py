"""Atomic file writes: readers see the old file or the new one, never a partial write."""

import os
import threading

from etils import epath


def atomic_write_text(path: str | os.PathLike, text: str) -> epath.Path:
    """Writes `text` to `path` through a temporary file beside it, then a rename (replacing any
    existing file). The temporary name is unique per process and thread, so concurrent writers
    of one path never rename each other's files: the last rename wins. Local paths and any
    `etils.epath` backend (gs://) alike; returns the path written."""
    path = epath.Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path
