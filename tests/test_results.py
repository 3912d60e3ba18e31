"""The result.json record: validation, atomic writes that replace, clear errors when corrupt."""

import pytest

from rsjax.results import read_result
from rsjax.results.schema import write_result


def record(status="complete", **extra):
    return {"schema": 1, "status": status, "config": {}, "model": {}, "metrics": {},
            "versions": {}, **extra}  # fmt: skip


def test_write_replaces_an_existing_record(tmp_path):
    write_result(tmp_path, record("running"))
    write_result(tmp_path, record("complete", metrics={"top1": 0.9}))
    assert read_result(tmp_path / "result.json")["metrics"] == {"top1": 0.9}
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]  # no temp file left


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (record(schema=2), "schema"),
        (record("exploded"), "unknown status"),
        (record("failed"), "must say why"),
        ({k: v for k, v in record().items() if k != "config"}, "config"),
    ],
)
def test_invalid_records_are_refused(tmp_path, bad, message):
    with pytest.raises(ValueError, match=message):
        write_result(tmp_path, bad)


def test_corrupt_file_is_a_clear_error(tmp_path):
    (tmp_path / "result.json").write_text('{"schema": 1, "status": ')
    with pytest.raises(ValueError, match="not valid JSON"):
        read_result(tmp_path / "result.json")
