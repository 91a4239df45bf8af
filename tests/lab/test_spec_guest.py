"""A guest that is not the lab guest, protected from a spec file (issue acceptance: FT server
specs; libvirt: a plain domain's import is protected): a small Debian bookworm built by
coserver.images.debianguest, booted by the BIOS from its own disk (SYSLINUX, Debian's kernel and
initramfs, systemd). Its spec is what `coserver libvirt import` makes of a plain libvirt domain
(as virt-install would define it) with one operator edit, each CoServer's own disk path; `coserver
hardware check` accepts it, `coserver lab up --spec FILE` protects it, and it survives kill -9 of
the primary's QEMU with no acknowledged append lost.

Each CoServer has its own copy of the disk: cs1's is a copy of the built image, cs2's does not
exist yet (the lab makes it blank and syncs it from cs1 over NBD). The image is cached
(~1 min to build the first time); once cached the test takes about a minute.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from coserver.hardware.config import resolve
from coserver.hardware.spec import load_spec
from coserver.images.debianguest import build_debian_guest
from coserver.images.guestclient import connect_journal
from coserver.lab.lab import Lab
from coserver.lab.net import GUEST_ADDRESS
from coserver.lab.trials import run_trial, table

from .labutil import coserver, status

libvirt = pytest.importorskip("libvirt")

pytestmark = [pytest.mark.qemu, pytest.mark.netns, pytest.mark.slow]

PREFIX = f"sg{os.getpid() % 10000}"
SERIAL, UUID = "CZJ81700DB", "0b6c7a52-41f3-4e52-9a7e-6d1f2c3b4a59"
PROFILE = "dl360-g5"


@pytest.fixture(scope="module")
def guest():
    t0 = time.monotonic()
    g = build_debian_guest(GUEST_ADDRESS, 24, progress=lambda m: print(f"  .. {m}"))
    print(f"\nDebian guest {g.key} ready in {time.monotonic() - t0:.1f} s (kernel {g.kernel_release}, "
          f"disk {g.disk.stat().st_size >> 20} MiB qcow2)")
    return g


MAC = "52:54:00:c5:d0:01"

#: A plain domain as virt-install or an operator defines one: nothing of coserver in it.
PLAIN_DOMAIN = """<domain type='kvm'>
  <name>debian</name>
  <uuid>{uuid}</uuid>
  <memory unit='MiB'>512</memory>
  <vcpu placement='static'>1</vcpu>
  <sysinfo type='smbios'>
    <system><entry name='serial'>{serial}</entry><entry name='uuid'>{uuid}</entry></system>
  </sysinfo>
  <os><type arch='x86_64' machine='pc-i440fx-7.2'>hvm</type><boot dev='hd'/><smbios mode='sysinfo'/></os>
  <features><acpi/><apic/></features>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='{disk}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <interface type='bridge'>
      <mac address='{mac}'/>
      <source bridge='lanbr'/>
      <model type='virtio'/>
    </interface>
    <serial type='pty'><target port='0'/></serial>
    <console type='pty'><target type='serial' port='0'/></console>
    <graphics type='vnc' port='-1'/>
  </devices>
</domain>
"""


def imported_spec(d: Path, disks: dict[str, Path]) -> Path:
    """`coserver libvirt import` of the plain domain (libvirt's test driver holds it: a node file is
    what a separate process sees), then the edit its note asks for on one machine: each CoServer's
    own disk path."""
    node = d / "node.xml"
    node.write_text("<node>\n" + PLAIN_DOMAIN.format(uuid=UUID, serial=SERIAL, disk=disks["cs1"], mac=MAC)
                    + "</node>\n")
    spec = d / "debian.toml"
    got = coserver("libvirt", "import", "debian", "--connect", f"test://{node}", "--out", str(spec),
                   "--coservers", "cs1,cs2", "--profile", PROFILE)
    assert "disk paths are this host's" in got.stderr, got.stderr
    text = spec.read_text()
    one_path = f'path = "{disks["cs1"]}"\n'
    assert one_path in text, text
    spec.write_text(text.replace(one_path, "".join(f'[disks.hosts.{h}]\npath = "{p}"\n' for h, p in disks.items())))
    coserver("hardware", "check", str(spec))   # exit 0, or the test stops with its one line
    return spec


@pytest.fixture(scope="module")
def spec_lab(guest, tmp_path_factory):
    d = tmp_path_factory.mktemp("spec-guest")
    disks = {"cs1": d / "cs1" / "debian.qcow2", "cs2": d / "cs2" / "debian.qcow2"}
    disks["cs1"].parent.mkdir()
    guest.new_disk(disks["cs1"])  # cs2's stays absent: the lab starts it blank and syncs it
    spec = imported_spec(d, disks)
    workdir = d / "lab"
    t0 = time.monotonic()
    try:
        coserver("lab", "up", "--spec", str(spec), "--prefix", PREFIX, "--workdir", str(workdir),
                 "--checkpoint-ms", "1000")
        print(f"\nlab up --spec: protected {time.monotonic() - t0:.1f} s after the command started")
        yield Lab(PREFIX, workdir), spec
    finally:
        coserver("lab", "down", "--prefix", PREFIX, check=False)


def test_the_spec_is_a_disk_booted_guest(guest, spec_lab):
    _, spec_path = spec_lab
    spec = load_spec(spec_path)
    assert spec.boot.mode == "disk" and spec.lab is None   # the lab's default address: the guest's own
    assert (spec.serial, spec.uuid, spec.nics[0].mac, spec.memory_mib) == (SERIAL, UUID, MAC, 512)
    cs1, cs2 = (resolve(spec, h) for h in ("cs1", "cs2"))
    assert cs1.disks[0].path != cs2.disks[0].path


def test_protected_from_the_spec_and_it_is_not_the_lab_guest(guest, spec_lab):
    lab, spec_path = spec_lab
    st = status(PREFIX)
    assert st["state"] == "protected" and (st["primary"], st["secondary"]) == ("cs1", "cs2")
    assert st["spec"] == str(spec_path) and st["profile"] == PROFILE
    for host in ("cs1", "cs2"):
        pid = lab.qemu(host).pid
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
        assert "-kernel" not in argv and "-initrd" not in argv, argv  # the BIOS boots the disk
        assert any("bootindex=1" in a for a in argv)
    serial, deadline = "", time.monotonic() + 60  # SYSLINUX, then Debian's getty banner
    while "Debian GNU/Linux 12" not in serial and time.monotonic() < deadline:
        time.sleep(0.5)
        serial = (lab.server_dir("cs1") / "serial.log").read_text(errors="replace")
    assert "SYSLINUX" in serial and "Debian GNU/Linux 12" in serial, serial[-1500:]
    with connect_journal(st["guest"]["client_netns"], GUEST_ADDRESS, 7777) as client:
        i = client.info()
    print(f"\nINFO: {i} (guest uptime when asked: {i['uptime']:.1f} s)")
    assert (i["sys_vendor"], i["product_name"]) == ("HP", "ProLiant DL360 G5")
    assert (i["product_serial"], i["product_uuid"]) == (SERIAL, UUID)


def test_a_primary_kill_loses_no_acknowledged_append(spec_lab):
    lab, _ = spec_lab
    g = lab.status()["guest"]
    with connect_journal(g["client_netns"], g["address"], g["port"]) as client:
        before = client.info()
    r = run_trial(lab, "kill-primary-qemu", before_s=3.0)
    print("\n" + table([r]))
    assert r.lost == 0, r.problems
    assert r.ok, r.problems
    assert r.survivor == "cs2"
    with connect_journal(g["client_netns"], g["address"], g["port"]) as client:
        after = client.info()
        assert client.count() >= r.acked
    assert after["boot_id"] == before["boot_id"]  # the same running guest, now on cs2
    assert (after["product_serial"], after["product_uuid"]) == (SERIAL, UUID)
