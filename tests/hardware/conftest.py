"""Shared helpers: a valid spec with its files, written into a temporary directory."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

from coserver.hardware import HostCapacity

GOOD_SPEC = """\
name = "journal"
profile = "dl380-g5"
coservers = ["cs1", "cs2"]
serial = "CZJ7300ABC"
uuid = "6f1c2a7e-3b9d-4c1e-9a55-0c1d2e3f4a5b"
memory_mib = 256

[cpu]
model = "qemu64"
sockets = 1
cores = 1
threads = 1

[[disks]]
serial = "JOURNAL-DATA"
[disks.hosts.cs1]
path = "cs1/disk0.qcow2"
[disks.hosts.cs2]
path = "cs2/disk0.qcow2"

[cdrom]
[cdrom.hosts.cs1]
path = "cs1/install.iso"
[cdrom.hosts.cs2]
path = "cs2/install.iso"

[[nics]]
mac = "52:54:00:c0:5e:01"
bridge = "br-lan"

[boot]
mode = "kernel"
kernel = "guest/vmlinuz"
initrd = "guest/initrd.img"
append = "console=ttyS0 panic=-1"

[lab]
address = "10.77.0.10"
port = 7777
"""

LAB = HostCapacity(name="lab", cpus=2, memory_mib=24 * 1024)

SpecWriter = Callable[..., Path]


@pytest.fixture
def lab_capacity() -> HostCapacity:
    return LAB


@pytest.fixture
def write_spec(tmp_path: Path) -> SpecWriter:
    """write_spec(text=GOOD_SPEC, name="spec.toml", iso_cs2=b"...") -> path of the spec, with
    the ISO, kernel and initrd it names created beside it."""

    def write(text: str = GOOD_SPEC, name: str = "spec.toml", *,
              iso_cs1: bytes = b"ISO 9660 image\n", iso_cs2: bytes | None = None) -> Path:
        for sub in ("cs1", "cs2", "guest"):
            (tmp_path / sub).mkdir(exist_ok=True)
        (tmp_path / "cs1" / "install.iso").write_bytes(iso_cs1)
        (tmp_path / "cs2" / "install.iso").write_bytes(iso_cs1 if iso_cs2 is None else iso_cs2)
        (tmp_path / "guest" / "vmlinuz").write_bytes(b"kernel\n")
        (tmp_path / "guest" / "initrd.img").write_bytes(b"initrd\n")
        path = tmp_path / name
        path.write_text(text)
        return path

    return write
