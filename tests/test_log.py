"""coserver.log: a log write that fails (a full disk, an I/O error) never raises into the caller.

/dev/full fails every write with ENOSPC, as a full file system does."""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from coserver import log

DEV_FULL = Path("/dev/full")


@pytest.fixture
def restore_logs() -> Iterator[None]:
    try:
        yield
    finally:
        log.configure("WARNING")   # as tests/conftest.py left it


@pytest.mark.skipif(not DEV_FULL.exists(), reason="no /dev/full")
def test_lines_to_a_full_disk_are_dropped_counted_and_alerted(restore_logs: None,
                                                              capfd: pytest.CaptureFixture[str]) -> None:
    log.configure("INFO", DEV_FULL)
    assert log.health()["dropped"] == 0 and log.alert() is None
    logger = log.get("test")
    for i in range(3):
        logger.error("test.line", i=i)   # raises nothing
    h = log.health()
    assert h["dropped"] == 3 and h["failing"]
    assert "No space left on device" in h["last_error"] and f"errno {errno.ENOSPC}" in h["last_error"]
    alert = log.alert()
    assert alert is not None and alert.startswith("log lines are being dropped (3 so far)")
    said = capfd.readouterr().err.splitlines()   # once, on stderr, where journald may still see it
    assert len([ln for ln in said if "are being dropped" in ln]) == 1


def test_a_log_that_works_again_says_how_many_lines_it_lost(tmp_path: Path) -> None:
    """The same descriptor fails (ENOSPC), then writes again (the disk was cleaned up)."""
    good = tmp_path / "log.jsonl"
    fd = os.open(DEV_FULL if DEV_FULL.exists() else "/dev/null", os.O_WRONLY)
    stream = log.SafeStream("log.jsonl", fd=fd)
    try:
        if not DEV_FULL.exists():
            pytest.skip("no /dev/full")
        stream.write('{"event": "lost"}')
        stream.write("\n")
        stream.flush()
        assert log.health()["failing"]
        ok = os.open(good, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(ok, fd)   # the disk has room again
        os.close(ok)
        stream.write('{"event": "kept"}')
        stream.write("\n")
        stream.flush()
    finally:
        stream.close()
    lines = [json.loads(line) for line in good.read_text().splitlines()]
    assert lines[0] == {"event": "kept"}
    assert lines[1]["event"] == "log.recovered" and lines[1]["dropped"] >= 1
    assert not log.health()["failing"] and log.alert() is None


def test_a_log_file_that_cannot_be_opened_falls_back_to_stderr(tmp_path: Path, restore_logs: None) -> None:
    (tmp_path / "afile").write_text("not a directory\n")
    log.configure("INFO", tmp_path / "afile" / "log.jsonl")   # no exception: a daemon must still start
    assert log.health()["dropped"] == 1 and "afile" in log.health()["last_error"]
    log.get("test").warning("test.after")   # goes to stderr
