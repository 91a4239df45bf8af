"""The lab guest build (cache, key, contents) and its durability across a hard power cut."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from coserver.images import qemu_img
from coserver.images.debpkg import DebPackage
from coserver.images.errors import GuestBuildError, ImageError, JournalError
from coserver.images.journal_client import wait_for_journal
from coserver.images.labguest import (
    DATA_DISK_SIZE,
    GUEST_SRC,
    GuestInputs,
    LabGuest,
    build_lab_guest,
    guest_inputs,
    guest_key,
    kernel_cmdline,
    load,
)

from .conftest import free_port

# ---------------------------------------------------------------- kernel command line


def test_kernel_cmdline():
    assert kernel_cmdline("10.77.0.10", 24, "10.77.0.1") == (
        "console=ttyS0 quiet loglevel=3 ipv6.disable=1 cs.ip=10.77.0.10/24 cs.gw=10.77.0.1 "
        "cs.port=7777")
    assert kernel_cmdline("192.168.5.2", 30, port=8000, hostname="cs-a") == (
        "console=ttyS0 quiet loglevel=3 ipv6.disable=1 cs.ip=192.168.5.2/30 cs.port=8000 "
        "cs.hostname=cs-a")


@pytest.mark.parametrize("args,kw,words", [
    (("10.0.2.300", 24), {}, "not an IPv4 address/prefix"),
    (("10.0.2.15", 33), {}, "not an IPv4 address/prefix"),
    (("fe80::1", 64), {}, "not an IPv4 address/prefix"),
    (("10.0.2.0", 24), {}, "network or broadcast"),
    (("10.0.2.255", 24), {}, "network or broadcast"),
    (("10.0.2.15", 24, "10.0.3.1"), {}, "not another address in the guest's network"),
    (("10.0.2.15", 24, "10.0.2.15"), {}, "not another address in the guest's network"),
    (("10.0.2.15", 24, "gw"), {}, "not an IPv4 address"),
    (("10.0.2.15", 24), {"port": 0}, "not a TCP port"),
    (("10.0.2.15", 24), {"port": 65536}, "not a TCP port"),
    (("10.0.2.15", 24), {"hostname": "a b"}, "letters, digits"),
])
def test_kernel_cmdline_refuses(args, kw, words):
    with pytest.raises(ImageError) as ei:
        kernel_cmdline(*args, **kw)
    assert words in str(ei.value) and "\n" not in str(ei.value)


def test_boot_args(lab_guest: LabGuest):
    argv = lab_guest.boot_args("10.0.2.15", 24, "10.0.2.2")
    assert argv == ["-kernel", str(lab_guest.vmlinuz), "-initrd", str(lab_guest.initrd),
                    "-append", kernel_cmdline("10.0.2.15", 24, "10.0.2.2")]


# ---------------------------------------------------------------- cache and key


def test_second_build_is_cached(lab_guest: LabGuest):
    mtime = lab_guest.manifest_path.stat().st_mtime_ns
    t0 = time.monotonic()
    again = build_lab_guest()
    took = time.monotonic() - t0
    assert again == lab_guest and again.key == lab_guest.key
    assert took < 2.0, f"a cached build took {took:.1f} s"
    assert lab_guest.manifest_path.stat().st_mtime_ns == mtime
    assert guest_key(guest_inputs()) == lab_guest.key == lab_guest.directory.name


@pytest.fixture
def inputs(tmp_path: Path) -> GuestInputs:
    src = tmp_path / "guest"
    shutil.copytree(GUEST_SRC, src, ignore=shutil.ignore_patterns("__pycache__"))
    return GuestInputs(kernel=DebPackage("linux-image-6.1.0-9-amd64", "6.1.27-1"),
                       busybox_version="1:1.35.0-4", compiler="musl-gcc: gcc 12.2.0",
                       guest_dir=src)


def test_key_changes_with_every_input(inputs: GuestInputs):
    k0 = guest_key(inputs)
    assert len(k0) == 20 and guest_key(dataclasses.replace(inputs)) == k0
    keys = {k0}
    for change in (
        {"kernel": DebPackage("linux-image-6.1.0-9-amd64", "6.1.27-2")},
        {"kernel": DebPackage("linux-image-6.1.0-10-amd64", "6.1.27-1")},
        {"busybox_version": "1:1.36.0-1"},
        {"compiler": "gcc: gcc 13"},
        {"build_version": "999"},
        {"params": {**inputs.params, "data_disk_size": 512 << 20}},
    ):
        k = guest_key(dataclasses.replace(inputs, **change))
        assert k not in keys, change
        keys.add(k)
    assert guest_key(inputs) == k0  # nothing above touched the inputs themselves

    src = inputs.guest_dir
    (src / "journal.c").write_text((src / "journal.c").read_text() + "\n/* changed */\n")
    k = guest_key(inputs)
    assert k not in keys
    keys.add(k)
    (src / "init").write_text((src / "init").read_text().replace("cs-init", "cs-init2"))
    k = guest_key(inputs)
    assert k not in keys
    keys.add(k)
    (src / "extra.txt").write_text("a new guest file\n")
    k = guest_key(inputs)
    assert k not in keys
    (src / "__pycache__").mkdir()
    (src / "__pycache__" / "x.pyc").write_bytes(b"ignored")
    assert guest_key(inputs) == k


def test_key_refuses_incomplete_sources(inputs: GuestInputs):
    (inputs.guest_dir / "journal.c").unlink()
    with pytest.raises(GuestBuildError, match="journal.c or init missing"):
        guest_key(inputs)


def test_manifest_and_files(lab_guest: LabGuest):
    m = json.loads(lab_guest.manifest_path.read_text())
    assert m["key"] == lab_guest.key
    for f in m["files"].values():
        p = lab_guest.directory / f["name"]
        assert hashlib.sha256(p.read_bytes()).hexdigest() == f["sha256"]
    assert m["kernel"]["package"].startswith("linux-image-")
    assert lab_guest.kernel_release in m["kernel"]["package"]
    assert lab_guest.vmlinuz.read_bytes()[0x202:0x206] == b"HdrS"  # a bzImage
    info = qemu_img.info(lab_guest.data_template)
    assert info.format == "qcow2" and info.virtual_size == DATA_DISK_SIZE
    assert info.backing_file is None


def test_data_template_is_ext4_with_an_empty_journal(lab_guest: LabGuest, tmp_path: Path):
    raw = tmp_path / "data.raw"
    qemu_img.convert(lab_guest.data_template, raw, "raw")
    hdr = subprocess.run(["dumpe2fs", "-h", str(raw)], capture_output=True, text=True,
                         check=True).stdout
    assert "has_journal" in hdr and "extent" in hdr and "metadata_csum" in hdr
    assert "Filesystem volume name:   csdata" in hdr
    ls = subprocess.run(["debugfs", "-R", "stat /journal.log", str(raw)], capture_output=True,
                        text=True, check=True).stdout
    assert "Type: regular" in ls and "Size: 0" in ls


def test_new_data_disk_is_a_private_copy(lab_guest: LabGuest, tmp_path: Path):
    d = lab_guest.new_data_disk(tmp_path / "d.qcow2")
    assert d.read_bytes() == lab_guest.data_template.read_bytes()
    with pytest.raises(ImageError, match="already exists"):
        lab_guest.new_data_disk(d)
    with pytest.raises(ImageError, match="does not exist"):
        lab_guest.new_data_disk(tmp_path / "no" / "d.qcow2")


def test_load_refuses_a_broken_build(lab_guest: LabGuest, tmp_path: Path):
    copy = tmp_path / lab_guest.key
    shutil.copytree(lab_guest.directory, copy)
    assert load(copy).key == lab_guest.key
    (copy / "initrd.img").write_bytes(b"short")
    with pytest.raises(GuestBuildError, match="initrd.img missing or of the wrong size"):
        load(copy)
    (copy / "manifest.json").write_text("{not json")
    with pytest.raises(GuestBuildError, match="unreadable manifest"):
        load(copy)
    other = tmp_path / "otherkey"
    shutil.copytree(lab_guest.directory, other)
    with pytest.raises(GuestBuildError, match="is not the dir name"):
        load(other)


def test_wait_for_journal_gives_up():
    port = free_port()
    t0 = time.monotonic()
    with pytest.raises(JournalError, match=f"journal 127.0.0.1:{port}: not answering after 1 s"):
        wait_for_journal("127.0.0.1", port, timeout=1.0)
    assert time.monotonic() - t0 < 5


# ---------------------------------------------------------------- the guest under QEMU


def quiet_console(serial: Path) -> list[str]:
    """Console lines that are neither ours (cs-init, journal) nor empty: should be none."""
    lines = serial.read_text(errors="replace").replace("\r", "").splitlines()
    return [ln for ln in lines if ln.strip() and not ln.startswith(("cs-init:", "journal:"))]


@pytest.mark.qemu
def test_acked_lines_survive_a_hard_kill(lab_guest: LabGuest, boot_guest, tmp_path: Path):
    """Append, SIGKILL QEMU mid-stream, boot the same disk again: every OK'ed line is there."""
    disk = lab_guest.new_data_disk(tmp_path / "data.qcow2")
    vm = boot_guest(disk, "reboot-a")
    c = vm.wait_ready()
    first_boot = vm.booted_in
    assert vm.pid() == vm.proc.pid  # the pidfile names the process we started
    boot_id = c.info()["boot_id"]
    acks: dict[int, str] = {}
    for i in range(20):
        acks[c.append(f"before {i}")] = f"before {i}"
    assert sorted(acks) == list(range(1, 21))

    # a writer still appending when the power goes
    stop = threading.Event()
    failure: list[BaseException] = []

    def writer() -> None:
        k = 0
        while not stop.is_set():
            text = f"during {k}"
            try:
                s = c.append(text)
            except JournalError as exc:
                failure.append(exc)
                return
            acks[s] = text
            k += 1

    t = threading.Thread(target=writer)
    t.start()
    time.sleep(2.0)
    vm.kill()
    stop.set()
    t.join(30)
    c.close()
    assert len(acks) > 25, "the writer got almost nothing acked; the test proves little"
    assert not quiet_console(vm.serial), quiet_console(vm.serial)

    vm2 = boot_guest(disk, "reboot-b")
    c2 = vm2.wait_ready()
    try:
        n = c2.count()
        top = max(acks)
        assert top <= n <= top + 1, f"count {n}, last ack {top}"  # at most one unacked extra
        lost = {s: t for s, t in acks.items() if c2.get(s) != t}
        assert not lost, f"acked lines lost or changed: {sorted(lost)[:10]}"
        info = c2.info()
        assert info["boot_id"] != boot_id
        assert c2.append("after reboot") == n + 1
    finally:
        c2.close()
        vm2.kill()
    assert not quiet_console(vm2.serial), quiet_console(vm2.serial)
    print(f"\nboot to journal ready: {first_boot:.1f} s, then {vm2.booted_in:.1f} s; "
          f"{len(acks)} acked, {n} after reboot")


def test_kernel_resolution_is_remembered_while_apt_state_holds(tmp_path: Path, monkeypatch):
    from coserver.images import debpkg
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "deb_Packages").write_text("one\n")
    monkeypatch.setattr(debpkg, "APT_STATE", (str(lists),))
    calls: list[str] = []

    def fake(name: str) -> DebPackage:
        calls.append(name)
        return DebPackage("linux-image-6.1.0-9-amd64", f"6.1.27-{len(calls)}")

    monkeypatch.setattr(debpkg, "resolve_kernel", fake)
    memo = tmp_path / "memo.json"
    a = debpkg.resolve_kernel_memo("linux-image-amd64", memo)
    assert debpkg.resolve_kernel_memo("linux-image-amd64", memo) == a and len(calls) == 1
    (lists / "deb_Packages").write_text("one, updated\n")  # apt-get update happened
    b = debpkg.resolve_kernel_memo("linux-image-amd64", memo)
    assert len(calls) == 2 and b.version != a.version
    debpkg.resolve_kernel_memo("linux-image-cloud-amd64", memo)  # another query
    assert len(calls) == 3


def test_real_apt_resolves_the_kernel_metapackage():
    from coserver.images import debpkg
    pkg = debpkg.resolve_kernel("linux-image-amd64")
    assert pkg.name.startswith("linux-image-") and pkg.name.endswith("-amd64")
    assert pkg.name != "linux-image-amd64" and pkg.version[0].isdigit()
    with pytest.raises(GuestBuildError) as ei:
        debpkg.resolve_kernel("no-such-package-cs")
    assert str(ei.value).startswith("package no-such-package-cs: ") and "\n" not in str(ei.value)
    with pytest.raises(GuestBuildError, match="not installed"):
        debpkg.installed_version("no-such-package-cs")
