"""An FT server's copy on one CoServer as a libvirt domain: the spec, resolved for that host, in libvirt's XML.

The guest must see the same machine under libvirt as under the qemu backend (hardware/argv.py), so
every guest-visible choice there is made the same way here:

- identity: ``<sysinfo type='smbios'>`` carries hardware.argv.smbios_tables()'s values for types 0-3
  and ``<os><smbios mode='sysinfo'/>`` makes QEMU use them. libvirt drops an *empty* entry, and an
  entry left out lets QEMU fill in its default (the machine type as the system version, "QEMU" as
  the processor maker), so the keys argv sets to "" and types 4 and 17 (which libvirt cannot express)
  go into ``<qemu:commandline>`` as the same ``-smbios`` options: QEMU applies the later option's keys
  over libvirt's.
- devices at the PCI slots argv gives them (NICs 0x03+, storage controllers 0x0b-0x0e, virtio-blk
  0x10+, extra devices 0x18+); no option ROM on NICs; no USB controller, no memory balloon, no
  display (argv runs QEMU with -nodefaults and adds none of them); ACPI on (server stop presses the
  guest's power button).
- virtio NICs use QEMU's own virtio-net (``<driver name='qemu'/>``): libvirt would pick in-kernel
  vhost when it can, whose packets COLO's filters never see (hardware.devices).

What libvirt cannot express (the COLO block graph, -incoming, COLO objects) the caller passes as
``qemu_args``; a second QMP monitor for the controller is added the same way. Everything is built
with ElementTree: no input is pasted into XML text.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

from coserver.errors import clip
from coserver.hardware.argv import EXTRA_SLOT, HBA, NIC_SLOT, VIRTIO_BLK_SLOT, smbios_tables
from coserver.hardware.config import MachineConfig, resolve
from coserver.hardware.spec import FTServerSpec
from coserver.libvirt import metadata
from coserver.libvirt.errors import LibvirtError
from coserver.libvirt.metadata import ServerTag
from coserver.machine.qemuopts import qemu_opt_value

QEMU_NAMESPACE = "http://libvirt.org/schemas/domain/qemu/1.0"
#: libvirt's <sysinfo> block for each SMBIOS type it can express.
SYSINFO_BLOCKS = {0: "bios", 1: "system", 2: "baseBoard", 3: "chassis"}
#: Domain type per accelerator (coserver's site `accel`).
DOMAIN_TYPES = {"kvm": "kvm", "tcg": "qemu"}
#: hardware NIC model -> libvirt's <model type=...>.
NIC_MODELS = {"virtio-net-pci": "virtio", "e1000": "e1000", "e1000e": "e1000e", "rtl8139": "rtl8139"}
#: hardware disk bus -> libvirt controller (type, model) for the buses with a controller.
CONTROLLERS = {"virtio-scsi": ("scsi", "virtio-scsi"), "megasas": ("scsi", "lsisas1078"),
               "megasas-gen2": ("scsi", "lsisas2108"), "ahci": ("sata", None)}
QMP_CHARDEV = "coserver-qmp"
CPUSET = r"\^?[0-9]+(-[0-9]+)?(,\^?[0-9]+(-[0-9]+)?)*"


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    e = ET.SubElement(parent, tag, attrs)
    if text is not None:
        e.text = text
    return e


def _pci(parent: ET.Element, slot: int) -> None:
    _sub(parent, "address", type="pci", domain="0x0000", bus="0x00", slot=f"0x{slot:02x}", function="0x0")


def _family(machine: str) -> str:
    return "q35" if "q35" in machine else "pc"


def sysinfo(config: MachineConfig) -> tuple[ET.Element, list[str]]:
    """The <sysinfo type='smbios'> element and the -smbios options for what it cannot carry."""
    info = ET.Element("sysinfo", {"type": "smbios"})
    extra: list[str] = []
    for kind, pairs in smbios_tables(config):
        block_name = SYSINFO_BLOCKS.get(kind)
        leftover = [(k, v) for k, v in pairs if v is not None and (block_name is None or v == "")]
        kept = [(k, v) for k, v in pairs if v and block_name is not None]
        if kept and block_name is not None:
            block = _sub(info, block_name)
            for key, value in kept:
                _sub(block, "entry", value, name=key)
        if leftover:
            extra += ["-smbios", ",".join([f"type={kind}"] + [f"{k}={qemu_opt_value(v)}" for k, v in leftover])]
    return info, extra


def qmp_monitor_args(path: str | Path) -> list[str]:
    """A second QMP monitor (libvirt keeps the first): the controller's, on a unix socket at `path`."""
    p = Path(path)
    if not p.is_absolute() or "\0" in str(p):
        raise LibvirtError(f"QMP socket {clip(str(p), quote=repr)}: must be an absolute path")
    return ["-chardev", f"socket,id={QMP_CHARDEV},path={qemu_opt_value(p)},server=on,wait=off",
            "-mon", f"chardev={QMP_CHARDEV},mode=control"]


def _os(root: ET.Element, config: MachineConfig) -> None:
    os_ = _sub(root, "os")
    _sub(os_, "type", "hvm", arch="x86_64", machine=config.machine)
    b = config.boot
    if b.mode == "kernel":
        if b.kernel is None:
            raise LibvirtError(f"{config.origin}: no kernel path for host {config.host} (resolve the spec "
                               "for this CoServer first)")
        _sub(os_, "kernel", str(b.kernel))
        if b.initrd is not None:
            _sub(os_, "initrd", str(b.initrd))
        if b.append:
            _sub(os_, "cmdline", b.append)
    _sub(os_, "smbios", mode="sysinfo")


def _cpu(root: ET.Element, config: MachineConfig, cpuset: str | None) -> None:
    c = config.cpu
    slots = c.sockets * c.cores * c.threads
    attrs = {"placement": "static"}
    if c.vcpus < slots:
        attrs["current"] = str(c.vcpus)
    if cpuset is not None:
        if not re.fullmatch(CPUSET, cpuset):
            raise LibvirtError(f"cpuset {clip(cpuset, quote=repr)}: must be host CPUs like 2-3 or 0,2,4")
        attrs["cpuset"] = cpuset
    _sub(root, "vcpu", str(slots), **attrs)
    cpu = _sub(root, "cpu", mode="custom", match="exact", check="none")
    _sub(cpu, "model", c.model, fallback="forbid")
    _sub(cpu, "topology", sockets=str(c.sockets), dies="1", cores=str(c.cores), threads=str(c.threads))


def _storage(devices: ET.Element, config: MachineConfig) -> None:
    """Controllers (argv's slots), disks in guest order, the CD-ROM."""
    q35 = _family(config.machine) == "q35"
    index: dict[str, int] = {}
    next_index = {"scsi": 0, "sata": 1 if q35 else 0}   # q35's own SATA controller is sata index 0
    for bus in dict.fromkeys(d.bus for d in config.disks):
        if bus in CONTROLLERS:
            kind, model = CONTROLLERS[bus]
            index[bus] = next_index[kind]
            next_index[kind] += 1
            ctl = _sub(devices, "controller", type=kind, index=str(index[bus]), **({"model": model} if model else {}))
            _pci(ctl, HBA[bus][2])
    vd = sd = 0
    for i, d in enumerate(config.disks):
        if d.path is None:
            raise LibvirtError(f"{config.origin}: no path for disks[{i}] on host {config.host}")
        disk = _sub(devices, "disk", type="file", device="disk")
        _sub(disk, "driver", name="qemu", type=d.format)
        _sub(disk, "source", file=str(d.path))
        unit = sum(1 for x in config.disks[:i] if x.bus == d.bus)
        if d.bus == "virtio-blk":
            _sub(disk, "target", dev=f"vd{chr(ord('a') + vd)}", bus="virtio")
            vd += 1
        else:
            kind = CONTROLLERS[d.bus][0]
            _sub(disk, "target", dev=f"sd{chr(ord('a') + sd)}", bus=kind)
            sd += 1
        if d.serial:
            _sub(disk, "serial", d.serial)
        if i == 0 and config.boot.mode == "disk":
            _sub(disk, "boot", order="1")
        if d.bus == "virtio-blk":
            _pci(disk, VIRTIO_BLK_SLOT + unit)
        elif d.bus == "ahci":
            _sub(disk, "address", type="drive", controller=str(index[d.bus]), bus=str(unit), target="0", unit="0")
        else:   # scsi-hd at scsi-id=unit, lun 0, as argv
            _sub(disk, "address", type="drive", controller=str(index[d.bus]), bus="0", target=str(unit), unit="0")
    if config.cdrom is not None:
        if config.cdrom.path is None:
            raise LibvirtError(f"{config.origin}: no CD-ROM path on host {config.host}")
        cd = _sub(devices, "disk", type="file", device="cdrom")
        _sub(cd, "driver", name="qemu", type="raw")
        _sub(cd, "source", file=str(config.cdrom.path))
        if q35:   # argv: bus=ide.2, the ICH9 SATA controller's port 2
            _sub(cd, "target", dev=f"sd{chr(ord('a') + sd)}", bus="sata")
            _sub(cd, "readonly")
            _sub(cd, "address", type="drive", controller="0", bus="0", target="0", unit="2")
        else:     # argv: bus=ide.1,unit=0, the PIIX secondary master
            _sub(cd, "target", dev="hdc", bus="ide")
            _sub(cd, "readonly")
            _sub(cd, "address", type="drive", controller="0", bus="1", target="0", unit="0")


def _nics(devices: ET.Element, config: MachineConfig) -> None:
    for n in config.nics:
        if n.bridge is None:
            raise LibvirtError(f"{config.origin}: no bridge for nics[{n.index}] on host {config.host}")
        iface = _sub(devices, "interface", type="bridge")
        _sub(iface, "mac", address=n.mac)
        _sub(iface, "source", bridge=n.bridge)
        _sub(iface, "model", type=NIC_MODELS[n.model])
        if n.model == "virtio-net-pci":
            _sub(iface, "driver", name="qemu")   # never vhost: COLO's filters must see every packet
        _sub(iface, "rom", enabled="no")
        _pci(iface, NIC_SLOT + n.index)


def _extra(devices: ET.Element, config: MachineConfig) -> None:
    slot = EXTRA_SLOT
    for kind in config.devices:
        if kind == "pvpanic":
            _sub(devices, "panic", model="isa")
        elif kind == "i6300esb":
            wd = _sub(devices, "watchdog", model="i6300esb", action="reset")
            _pci(wd, slot)
            slot += 1
        else:
            raise LibvirtError(f"{config.origin}: device {kind!r} has no libvirt form here")


def domain_xml(config: MachineConfig, tag: ServerTag, *, qmp_socket: str | Path, accel: str = "kvm",
               qemu_args: Sequence[str] = (), emulator: str | Path | None = None, cpuset: str | None = None,
               disks: bool = True, serial_log: str | Path | None = None) -> str:
    """The libvirt domain XML of FT server `config` (resolved for one CoServer: host-local paths
    and bridges filled in) as that host's copy.

    tag: coserver's metadata (site, name, role, epoch, start token); its name must be the config's.
    qmp_socket: where the controller's own QMP monitor listens. qemu_args: extra QEMU arguments
    (the COLO ones), after everything libvirt generates. disks=False leaves the disks and their
    controllers to qemu_args (COLO's quorum/replication graph). cpuset: host CPUs for the vCPUs.
    serial_log: a file that keeps everything the guest writes to its serial console, appended (the
    console stays a pty for `virsh console`): a guest's kernel crash report, and the qemu backend's
    serial.log, whichever backend runs it.
    """
    if config.host is None:
        raise LibvirtError(f"{config.origin}: resolve the spec for one CoServer first (config.host is unset)")
    if tag.name != config.name:
        raise LibvirtError(f"{config.origin}: metadata names FT server {tag.name!r}, the spec {config.name!r}")
    if accel not in DOMAIN_TYPES:
        raise LibvirtError(f"accelerator {clip(accel, quote=repr)}: must be one of {', '.join(DOMAIN_TYPES)}")
    bad = [a for a in qemu_args if not isinstance(a, str) or "\0" in a]
    if bad:
        raise LibvirtError("qemu_args: every argument must be a string without NUL characters")
    metadata.register_prefixes()
    ET.register_namespace("qemu", QEMU_NAMESPACE)

    root = ET.Element("domain", {"type": DOMAIN_TYPES[accel]})
    _sub(root, "name", config.name)
    _sub(root, "uuid", config.smbios.uuid)
    _sub(root, "metadata").append(metadata.element(tag))
    _sub(root, "memory", str(config.memory_mib), unit="MiB")
    _sub(root, "currentMemory", str(config.memory_mib), unit="MiB")
    _cpu(root, config, cpuset)
    info, smbios_extra = sysinfo(config)
    root.append(info)
    _os(root, config)
    features = _sub(root, "features")
    _sub(features, "acpi")
    _sub(features, "apic")
    _sub(root, "clock", offset="utc")
    _sub(root, "on_poweroff", "destroy")
    _sub(root, "on_reboot", "restart")
    _sub(root, "on_crash", "destroy")

    devices = _sub(root, "devices")
    if emulator is not None:
        _sub(devices, "emulator", str(emulator))
    _sub(devices, "controller", type="usb", model="none")
    if disks:
        _storage(devices, config)
    _nics(devices, config)
    serial = _sub(devices, "serial", type="pty")
    if serial_log is not None:
        _sub(serial, "log", file=str(serial_log), append="on")
    _sub(serial, "target", port="0")
    console = _sub(devices, "console", type="pty")
    _sub(console, "target", type="serial", port="0")
    _extra(devices, config)
    _sub(devices, "memballoon", model="none")

    cmdline = ET.SubElement(root, f"{{{QEMU_NAMESPACE}}}commandline")
    for arg in [*smbios_extra, *qmp_monitor_args(qmp_socket), *qemu_args]:
        ET.SubElement(cmdline, f"{{{QEMU_NAMESPACE}}}arg", {"value": arg})
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"


def domain_xml_for_spec(spec: FTServerSpec, host: str, tag: ServerTag, *, qmp_socket: str | Path,
                        accel: str = "kvm", qemu_args: Sequence[str] = (), emulator: str | Path | None = None,
                        cpuset: str | None = None, disks: bool = True, serial_log: str | Path | None = None) -> str:
    """domain_xml() of `spec` resolved for CoServer `host`."""
    return domain_xml(resolve(spec, host), tag, qmp_socket=qmp_socket, accel=accel, qemu_args=qemu_args,
                      emulator=emulator, cpuset=cpuset, disks=disks, serial_log=serial_log)
