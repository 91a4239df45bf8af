"""The FT server spec of the lab's built-in guest, made from a profile and the lab guest image.

`coserver lab up --profile NAME` writes this spec into the lab's workdir and
then loads it exactly like a user's `--spec FILE`: one path through the
hardware layer's validation for both. The serial number and UUID are derived
from the lab prefix, so the FT server keeps its identity across `lab down` /
`lab up` and on both CoServers.
"""

from __future__ import annotations

import hashlib
import json
import uuid as uuidlib
from pathlib import Path

from coserver.hardware import get_profile
from coserver.images.labguest import LabGuest
from coserver.lab.net import GUEST_ADDRESS, HOSTS, LAN_SUBNET

GUEST_MAC = "52:54:00:c5:00:01"
GUEST_PORT = 7777


def lab_identity(prefix: str, index: int = 0) -> tuple[str, str]:
    """(serial, uuid) of the lab's FT server number `index`, stable per prefix (the first one's
    are what they always were)."""
    key = prefix if index == 0 else f"{prefix}:{index}"
    digest = hashlib.sha256(f"coserver-lab:{key}".encode()).hexdigest().upper()
    serial = "CZJ" + "".join(ch for ch in digest if ch.isalnum())[:7]
    return serial, str(uuidlib.uuid5(uuidlib.NAMESPACE_URL, f"coserver:lab:{key}"))


def lab_server_name(index: int) -> str:
    """The lab's FT servers: journal, journal2, journal3, ..."""
    return "journal" if index == 0 else f"journal{index + 1}"


def lab_guest_address(index: int) -> str:
    """Server `index`'s guest address on the client LAN: .10, .11, ..."""
    return GUEST_ADDRESS if index == 0 else f"{LAN_SUBNET}.{10 + index}"


def lab_guest_mac(index: int) -> str:
    return GUEST_MAC if index == 0 else f"52:54:00:c5:00:{index + 1:02x}"


#: How the built-in guest's NIC and data disk are emulated: the profile's paravirtual lab defaults
#: (virtio) or the emulated devices of the real box (e1000/e1000e, megasas), as a guest without
#: virtio drivers would use them.
DEVICE_SETS = ("virtio", "emulated")


def guest_devices(profile: str, devices: str) -> tuple[str, str]:
    """(nic model, disk bus) of the built-in guest under `profile` for one of DEVICE_SETS."""
    p = get_profile(profile)
    if devices == "emulated":
        return p.real.qemu_nic_model, p.real.qemu_disk_bus
    if devices == "virtio":
        return p.guest.nic_model, p.guest.disk_bus
    raise ValueError(f"devices must be one of {', '.join(DEVICE_SETS)}, got {devices!r}")


def write_lab_spec(path: Path, *, prefix: str, profile: str, guest: LabGuest,
                   disks: dict[str, Path], devices: str = "virtio", index: int = 0, name: str | None = None,
                   memory_mib: int = 0) -> Path:
    """Write the spec for built-in journal guest number `index` under `profile` (called `name`,
    default journal, journal2, ...), with `memory_mib` of RAM (0: the profile's); return its path."""
    serial, uuid = lab_identity(prefix, index)
    address, mac = lab_guest_address(index), lab_guest_mac(index)
    name = name or lab_server_name(index)
    nic_model, disk_bus = guest_devices(profile, devices)
    host_disks = "".join(f'[disks.hosts.{h}]\npath = "{disks[h]}"\n' for h in HOSTS)
    text = f'''# Written by `coserver lab up` for the built-in lab guest; edit a copy and pass it with --spec.
name = "{name}"
profile = "{profile}"
coservers = {json.dumps(list(HOSTS))}
serial = "{serial}"
uuid = "{uuid}"
{f"memory_mib = {memory_mib}" if memory_mib else ""}

[[disks]]
bus = "{disk_bus}"
format = "qcow2"
serial = "{name.upper()}-DATA"
{host_disks}
[[nics]]
mac = "{mac}"
model = "{nic_model}"
bridge = "lanbr"

[boot]
mode = "kernel"
kernel = "{guest.vmlinuz}"
initrd = "{guest.initrd}"
append = "{guest.cmdline(address, 24, port=GUEST_PORT)}"

[lab]
address = "{address}"
prefix = 24
port = {GUEST_PORT}
'''
    path.write_text(text)
    return path
