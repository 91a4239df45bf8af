"""coserver.sys.files: only regular files are read; private directories are ours alone."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from coserver.sys.files import NotRegularFileError, UnsafeDirError, open_regular, private_dir, private_dirs, sha256_file


def test_sha256_of_a_regular_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"abc")
    assert sha256_file(tmp_path / "f") == hashlib.sha256(b"abc").hexdigest()


@pytest.mark.timeout(20)
def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(NotRegularFileError) as err:
        sha256_file(fifo)
    assert err.value.strerror == "not a regular file (a FIFO)" and err.value.filename == str(fifo)
    assert isinstance(err.value, OSError)


@pytest.mark.timeout(20)
@pytest.mark.parametrize("path, kind", [("/dev/zero", "a character device"), ("/", "a directory")])
def test_devices_and_directories_are_refused(path: str, kind: str) -> None:
    with pytest.raises(NotRegularFileError, match=rf"not a regular file \({kind}\)"):
        open_regular(path)


def test_a_symlink_to_a_regular_file_is_read(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x")
    (tmp_path / "link").symlink_to(tmp_path / "f")
    with open_regular(tmp_path / "link") as f:
        assert f.read() == b"x"


def test_private_dir_is_made_0700(tmp_path: Path) -> None:
    d = private_dir(tmp_path / "new")
    assert d.is_dir() and (d.stat().st_mode & 0o777) == 0o700
    assert private_dir(d) == d  # an existing private one is fine


def test_private_dir_refuses_a_planted_symlink(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o700)
    (tmp_path / "planted").symlink_to(target)
    with pytest.raises(UnsafeDirError, match=r"planted: is a symlink, not a directory"):
        private_dir(tmp_path / "planted")
    assert list(target.iterdir()) == []


def test_private_dir_refuses_an_open_mode_and_leaves_it(tmp_path: Path) -> None:
    d = tmp_path / "open"
    d.mkdir()
    os.chmod(d, 0o755)
    with pytest.raises(UnsafeDirError, match=r"open: mode 0755 lets group or others in"):
        private_dir(d)
    assert (d.stat().st_mode & 0o777) == 0o755  # never chmod-ed


def test_private_dir_refuses_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    with pytest.raises(UnsafeDirError, match=r"f: is a regular file, not a directory"):
        private_dir(tmp_path / "f")


def test_private_dir_refuses_someone_elses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = private_dir(tmp_path / "d")
    monkeypatch.setattr(os, "geteuid", lambda: os.stat(d).st_uid + 1)
    with pytest.raises(UnsafeDirError, match=r"d: owned by uid \d+, not by us"):
        private_dir(d)


def test_private_dirs_checks_each_level_below_the_base(tmp_path: Path) -> None:
    made = private_dirs(tmp_path, tmp_path / "a" / "b")
    assert (made.stat().st_mode & 0o777) == 0o700 and ((tmp_path / "a").stat().st_mode & 0o777) == 0o700
    os.chmod(tmp_path / "a", 0o755)
    with pytest.raises(UnsafeDirError, match=r"/a: mode 0755"):
        private_dirs(tmp_path, tmp_path / "a" / "b")
