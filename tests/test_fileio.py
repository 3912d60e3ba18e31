"""Atomic writes (rsjax.fileio): whole files only, and concurrent writers never collide."""

import threading

from rsjax.fileio import atomic_write_text


def test_writes_replaces_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "record.json"
    assert atomic_write_text(path, "first") == path
    atomic_write_text(str(path), "second")
    assert path.read_text() == "second"
    assert [p.name for p in tmp_path.iterdir()] == ["record.json"]


def test_concurrent_writers_of_one_path_in_one_process(tmp_path):
    """Threads of one process (same PID) writing the same file: every write lands whole."""
    path = tmp_path / "sweep.json"
    texts = [f"writer {i}\n" * 200 for i in range(8)]
    errors = []

    def write_many(text):
        try:
            for _ in range(100):
                atomic_write_text(path, text)
        except Exception as e:  # collected and asserted below
            errors.append(e)

    threads = [threading.Thread(target=write_many, args=(t,)) for t in texts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert path.read_text() in texts
    assert [p.name for p in tmp_path.iterdir()] == ["sweep.json"]
