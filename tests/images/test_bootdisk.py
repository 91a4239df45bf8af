"""The disk pieces both disk-image builders share (coserver.images.bootdisk): the MBR bytes, the
layouts, SYSLINUX's configuration, mmdebstrap's dpkg path rules and the source hashes."""

from __future__ import annotations

import struct

import pytest

from coserver.images import bootdisk
from coserver.images import debianguest as dg
from coserver.images import vagrantbox as vb
from coserver.images.errors import GuestBuildError


@pytest.mark.parametrize("layout", [dg.LAYOUT, vb.LAYOUT], ids=["debian-guest", "vagrant-box"])
def test_mbr_has_an_active_fat_partition_then_linux(layout):
    total = layout.size // bootdisk.SECTOR
    mbr = bootdisk.mbr(b"\xeb\x63" + bytes(100), 0x12345678, layout)
    assert len(mbr) == 512 and mbr[510:] == b"\x55\xaa" and mbr[:2] == b"\xeb\x63"
    assert mbr[102:440] == bytes(338)
    assert struct.unpack_from("<I", mbr, 440)[0] == 0x12345678
    parts = [struct.unpack_from("<B3sB3sII", mbr, 446 + 16 * i) for i in range(4)]
    (a1, _, t1, _, s1, n1), (a2, _, t2, _, s2, n2) = parts[:2]
    assert (a1, t1, s1, n1) == (0x80, 0x0E, layout.boot_start, layout.boot_sectors)
    assert (a2, t2, s2) == (0, 0x83, layout.boot_start + layout.boot_sectors) and s2 + n2 == total
    assert parts[2][2] == parts[3][2] == 0


def test_the_two_layouts():
    assert (dg.LAYOUT.size, dg.LAYOUT.boot_start, dg.LAYOUT.boot_sectors) == (1 << 30, 2048, 64 * 2048)
    assert dg.LAYOUT.root_start == dg.ROOT_START and dg.LAYOUT.mkfs_ext4 == dg.MKFS_EXT4
    assert vb.LAYOUT.size == 16 << 30 and vb.LAYOUT.root_sectors == (16 << 30) // 512 - 129 * 2048
    d = vb.LAYOUT.describe("u-u-i-d")
    assert [p["start"] for p in d["partitions"]] == [2048, 129 * 2048]
    assert d["partitions"][1]["uuid"] == "u-u-i-d" and d["size"] == 16 << 30


def test_mbr_code_longer_than_440_bytes_is_refused():
    with pytest.raises(GuestBuildError, match="at most 440"):
        bootdisk.mbr(bytes(441), 1, dg.LAYOUT)


@pytest.mark.parametrize("kw", [{"size": (1 << 30) + 512}, {"boot_start": 63}, {"boot_sectors": 2048},
                                {"size": 64 << 20}, {"boot_label": "TWELVE_CHARS"}, {"boot_label": ""}])
def test_bad_layouts_are_refused(kw):
    base = dict(size=1 << 30)
    with pytest.raises(GuestBuildError) as ei:
        bootdisk.Layout(**{**base, **kw}).checked()
    assert "\n" not in str(ei.value)


def test_syslinux_boots_the_one_label_at_once():
    cfg = bootdisk.syslinux_cfg("root=UUID=x rw quiet", label="debian12", comment="a box")
    lines = cfg.splitlines()
    assert lines[0] == "# a box: boot at once, messages on the serial port"
    assert "DEFAULT debian12" in lines and "TIMEOUT 0" in lines and "PROMPT 0" in lines
    assert "  APPEND root=UUID=x rw quiet" in lines and "  INITRD /initrd.img" in lines


def test_dpkg_path_rules_exclude_docs_and_keep_locale_alias():
    opts = bootdisk.dpkg_path_options()
    assert opts[0] == "--dpkgopt=path-exclude=/usr/share/doc/*"
    assert opts[-1] == "--dpkgopt=path-include=/usr/share/locale/locale.alias"
    assert "--dpkgopt=path-exclude=/usr/share/man/*" in opts


def test_derived_ids_follow_key_and_builder():
    a = bootdisk.derived_uuid("cs-vagrant", "k1", "root")
    assert a == bootdisk.derived_uuid("cs-vagrant", "k1", "root")
    assert a != bootdisk.derived_uuid("cs-debian", "k1", "root") != bootdisk.derived_uuid("cs-vagrant", "k2", "root")
    assert 0 <= bootdisk.disk_id("cs-vagrant", "k1") < 1 << 32
    assert bootdisk.disk_id("cs-vagrant", "k1") != bootdisk.disk_id("cs-debian", "k1")


def test_tree_hashes_skip_dot_files_and_caches(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "f").write_text("x")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD").write_text("y")
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "m.pyc").write_text("z")
    assert list(bootdisk.tree_hashes(tmp_path, "X")) == ["a/f"]
    with pytest.raises(GuestBuildError, match="X sources .*: not a directory"):
        bootdisk.tree_hashes(tmp_path / "none", "X")


def test_a_missing_tool_names_its_package():
    with pytest.raises(GuestBuildError, match=r"^X: no-such-tool-cs not found \(apt-get install pkg\)$"):
        bootdisk.tool("no-such-tool-cs", "pkg", "X")
