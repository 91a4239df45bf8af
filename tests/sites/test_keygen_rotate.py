"""The pair key file's two-key window: `site keygen --rotate`, the one-key format kept, bad files refused."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from coserver.site.errors import KeyFileError
from coserver.site.keygen import KeyRing, check_key, key_id, read_key, read_keys, write_key


def test_one_key_file_is_a_current_key_without_previous(tmp_path: Path) -> None:
    path = write_key(tmp_path / "pair.key")
    ring = read_keys(path)
    assert ring.previous is None and read_key(path) == ring.current and len(ring.current) == 32
    assert path.read_bytes() == ring.current.hex().encode() + b"\n"   # the format before rotation


def test_rotate_appends_a_current_key_keeps_the_previous_and_drops_the_oldest(tmp_path: Path) -> None:
    path = write_key(tmp_path / "pair.key")
    k1 = read_key(path)
    write_key(path, rotate=True)
    r2 = read_keys(path)
    assert r2.previous == k1 and r2.current != k1
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    check_key(path)
    write_key(path, rotate=True)
    r3 = read_keys(path)
    assert r3.previous == r2.current and k1 not in r3.keys() and len(path.read_bytes().splitlines()) == 2
    assert read_key(path) == r3.current                  # what the control channel and pair client use


def test_rotate_needs_a_sound_key_file(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="missing"):
        write_key(tmp_path / "none.key", rotate=True)
    path = write_key(tmp_path / "pair.key")
    path.chmod(0o644)
    with pytest.raises(KeyFileError, match="mode 0644"):
        write_key(path, rotate=True)


def test_bad_two_key_files_are_one_line(tmp_path: Path) -> None:
    k = "ab" * 32
    for name, body in (("three", f"{k}\n{'cd' * 32}\n{'ef' * 32}\n"), ("same", f"{k}\n{k}\n"),
                       ("blank", f"{k}\n\n{'cd' * 32}\n"), ("upper", f"{k}\n{'CD' * 32}\n")):
        p = tmp_path / name
        p.write_text(body)
        p.chmod(0o600)
        with pytest.raises(KeyFileError) as ei:
            read_keys(p)
        assert str(p) in str(ei.value) and "\n" not in str(ei.value)


def test_key_ids_are_short_stable_and_distinct() -> None:
    a, b = bytes(range(32)), bytes(range(1, 33))
    assert len(key_id(a)) == 8 and key_id(a) == key_id(bytes(range(32))) and key_id(a) != key_id(b)
    ring = KeyRing(current=b, previous=a)
    assert ring.keys() == [b, a] and set(ring.by_id()) == {key_id(a), key_id(b)}
    assert KeyRing.of(a) == KeyRing(a) and KeyRing.of(ring) is ring
