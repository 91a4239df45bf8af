"""The guest-visible device types coserver knows: which it emulates, and which COLO cannot keep.

COLO keeps two QEMUs in step by checkpointing *QEMU's* device state and comparing the guests'
network output. A device whose state or data path lives outside QEMU (in real hardware, in a
vhost-user process, in the host kernel) cannot be checkpointed, copied to the other CoServer or
held back by colo-compare, so a spec that asks for one is refused with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Model:
    """One emulated device model: the QEMU driver name and what it stands for."""

    name: str
    driver: str
    description: str


# NIC models QEMU 7.2 emulates entirely inside QEMU (so COLO can checkpoint them).
NIC_MODELS: dict[str, Model] = {m.name: m for m in (
    Model("virtio-net-pci", "virtio-net-pci", "paravirtual NIC; the lab guest's driver"),
    Model("e1000", "e1000", "Intel 82540EM, the classic emulated gigabit NIC"),
    Model("e1000e", "e1000e", "Intel 82574L, PCIe gigabit NIC"),
    Model("rtl8139", "rtl8139", "Realtek RTL8139, 100 Mbit/s"),
)}

# Disk buses: how the guest sees its disks (the controller QEMU emulates).
DISK_BUSES: dict[str, Model] = {m.name: m for m in (
    Model("virtio-blk", "virtio-blk-pci", "one paravirtual PCI disk per image; the lab guest's"),
    Model("virtio-scsi", "virtio-scsi-pci", "paravirtual SCSI HBA with scsi-hd disks"),
    Model("ahci", "ahci", "Intel ICH9 AHCI SATA controller with ide-hd disks (6 ports)"),
    Model("megasas", "megasas", "LSI MegaRAID SAS 1078, a hardware-RAID HBA like Smart Array"),
    Model("megasas-gen2", "megasas-gen2", "LSI MegaRAID SAS 2108, a later hardware-RAID HBA"),
)}

# Extra devices a spec may add with [[devices]] type = "...".
EXTRA_DEVICES: dict[str, Model] = {m.name: m for m in (
    Model("i6300esb", "i6300esb", "Intel 6300ESB PCI watchdog"),
    Model("pvpanic", "pvpanic", "ISA panic notifier, lets the host see a guest kernel panic"),
)}

_PASSTHROUGH = ("host pass-through: the device's state lives in real hardware of one CoServer, "
                "which COLO can neither checkpoint nor copy to the other")
_VHOST_USER = ("vhost-user: the device is emulated by an outside process whose state is not in "
               "QEMU's migration stream, so COLO checkpoints would not carry it")
_VHOST_KERNEL = ("in-kernel vhost: the data path bypasses QEMU, so COLO's filters and "
                 "colo-compare never see the guest's packets or requests")
_USB_HOST = ("USB host pass-through: a physical USB device exists on one CoServer only and its "
             "state is outside QEMU")

# Exact names refused, and prefixes refused (vfio-*, vhost-user-*, vhost-*).
REFUSED: dict[str, str] = {
    "pci-assign": _PASSTHROUGH,
    "kvm-pci-assign": _PASSTHROUGH,
    "usb-host": _USB_HOST,
    "usb-redir": "USB redirection: the device lives on a remote client, outside QEMU's state",
    "u2f-passthru": _USB_HOST,
    "ccid-card-passthru": "smart-card pass-through: the card lives outside QEMU's state",
}
REFUSED_PREFIXES: tuple[tuple[str, str], ...] = (
    ("vfio-", _PASSTHROUGH),
    ("vhost-user-", _VHOST_USER),
    ("vhost-", _VHOST_KERNEL),
)
VHOST_NET_REASON = "vhost=on: " + _VHOST_KERNEL


def colo_refusal(type_name: str) -> str | None:
    """Why COLO cannot use this device type, or None if nothing is known against it."""
    if type_name in REFUSED:
        return REFUSED[type_name]
    for prefix, reason in REFUSED_PREFIXES:
        if type_name.startswith(prefix):
            return reason
    return None
