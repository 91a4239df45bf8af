"""QEMU argv fragments for the guest-visible machine and devices of a resolved config.

Everything here returns a list of strings (never a shell string). The block and network
*backends* are not ours: the COLO layer builds its own block-node graph (quorum, replication,
NBD) and netdevs (tap with filters), then plugs them into the devices by node name / netdev id::

    argv = [qemu, "-accel", "tcg", "-nodefaults", "-display", "none", ...]
    argv += machine_args(config)                  # -machine -cpu -smp -m -uuid -smbios...
    argv += boot_args(config)
    argv += storage_controller_args(config)       # once, before the disks
    argv += disk_device_args(config, 0, drive_node="colo-disk0")
    argv += nic_device_args(config, 0, netdev_id="hn0")
    # or all of it at once: guest_args(config, drive_nodes=[...], netdev_ids=[...])

Choices that matter for COLO and for "one stable machine":
- SMBIOS: type 1 carries what Linux shows as sys_vendor, product_name, product_version,
  product_serial, product_uuid, product_sku and product_family (/sys/class/dmi/id); type 0 the
  bios_*; type 2 the board_* (only for profiles whose real ROM has one: QEMU builds no type 2
  unless asked); type 3 the chassis_*. Versions are given as "" where HP reports
  "Not Specified", which also hides QEMU's defaults (the machine type name, "QEMU").
- ``-uuid`` and ``-smbios type=1,uuid=`` carry the same UUID.
- Every PCI device gets a fixed address (NICs 0x03+, storage controllers 0x0b-0x0e, virtio-blk
  disks 0x10+, extra devices 0x18+), so the guest's PCI layout does not depend on argv order
  or on devices another layer adds. This assumes ``-nodefaults`` (no default NIC or VGA).
- NICs get ``romfile=`` (no option ROM: nothing to load, nothing to differ between hosts).
"""

from __future__ import annotations

import re
from typing import Sequence

from coserver.hardware import devices
from coserver.hardware.config import MachineConfig
from coserver.hardware.errors import HardwareError
from coserver.machine.qemuopts import qemu_opt_value

QEMU_ID = r"[A-Za-z][A-Za-z0-9_.-]{0,31}"
NIC_SLOT = 0x03
VIRTIO_BLK_SLOT = 0x10
EXTRA_SLOT = 0x18
HBA = {  # disk bus -> (controller driver, controller id, PCI slot)
    "virtio-scsi": ("virtio-scsi-pci", "hba-virtio-scsi", 0x0B),
    "megasas": ("megasas", "hba-megasas", 0x0C),
    "megasas-gen2": ("megasas-gen2", "hba-megasas-gen2", 0x0D),
    "ahci": ("ahci", "hba-ahci", 0x0E),
}
CDROM_BUS = {"pc": "bus=ide.1,unit=0", "q35": "bus=ide.2"}  # PIIX secondary master / ICH9 port 2


def _opts(head: str, *pairs: tuple[str, str | int | None]) -> str:
    """"head,k=v,..." leaving out None values ("" stays: it means an empty value)."""
    parts = [head] if head else []
    parts += [f"{k}={qemu_opt_value(str(v))}" for k, v in pairs if v is not None]
    return ",".join(parts)


def _check_id(what: str, value: str) -> str:
    if not isinstance(value, str) or not re.fullmatch(QEMU_ID, value):
        raise HardwareError(f"{what} {value!r}: must be a QEMU id ({QEMU_ID})")
    return value


def _machine_family(machine: str) -> str:
    return "q35" if "q35" in machine else "pc"


def smp_value(config: MachineConfig) -> str:
    c = config.cpu
    slots = c.sockets * c.cores * c.threads
    value = f"{c.vcpus},sockets={c.sockets},cores={c.cores},threads={c.threads}"
    return value + (f",maxcpus={slots}" if c.vcpus < slots else "")


#: One SMBIOS structure as QEMU's -smbios takes it: its type and (key, value) pairs; a None value is
#: left out, "" is given (it hides QEMU's default, e.g. the machine type as a version).
SmbiosTable = tuple[int, tuple[tuple[str, str | None], ...]]


def smbios_tables(config: MachineConfig) -> list[SmbiosTable]:
    """Types 0, 1, (2), 3, 4 and 17 with every key the guest's identity sets: the one list both
    smbios_args() and the libvirt backend's <sysinfo> (coserver.libvirt.domainxml) are made of,
    so the guest sees the same identity under either."""
    s = config.smbios
    tables: list[SmbiosTable] = [
        (0, (("vendor", s.bios_vendor), ("version", s.bios_version), ("date", s.bios_date),
             ("release", s.bios_release))),
        (1, (("manufacturer", s.manufacturer), ("product", s.product), ("version", s.version),
             ("serial", s.serial), ("uuid", s.uuid), ("sku", s.sku), ("family", s.family))),
    ]
    if s.board:
        tables.append((2, (("manufacturer", s.board_manufacturer), ("product", s.board_product),
                           ("version", ""), ("serial", s.board_serial), ("asset", s.asset_tag))))
    tables += [
        (3, (("manufacturer", s.chassis_manufacturer), ("version", ""), ("serial", s.chassis_serial),
             ("asset", s.asset_tag))),
        (4, (("manufacturer", s.processor_manufacturer), ("version", ""))),
        (17, (("manufacturer", s.memory_manufacturer),)),
    ]
    return tables


def smbios_args(config: MachineConfig) -> list[str]:
    """-smbios options for types 0, 1, (2), 3, 4 and 17."""
    args: list[str] = []
    for kind, pairs in smbios_tables(config):
        args += ["-smbios", _opts(f"type={kind}", *pairs)]
    return args


def machine_args(config: MachineConfig) -> list[str]:
    """-machine, -cpu, -smp, -m, -uuid and the -smbios identity. No accelerator: that is the
    caller's choice (tcg here, kvm where a probe shows it works)."""
    return ["-machine", config.machine,
            "-cpu", config.cpu.model,
            "-smp", smp_value(config),
            "-m", f"{config.memory_mib}M",
            "-uuid", config.smbios.uuid,
            *smbios_args(config)]


def boot_args(config: MachineConfig) -> list[str]:
    """Direct kernel boot (-kernel/-initrd/-append, this host's paths), or strict BIOS boot
    from disks[0] (which carries bootindex=1)."""
    b = config.boot
    if b.mode == "disk":
        return ["-boot", "strict=on"]
    if b.kernel is None:
        raise HardwareError(f"{config.origin}: no kernel path for host {config.host} "
                            f"(resolve the spec for this CoServer first)")
    args = ["-kernel", str(b.kernel)]
    if b.initrd is not None:
        args += ["-initrd", str(b.initrd)]
    if b.append:
        args += ["-append", b.append]
    return args


def storage_controller_args(config: MachineConfig) -> list[str]:
    """One controller per SCSI/SATA bus the disks use (virtio-blk needs none). Emit once."""
    args: list[str] = []
    for bus in dict.fromkeys(d.bus for d in config.disks):
        if bus in HBA:
            driver, hba_id, slot = HBA[bus]
            args += ["-device", _opts(driver, ("id", hba_id), ("addr", f"0x{slot:02x}"))]
    return args


def disk_device_args(config: MachineConfig, index: int, drive_node: str) -> list[str]:
    """The guest device of disks[index], backed by the block node drive_node. Its controller
    (if its bus has one) comes from storage_controller_args()."""
    if not 0 <= index < len(config.disks):
        raise HardwareError(f"{config.origin}: no disks[{index}] (the spec has "
                            f"{len(config.disks)} disks)")
    _check_id("drive node name", drive_node)
    disk = config.disks[index]
    unit = sum(1 for d in config.disks[:index] if d.bus == disk.bus)
    boot = 1 if index == 0 and config.boot.mode == "disk" else None
    common = (("drive", drive_node), ("id", f"disk{index}"), ("serial", disk.serial),
              ("bootindex", boot))
    if disk.bus == "virtio-blk":
        return ["-device", _opts("virtio-blk-pci", *common,
                                 ("addr", f"0x{VIRTIO_BLK_SLOT + unit:02x}"))]
    _, hba_id, _ = HBA[disk.bus]
    if disk.bus == "ahci":
        return ["-device", _opts("ide-hd", ("bus", f"{hba_id}.{unit}"), *common)]
    return ["-device", _opts("scsi-hd", ("bus", f"{hba_id}.0"), ("scsi-id", unit), ("lun", 0),
                             *common)]


def cdrom_device_args(config: MachineConfig, drive_node: str) -> list[str]:
    """The read-only CD-ROM on the chipset's own IDE/SATA controller, backed by drive_node."""
    if config.cdrom is None:
        raise HardwareError(f"{config.origin}: the spec has no [cdrom]")
    _check_id("drive node name", drive_node)
    return ["-device", f"ide-cd,{CDROM_BUS[_machine_family(config.machine)]},"
                       f"drive={drive_node},id=cdrom0"]


def nic_device_args(config: MachineConfig, index: int, netdev_id: str) -> list[str]:
    """The guest NIC nics[index] (model, fixed MAC, no option ROM) on netdev netdev_id."""
    if not 0 <= index < len(config.nics):
        raise HardwareError(f"{config.origin}: no nics[{index}] (the spec has "
                            f"{len(config.nics)} NICs)")
    _check_id("netdev id", netdev_id)
    nic = config.nics[index]
    driver = devices.NIC_MODELS[nic.model].driver
    return ["-device", _opts(driver, ("netdev", netdev_id), ("mac", nic.mac), ("id", f"nic{index}"),
                             ("addr", f"0x{NIC_SLOT + index:02x}"), ("romfile", ""))]


def extra_device_args(config: MachineConfig) -> list[str]:
    """The spec's [[devices]] (watchdog, panic notifier)."""
    args: list[str] = []
    slot = EXTRA_SLOT
    for kind in config.devices:
        driver = devices.EXTRA_DEVICES[kind].driver
        if kind == "pvpanic":  # ISA: no PCI address
            args += ["-device", _opts(driver, ("id", "pvpanic0"))]
        else:
            args += ["-device", _opts(driver, ("id", kind), ("addr", f"0x{slot:02x}"))]
            slot += 1
    return args


def guest_args(config: MachineConfig, *, drive_nodes: Sequence[str], netdev_ids: Sequence[str],
               cdrom_node: str | None = None) -> list[str]:
    """Machine, boot and every guest device, given one block node per disk (in order), one
    netdev per NIC, and the CD-ROM's node if the spec has one."""
    if len(drive_nodes) != len(config.disks):
        raise HardwareError(f"{config.origin}: {len(config.disks)} disks but "
                            f"{len(drive_nodes)} drive nodes given")
    if len(netdev_ids) != len(config.nics):
        raise HardwareError(f"{config.origin}: {len(config.nics)} NICs but "
                            f"{len(netdev_ids)} netdev ids given")
    if (config.cdrom is None) != (cdrom_node is None):
        raise HardwareError(f"{config.origin}: the CD-ROM node must be given exactly when the "
                            f"spec has a [cdrom]")
    args = machine_args(config) + boot_args(config) + storage_controller_args(config)
    for i, node in enumerate(drive_nodes):
        args += disk_device_args(config, i, node)
    if cdrom_node is not None:
        args += cdrom_device_args(config, cdrom_node)
    for i, netdev in enumerate(netdev_ids):
        args += nic_device_args(config, i, netdev)
    return args + extra_device_args(config)


class ConfigGuestHardware:
    """A resolved config as one object with ``machine_args()``, ``disk_device_args(node)`` and
    ``nic_device_args(netdev, mac)``: the shape of the COLO layer's guest-hardware seam
    (structural typing; nothing is imported from it). That seam carries one disk and one NIC,
    so a config with more disks or NICs, or a CD-ROM, is refused rather than half-built."""

    def __init__(self, config: MachineConfig) -> None:
        if len(config.disks) > 1 or len(config.nics) != 1 or config.cdrom is not None:
            raise HardwareError(
                f"{config.origin}: this guest has {len(config.disks)} disks, "
                f"{len(config.nics)} NICs and {'a' if config.cdrom else 'no'} CD-ROM; the "
                f"single-disk, single-NIC interface takes at most 1 disk, exactly 1 NIC and no "
                f"CD-ROM (use guest_args() for more)")
        self.config = config

    def machine_args(self) -> list[str]:
        """Machine, identity, boot, storage controller and extra devices."""
        c = self.config
        return machine_args(c) + boot_args(c) + storage_controller_args(c) + extra_device_args(c)

    def disk_device_args(self, drive_node: str) -> list[str]:
        if not self.config.disks:
            raise HardwareError(f"{self.config.origin}: the spec has no [[disks]]")
        return disk_device_args(self.config, 0, drive_node)

    def nic_device_args(self, netdev_id: str, mac: str) -> list[str]:
        """The spec's NIC; mac must be the spec's (it is the single source of the MAC)."""
        if mac.lower() != self.config.nics[0].mac:
            raise HardwareError(f"{self.config.origin}: MAC {mac} is not the spec's "
                                f"nics[0].mac {self.config.nics[0].mac}")
        return nic_device_args(self.config, 0, netdev_id)
