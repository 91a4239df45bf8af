"""Bad input found by trying it (issue 13): each is one short line naming file and key, never a
traceback, a hang or a huge echoed value."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from coserver.cli.hardware import hardware
from coserver.errors import CLIP_CHARS, clip
from coserver.hardware import (
    FileDigestError,
    HostCapacity,
    ProfileNotFound,
    SchemaError,
    check_spec,
    get_profile,
    load_spec,
)
from coserver.hardware._toml import MAX_DEPTH
from coserver.hardware.profile import PROFILES_DIR, load_family

from .conftest import GOOD_SPEC

LAB = HostCapacity("lab", 2, 24576)


def _replace(old: str, new: str) -> str:
    assert old in GOOD_SPEC, old
    return GOOD_SPEC.replace(old, new, 1)


def _one_short_line(message: str, limit: int = 400) -> str:
    assert "\n" not in message and len(message) < limit, message[:500]
    return message


# -- 1. over-deep nesting ---------------------------------------------------------------------

@pytest.mark.parametrize("depth", [5000, MAX_DEPTH + 1])
def test_deeply_nested_arrays_are_one_line(write_spec, depth):
    path = write_spec(_replace('name = "journal"', 'name = "journal"\ndeep = ' + "[" * depth + "]" * depth))
    with pytest.raises(SchemaError) as err:
        load_spec(path)
    assert _one_short_line(str(err.value)) == \
        f"spec {path}: tables or arrays nested deeper than {MAX_DEPTH} levels"


def test_deeply_nested_inline_tables_are_one_line(write_spec):
    path = write_spec(_replace('name = "journal"', 'name = "journal"\ndeep = ' + "{a=" * 3000 + "1" + "}" * 3000))
    with pytest.raises(SchemaError, match="nested deeper than"):
        load_spec(path)


def test_hardware_check_of_a_deep_file_is_one_line_without_traceback(tmp_path):
    path = tmp_path / "deep.toml"
    path.write_text("a = " + "[" * 5000 + "]" * 5000 + "\n")
    result = CliRunner().invoke(hardware, ["check", str(path)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.stderr == f"coserver: error: spec {path}: tables or arrays nested deeper than {MAX_DEPTH} levels\n"


def test_a_deep_profile_file_is_one_line(tmp_path):
    path = tmp_path / "dl380.toml"
    path.write_text((PROFILES_DIR / "dl380.toml").read_text().replace(
        'family = "dl380"', 'family = "dl380"\nx = ' + "[" * 5000 + "]" * 5000, 1))
    with pytest.raises(SchemaError, match=rf"^profile {path}: tables or arrays nested deeper"):
        load_family(path)


# -- 2. a NUL byte in a path ------------------------------------------------------------------

@pytest.mark.parametrize("old, new, key", [
    ('kernel = "guest/vmlinuz"', r'kernel = "guest/vml\u0000inuz"', "boot.kernel"),
    ('initrd = "guest/initrd.img"', r'initrd = "guest/\u0000initrd.img"', "boot.initrd"),
    ('[disks.hosts.cs2]\npath = "cs2/disk0.qcow2"', '[disks.hosts.cs2]\npath = "cs2/disk0\\u0000.qcow2"',
     r"disks[0].hosts.cs2.path"),
    ('[cdrom.hosts.cs1]\npath = "cs1/install.iso"', '[cdrom.hosts.cs1]\npath = "\\u0000"',
     "cdrom.hosts.cs1.path"),
])
def test_a_nul_byte_in_a_path_names_the_key(write_spec, old, new, key):
    path = write_spec(_replace(old, new))
    with pytest.raises(SchemaError) as err:
        load_spec(path)
    message = _one_short_line(str(err.value))
    assert message.startswith(f"spec {path}: key {key}: must be a file path, got ")
    assert message.endswith("(contains a NUL character)")


def test_a_spec_path_with_a_nul_byte_is_one_line():
    with pytest.raises(SchemaError, match="contains a NUL character"):
        load_spec("/tmp/a\0b.toml")


def test_an_over_long_path_is_refused_without_echoing_it(write_spec):
    path = write_spec(_replace('kernel = "guest/vmlinuz"', f'kernel = "{"k" * 100_000}"'))
    with pytest.raises(SchemaError) as err:
        load_spec(path)
    assert _one_short_line(str(err.value)).endswith("key boot.kernel: must be at most 4095 characters, got 100000")


# -- 3. a FIFO or a device where a regular file is expected -----------------------------------

@pytest.mark.timeout(20)
def test_a_kernel_that_is_a_fifo_is_refused_without_hanging(write_spec, tmp_path):
    fifo = tmp_path / "kernel.fifo"
    os.mkfifo(fifo)
    path = write_spec(_replace('kernel = "guest/vmlinuz"', f'kernel = "{fifo}"'))
    with pytest.raises(FileDigestError) as err:
        check_spec(path, capacity=LAB)
    assert _one_short_line(str(err.value)) == \
        f"spec {path}: key boot.kernel: cannot read {fifo}: not a regular file (a FIFO)"


@pytest.mark.timeout(20)
def test_a_kernel_that_is_dev_zero_is_refused_without_hanging(write_spec):
    path = write_spec(_replace('kernel = "guest/vmlinuz"', 'kernel = "/dev/zero"'))
    with pytest.raises(FileDigestError, match=r"key boot\.kernel: cannot read /dev/zero: not a regular file "
                                              r"\(a character device\)$"):
        check_spec(path, capacity=LAB)


@pytest.mark.timeout(20)
def test_an_iso_that_is_a_directory_is_refused(write_spec, tmp_path):
    path = write_spec(_replace('[cdrom.hosts.cs1]\npath = "cs1/install.iso"', '[cdrom.hosts.cs1]\npath = "cs1"'))
    with pytest.raises(FileDigestError, match=r"key cdrom\.hosts\.cs1\.path: cannot read .*/cs1: not a regular "
                                              r"file \(a directory\)$"):
        check_spec(path, capacity=LAB)


@pytest.mark.timeout(20)
def test_a_spec_file_that_is_a_fifo_is_refused_without_hanging(tmp_path):
    fifo = tmp_path / "spec.toml"
    os.mkfifo(fifo)
    with pytest.raises(SchemaError) as err:
        load_spec(fifo)
    assert str(err.value) == f"spec {fifo}: cannot read: not a regular file (a FIFO)"


# -- 4. over-long values are clipped where echoed -----------------------------------------------

def test_clip():
    assert clip("short") == "short"
    assert clip("x" * CLIP_CHARS) == "x" * CLIP_CHARS
    assert clip("x" * 100_000) == "x" * CLIP_CHARS + "… (100000 characters)"
    assert clip("y" * 50, 10, quote=repr) == "'yyyyyyyyyy'… (50 characters)"


def test_a_huge_serial_is_not_echoed_whole(write_spec):
    path = write_spec(_replace('serial = "CZJ7300ABC"', f'serial = "{"S" * 100_000} "'))
    with pytest.raises(SchemaError) as err:
        load_spec(path)
    message = _one_short_line(str(err.value))
    assert message.endswith(f'got "{"S" * CLIP_CHARS}"… (100001 characters)'), message


@pytest.mark.parametrize("old, new", [
    ('mac = "52:54:00:c0:5e:01"', f'mac = "{"m" * 100_000}"'),
    ('uuid = "6f1c2a7e-3b9d-4c1e-9a55-0c1d2e3f4a5b"', f'uuid = "{"u" * 100_000}"'),
    ('profile = "dl380-g5"', f'profile = "{"p" * 100_000}"'),
    ('coservers = ["cs1", "cs2"]', f'coservers = ["cs1", "{"c" * 100_000}"]'),
    ('bridge = "br-lan"', f'bridge = "{"b" * 100_000}"'),
    ('address = "10.77.0.10"', f'address = "{"a" * 100_000}"'),
    ('name = "journal"', f'name = "journal"\n{"k" * 100_000} = 1'),
    ('[disks.hosts.cs1]', f'[disks.hosts.{"h" * 100_000}]\npath = "x"\n[disks.hosts.cs1]'),
])
def test_no_message_echoes_a_huge_value_or_key(write_spec, old, new):
    path = write_spec(_replace(old, new))
    with pytest.raises(SchemaError) as err:
        load_spec(path)
    assert re.search(r"… \(1000\d\d characters\)", _one_short_line(str(err.value), 600))


def test_a_toml_error_quoting_a_huge_key_is_clipped_and_keeps_where(write_spec):
    path = write_spec(GOOD_SPEC + f'\n[{"z" * 100_000}]\n[{"z" * 100_000}]\n')
    with pytest.raises(SchemaError) as err:
        load_spec(path)
    message = _one_short_line(str(err.value))
    assert message.startswith(f"spec {path}: not valid TOML: Cannot declare")
    assert message.endswith(", column 100002)"), message


def test_an_unknown_profile_name_is_clipped():
    with pytest.raises(ProfileNotFound) as err:
        get_profile("q" * 100_000)
    assert f"no hardware profile '{'q' * CLIP_CHARS}'… (100000 characters)" in _one_short_line(str(err.value), 1000)


def test_a_huge_family_name_in_a_profile_file_is_clipped(tmp_path: Path):
    path = tmp_path / "dl380.toml"
    path.write_text((PROFILES_DIR / "dl380.toml").read_text().replace(
        'family = "dl380"', f'family = "{"f" * 100_000}"', 1))
    with pytest.raises(SchemaError) as err:
        load_family(path)
    assert _one_short_line(str(err.value)).endswith("… (100000 characters)")
