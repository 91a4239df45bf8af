"""qemu-img wrappers: sizes, overlays, chains, refusals (real qemu-img, no guest)."""

from __future__ import annotations

from pathlib import Path

import pytest

from coserver.errors import CoserverError
from coserver.images import qemu_img
from coserver.images.errors import ImageError

MiB = 1 << 20


def one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and msg.strip() == msg and msg
    assert isinstance(exc.value, CoserverError)
    return msg


@pytest.mark.parametrize("text,want", [
    ("1G", 1 << 30), ("512M", 512 * MiB), ("512m", 512 * MiB), ("64K", 64 << 10),
    ("64KiB", 64 << 10), ("2T", 2 << 40), ("1048576", MiB), (" 8M ", 8 * MiB), (4096, 4096),
    ("1GB", 1 << 30),
])
def test_parse_size_accepts(text, want):
    assert qemu_img.parse_size(text) == want


@pytest.mark.parametrize("bad", [0, -1, -512, "0", "0G", "-1G", "abc", "", "1.5G", "1X", "G",
                                 "1 G B", True, None, 1.0, 1000, "100"])
def test_parse_size_refuses(bad):
    with pytest.raises(ImageError) as ei:
        qemu_img.parse_size(bad)
    assert repr(bad) in one_line(ei)


def test_create_and_info(tmp_path: Path):
    p = tmp_path / "a.qcow2"
    made = qemu_img.create(p, "64M")
    assert made.format == "qcow2" and made.virtual_size == 64 * MiB and made.backing_file is None
    assert qemu_img.info(p) == made
    raw = qemu_img.create(tmp_path / "b.raw", 8 * MiB, "raw")
    assert raw.format == "raw" and raw.virtual_size == 8 * MiB


@pytest.mark.parametrize("size", [0, -1, "garbage", "0M", "1000"])
def test_create_refuses_bad_size_and_makes_nothing(tmp_path: Path, size):
    p = tmp_path / "a.qcow2"
    with pytest.raises(ImageError) as ei:
        qemu_img.create(p, size)
    msg = one_line(ei)
    assert msg.startswith(f"image {p}: size")
    assert not p.exists()


def test_create_refuses_existing_unless_overwrite(tmp_path: Path):
    p = tmp_path / "a.qcow2"
    qemu_img.create(p, "1M")
    with pytest.raises(ImageError) as ei:
        qemu_img.create(p, "2M")
    assert one_line(ei) == f"image {p}: already exists (refusing to overwrite)"
    assert qemu_img.info(p).virtual_size == MiB
    assert qemu_img.create(p, "2M", overwrite=True).virtual_size == 2 * MiB


def test_create_refuses_missing_dir_and_unknown_format(tmp_path: Path):
    with pytest.raises(ImageError) as ei:
        qemu_img.create(tmp_path / "no" / "a.qcow2", "1M")
    assert "does not exist" in one_line(ei)
    with pytest.raises(ImageError) as ei:
        qemu_img.create(tmp_path / "a.vmdk", "1M", "vmdk")
    assert "format 'vmdk' not supported" in one_line(ei)


def test_overlay_takes_backing_size_and_chain(tmp_path: Path):
    base = tmp_path / "base.qcow2"
    qemu_img.create(base, "32M")
    mid = qemu_img.create(tmp_path / "mid.qcow2", backing=base)
    assert mid.virtual_size == 32 * MiB
    assert mid.backing_file == base and mid.backing_format == "qcow2"
    top = qemu_img.create(tmp_path / "top.qcow2", "32M", backing=tmp_path / "mid.qcow2")
    chain = qemu_img.info(top.path, backing_chain=True).chain
    assert [c.path for c in chain] == [tmp_path / "top.qcow2", tmp_path / "mid.qcow2", base]
    assert chain[-1].backing is None
    assert qemu_img.check_chain(top.path).chain[-1].path == base


def test_overlay_of_raw_base_records_raw_format(tmp_path: Path):
    base = tmp_path / "base.raw"
    qemu_img.create(base, "4M", "raw")
    ov = qemu_img.create(tmp_path / "ov.qcow2", backing=base)
    assert ov.backing_format == "raw"
    with pytest.raises(ImageError) as ei:
        qemu_img.create(tmp_path / "ov2.qcow2", backing=base, backing_fmt="qcow2")
    assert one_line(ei) == (f"image {tmp_path / 'ov2.qcow2'}: backing file {base} is raw, "
                            f"not qcow2")


def test_overlay_size_must_match_backing(tmp_path: Path):
    base = tmp_path / "base.qcow2"
    qemu_img.create(base, "32M")
    ov = tmp_path / "ov.qcow2"
    with pytest.raises(ImageError) as ei:
        qemu_img.create(ov, "64M", backing=base)
    assert one_line(ei) == (f"image {ov}: size {64 * MiB} differs from backing file {base} "
                            f"({32 * MiB} bytes)")
    assert not ov.exists()


def test_overlay_refuses_missing_backing(tmp_path: Path):
    ov = tmp_path / "a.qcow2"
    base = tmp_path / "base.qcow2"
    with pytest.raises(ImageError) as ei:
        qemu_img.create(ov, backing=base)
    assert one_line(ei) == f"image {ov}: backing file {base} does not exist"
    assert not ov.exists()


def test_check_chain_finds_missing_backing_and_size_drift(tmp_path: Path):
    base = tmp_path / "base.qcow2"
    qemu_img.create(base, "16M")
    ov = tmp_path / "ov.qcow2"
    qemu_img.create(ov, backing=base)
    qemu_img.resize(base, "32M")  # the base grew behind the overlay's back
    with pytest.raises(ImageError) as ei:
        qemu_img.check_chain(ov)
    assert one_line(ei) == (f"image {ov}: size {16 * MiB} differs from backing file {base} "
                            f"({32 * MiB} bytes)")
    base.unlink()
    with pytest.raises(ImageError) as ei:
        qemu_img.check_chain(ov)
    assert one_line(ei) == f"image {ov}: backing file {base} does not exist"


def test_info_of_missing_image(tmp_path: Path):
    with pytest.raises(ImageError) as ei:
        qemu_img.info(tmp_path / "nope.qcow2")
    assert one_line(ei) == f"image {tmp_path / 'nope.qcow2'}: does not exist"


def test_info_reports_qemu_img_failure_in_one_line(tmp_path: Path):
    bad = tmp_path / "bad.qcow2"
    bad.write_bytes(b"QFI\xfb" + b"\xff" * 100)  # qcow2 magic, garbage header
    with pytest.raises(ImageError) as ei:
        qemu_img.info(bad)
    msg = one_line(ei)
    assert msg.startswith(f"image {bad}: qemu-img info failed: ")


def test_convert(tmp_path: Path):
    base = tmp_path / "base.qcow2"
    qemu_img.create(base, "8M")
    ov = qemu_img.create(tmp_path / "ov.qcow2", backing=base)
    flat = qemu_img.convert(ov.path, tmp_path / "flat.raw", "raw")
    assert flat.format == "raw" and flat.virtual_size == 8 * MiB and flat.backing_file is None
    with pytest.raises(ImageError) as ei:
        qemu_img.convert(ov.path, tmp_path / "flat.raw", "raw")
    assert "already exists" in one_line(ei)
    with pytest.raises(ImageError) as ei:
        qemu_img.convert(tmp_path / "missing.qcow2", tmp_path / "x.qcow2")
    assert one_line(ei) == f"image {tmp_path / 'missing.qcow2'}: does not exist"


def test_convert_compressed(tmp_path: Path):
    raw = tmp_path / "a.raw"
    with open(raw, "wb") as f:
        f.write(b"coserver " * 200_000)  # compresses well
        f.truncate(8 * MiB)
    plain = qemu_img.convert(raw, tmp_path / "plain.qcow2", src_fmt="raw")
    small = qemu_img.convert(raw, tmp_path / "small.qcow2", src_fmt="raw", compress=True)
    assert small.virtual_size == plain.virtual_size == 8 * MiB
    assert small.path.stat().st_size < plain.path.stat().st_size
    assert qemu_img.same_content(small.path, raw)
    with pytest.raises(ImageError) as ei:
        qemu_img.convert(raw, tmp_path / "c.raw", "raw", compress=True)
    assert one_line(ei) == f"image {tmp_path / 'c.raw'}: only qcow2 can be compressed, not raw"


def test_resize_checks(tmp_path: Path):
    p = tmp_path / "a.qcow2"
    qemu_img.create(p, "16M")
    assert qemu_img.resize(p, "32M").virtual_size == 32 * MiB
    with pytest.raises(ImageError) as ei:
        qemu_img.resize(p, "8M")
    assert "smaller than" in one_line(ei)
    assert qemu_img.info(p).virtual_size == 32 * MiB
    assert qemu_img.resize(p, "8M", shrink=True).virtual_size == 8 * MiB
    with pytest.raises(ImageError) as ei:
        qemu_img.resize(p, 0)
    assert "must be more than 0 bytes" in one_line(ei)
    ov = qemu_img.create(tmp_path / "ov.qcow2", backing=p)
    with pytest.raises(ImageError) as ei:
        qemu_img.resize(ov.path, "16M")
    assert one_line(ei).startswith(f"image {ov.path}: is an overlay of {p}")


def test_colo_overlays_have_the_disk_size(tmp_path: Path):
    disk = tmp_path / "disk.qcow2"
    qemu_img.create(disk, "48M")
    ov = qemu_img.create_colo_overlays(disk, tmp_path, prefix="sec-")
    assert ov.size == 48 * MiB
    for p in (ov.active, ov.hidden):
        i = qemu_img.info(p)
        assert i.format == "qcow2" and i.virtual_size == 48 * MiB and i.backing_file is None
    assert ov.active.name == "sec-active.qcow2" and ov.hidden.name == "sec-hidden.qcow2"
    with pytest.raises(ImageError):
        qemu_img.create_colo_overlays(disk, tmp_path, prefix="sec-")
    with pytest.raises(ImageError) as ei:
        qemu_img.create_colo_overlays(tmp_path / "nodisk.qcow2", tmp_path)
    assert "does not exist" in one_line(ei)


def test_secondary_overlays_are_made_where_its_argv_names_them(tmp_path: Path):
    """One definition of the overlay names: what is created is what the secondary's QEMU opens."""
    from coserver.colo.argv import Node

    node = Node("cs2", tmp_path, "10.0.0.2", "tap0", tmp_path / "disk.qcow2", "52:54:00:00:00:01",
                overlay_dir=tmp_path / "ov")
    node.overlay_dir.mkdir(mode=0o700)  # private: create_overlays refuses a directory others can enter
    qemu_img.create(node.disk, "32M")
    made = node.create_overlays()
    assert (made.active, made.hidden) == (node.active_overlay, node.hidden_overlay)
    assert made.active.exists() and made.hidden.exists() and made.size == 32 * MiB
    node.create_overlays(overwrite=True)  # a rejoin makes them anew over the old ones
