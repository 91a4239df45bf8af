"""What the COLO layer needs to know about the guest's virtual hardware.

colo/ adds only the replication and proxy parts of a QEMU command line; the
machine, CPU, memory, SMBIOS identity, boot method and the guest-visible disk
and NIC models come from the hardware layer. GuestHardware is that seam: a
small protocol the controller fills from a hardware profile (and the self-test
from BasicGuestHardware), so COLO code never depends on profile details.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


class GuestHardware(Protocol):
    """Guest-visible QEMU arguments, identical on both hosts."""

    def machine_args(self) -> list[str]:
        """-machine/-cpu/-smp/-m/-smbios/-uuid and boot options (kernel or disk)."""

    def disk_device_args(self, drive_node: str) -> list[str]:
        """-device options exposing block node `drive_node` as the guest's first disk."""

    def nic_device_args(self, netdev_id: str, mac: str) -> list[str]:
        """-device options for the guest NIC on netdev `netdev_id` with MAC `mac`."""


@dataclass(frozen=True)
class BasicGuestHardware:
    """A plain virtio machine with direct kernel boot: the self-test's guest.

    Profiles from coserver.hardware replace it in the product; this one keeps
    `coserver doctor` independent of any profile so it tests QEMU alone.
    """

    kernel: Path
    initrd: Path
    append: str
    memory_mb: int = 256
    vcpus: int = 1
    machine: str = "pc"
    extra: tuple[str, ...] = field(default_factory=tuple)

    def machine_args(self) -> list[str]:
        return ["-machine", self.machine, "-smp", str(self.vcpus), "-m", str(self.memory_mb),
                "-kernel", str(self.kernel), "-initrd", str(self.initrd), "-append", self.append,
                *self.extra]

    def disk_device_args(self, drive_node: str) -> list[str]:
        return ["-device", f"virtio-blk-pci,drive={drive_node},id=disk0"]

    def nic_device_args(self, netdev_id: str, mac: str) -> list[str]:
        return ["-device", f"virtio-net-pci,netdev={netdev_id},mac={mac},id=nic0,romfile="]
