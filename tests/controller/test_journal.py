"""The decision journal: atomic, durable, 0600, and refuses to guess from a damaged file."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from coserver.controller.journal import Journal, JournalCorrupt, JournalEntry, JournalError
from coserver.controller.roles import Role
from coserver.controller.statemachine import FtState


def entry(epoch: int = 3, **kw) -> JournalEntry:
    base = dict(ftserver="ft1", node="cs1", role=Role.PRIMARY, epoch=epoch, state=FtState.PROTECTED,
                checkpoints=120, qemu_name="primary", qemu_workdir="/run/coserver/ft1", reason="protected")
    base.update(kw)
    return JournalEntry(**base)


def test_missing_journal_is_a_fresh_start(tmp_path: Path):
    assert Journal(tmp_path / "none" / "ft1.json").load() is None


def test_round_trip_mode_0600_and_replace(tmp_path: Path):
    j = Journal(tmp_path / "state" / "ft1.json")
    j.save(entry(3))
    assert stat.S_IMODE(os.stat(j.path).st_mode) == 0o600
    got = j.load()
    assert got == entry(3, at=got.at) and isinstance(got.role, Role) and isinstance(got.state, FtState)
    j.save(entry(4, role=Role.SIMPLEX, state=FtState.SIMPLEX, qemu_name=None))
    got = j.load()
    assert (got.epoch, got.role, got.state, got.qemu_name) == (4, Role.SIMPLEX, FtState.SIMPLEX, None)
    assert sorted(p.name for p in j.path.parent.iterdir()) == ["ft1.json"]  # no temp files left
    j.remove()
    assert j.load() is None


def test_a_crash_before_the_rename_leaves_the_previous_version(tmp_path: Path):
    j = Journal(tmp_path / "ft1.json")
    j.save(entry(3))
    # What a writer killed mid-write leaves: a torn temp file next to the journal.
    torn = tmp_path / f".ft1.json.{os.getpid() + 1}.tmp"
    torn.write_text('{"version": 1, "record": {"ftserver": "ft1", "epo')
    assert j.load().epoch == 3
    j.save(entry(4))
    assert j.load().epoch == 4


def test_writers_killed_at_random_instants_never_leave_a_torn_journal(tmp_path: Path):
    """A real writer process, SIGKILLed while saving in a tight loop: every load sees a whole entry."""
    path = tmp_path / "ft1.json"
    writer = (
        "import sys\n"
        "from coserver.controller.journal import Journal, JournalEntry\n"
        "from coserver.controller.roles import Role\n"
        "from coserver.controller.statemachine import FtState\n"
        "j = Journal(sys.argv[1]); i = int(sys.argv[2])\n"
        "def save():\n"
        "    global i\n"
        "    i += 1\n"
        "    j.save(JournalEntry('ft1', 'cs1', Role.PRIMARY, i, FtState.PROTECTED, checkpoints=i,"
        " reason='x' * (i % 4000)))\n"
        "save()\n"
        "print('go', flush=True)  # one save done: a slow disk cannot make the round write nothing\n"
        "while True:\n"
        "    save()\n"
    )
    last = 0
    for round_ in range(5):
        proc = subprocess.Popen([sys.executable, "-c", writer, str(path), str(last)],
                                stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout.readline().strip() == "go"
            time.sleep(0.15 + 0.05 * round_)
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
        got = Journal(path).load()
        assert got is not None and got.epoch > last and got.checkpoints == got.epoch
        assert got.reason == "x" * (got.epoch % 4000)
        last = got.epoch
    assert last > 10  # the writer really wrote, many times


@pytest.mark.parametrize("damage,why", [
    (lambda t: t[: len(t) // 2], "not JSON"),
    (lambda t: t.replace('"epoch": 3', '"epoch": 9'), "checksum mismatch"),
    (lambda t: json.dumps({"hello": 1}), "not a coserver journal"),
    (lambda t: t.replace('"version": 1', '"version": 2'), "version 2"),
    (lambda t: "", "not JSON"),
])
def test_a_corrupt_journal_is_refused_in_one_line_naming_the_file(tmp_path: Path, damage, why):
    j = Journal(tmp_path / "ft1.json")
    j.save(entry(3))
    j.path.write_text(damage(j.path.read_text()))
    with pytest.raises(JournalCorrupt) as ei:
        j.load()
    msg = str(ei.value)
    assert str(j.path) in msg and why in msg and "\n" not in msg


def test_a_consistent_record_with_an_unknown_role_is_refused(tmp_path: Path):
    import hashlib
    j = Journal(tmp_path / "ft1.json")
    j.save(entry(3))
    obj = json.loads(j.path.read_text())
    obj["record"]["role"] = "tertiary"
    obj["sha256"] = hashlib.sha256(json.dumps(obj["record"], sort_keys=True,
                                              separators=(",", ":")).encode()).hexdigest()
    j.path.write_text(json.dumps(obj))
    with pytest.raises(JournalCorrupt, match="tertiary"):
        j.load()


@pytest.fixture
def full_fs(tmp_path: Path):
    """A tiny tmpfs, filled up: a real ENOSPC (root only; unmounted whatever happens)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "full"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", str(mnt)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
        if os.path.ismount(mnt):
            subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(d: Path) -> None:
    with open(d / "filler", "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"x" * 4096)
        except OSError:
            pass


def test_a_save_on_a_full_disk_fails_in_one_line_and_keeps_the_last_journal(full_fs: Path):
    j = Journal(full_fs / "ft1.json")
    j.save(entry(epoch=3))
    _fill(full_fs)
    with pytest.raises(JournalError, match="cannot write: No space left on device") as err:
        j.save(entry(epoch=4, state=FtState.SIMPLEX))
    assert "\n" not in str(err.value)
    last = j.load()   # the previous version, whole
    assert last is not None and (last.epoch, last.state) == (3, FtState.PROTECTED)
    assert sorted(p.name for p in full_fs.iterdir()) == ["filler", "ft1.json"]   # no temp file left
    (full_fs / "filler").unlink()
    j.save(entry(epoch=4, state=FtState.SIMPLEX))   # room again: saves
    assert j.load().epoch == 4
