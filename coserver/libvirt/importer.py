"""An existing libvirt domain's XML -> an FT server spec, or every reason it cannot be one.

``coserver libvirt import`` reads a domain's persistent XML and writes the spec that makes the
same guest an FT server: memory, vCPUs and topology, CPU model, disks (bus, format, serial, image
path), NICs (model, MAC, bridge), direct kernel boot, watchdog/panic devices and the SMBIOS identity
the guest saw (serial, BIOS version, SKU, asset tag...).

Two kinds of problems are collected, every one of them, before anything is written:

- *refused for COLO*: the device's state or data path is outside QEMU (host PCI/USB pass-through,
  vhost-user, in-kernel vhost-vsock, host directories, a TPM...), so COLO can neither checkpoint it
  nor keep the two CoServers' copies in step (reasons from hardware.devices where it has them);
- *not expressible*: a spec has no way to say it (a block device or network storage as a disk, an
  IDE disk, UEFI firmware, more than one NUMA node, macvtap NICs, ...).

Each is one line naming the domain, the element and the reason; any of them and no spec is made.
What a spec leaves out without changing the guest's hardware in a way that matters (a display,
the memory balloon, a guest-agent channel) is dropped with a note, as are identity strings the
profile fixes (a spec can override the serial, BIOS version, SKU..., not the manufacturer).

The hardware profile: the one whose SMBIOS product the domain already shows (an imported
"ProLiant DL380 G7" stays one), else ``profile=`` if given, else the first shipped profile, DL380
first and oldest generation first, whose chipset (pc/q35) and real box fit the domain's sockets,
cores, threads, memory and NIC count. The spec is checked with hardware.spec.load_spec before it
is returned, so what comes out is a spec ``coserver hardware check`` reads.
"""

from __future__ import annotations

import re
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coserver import __version__
from coserver.errors import clip
from coserver.hardware import devices
from coserver.hardware.errors import HardwareError
from coserver.hardware.profile import (
    BIOS_DATE,
    BIOS_RELEASE,
    CPU_MODEL,
    CPU_MODEL_REFUSED,
    SMBIOS_TEXT,
    Profile,
    get_profile,
    list_profiles,
)
from coserver.hardware.spec import (
    BRIDGE,
    DISK_SERIAL,
    HOST_NAME,
    MAC,
    MACHINE_VERSIONS,
    MIN_MEMORY_MIB,
    NAME,
    SERIAL,
    UUID,
    load_spec,
)
from coserver.libvirt import spectext
from coserver.libvirt.errors import ImportRefused, LibvirtError
from coserver.libvirt.metadata import domain_root

#: libvirt's memory units -> bytes.
UNITS = {"b": 1, "bytes": 1, "k": 1024, "KiB": 1024, "KB": 1000, "M": 1024**2, "MiB": 1024**2, "MB": 1000**2,
         "G": 1024**3, "GiB": 1024**3, "GB": 1000**3, "T": 1024**4, "TiB": 1024**4, "TB": 1000**4}
#: libvirt's interface models -> the spec's NIC models.
NIC_MODELS = {"virtio": "virtio-net-pci", "e1000": "e1000", "e1000e": "e1000e", "rtl8139": "rtl8139"}
#: libvirt's SCSI controller models -> the spec's disk buses.
SCSI_MODELS = {"virtio-scsi": "virtio-scsi", "lsisas1078": "megasas", "lsisas2108": "megasas-gen2"}
#: Profiles tried for a domain that names none, in this order of families (then oldest first).
FAMILY_ORDER = ("dl380", "dl360", "dl580")
#: Devices a spec leaves out with a note: what the guest loses, in a few words.
DROPPED = {
    "graphics": "a display (an FT server has a serial console only)",
    "video": "its video adapter (an FT server has no display)",
    "sound": "its sound card", "audio": "its audio backend",
    "channel": "a channel (guest agent or SPICE): not in an FT server's hardware",
    "rng": "its virtio-rng device (the spec has none)",
    "hub": "a USB hub", "iommu": "a virtual IOMMU (the spec has none)",
    "parallel": "a parallel port", "crypto": "a virtio-crypto device",
    "lease": "a lock-manager lease", "nvram": "nvram",
}
#: Devices COLO cannot keep in step, and why (beyond hostdev/interface/disk, handled apart).
COLO_DEVICES = {
    "redirdev": devices.REFUSED["usb-redir"],
    "smartcard": devices.REFUSED["ccid-card-passthru"],
    "tpm": "a TPM's state lives in the host's TPM or an swtpm process, outside QEMU's COLO checkpoints",
    "shmem": "shared memory (ivshmem) is written by processes outside QEMU, which COLO neither "
             "checkpoints nor copies to the other CoServer",
    "vsock": "vhost-vsock: " + devices.REFUSED_PREFIXES[2][1],
}


@dataclass
class Imported:
    """A spec made from a domain: its TOML text and what changed on the way."""

    domain: str
    name: str
    profile: str
    text: str
    notes: list[str] = field(default_factory=list)


class _Reader:
    """Reads one <domain>; collects refusals and notes as it goes."""

    def __init__(self, root: ET.Element, networks: Mapping[str, str]) -> None:
        self.root = root
        self.domain = root.findtext("name") or "?"
        self.networks = networks
        self.refusals: list[str] = []
        self.notes: list[str] = []

    # -- collecting ---------------------------------------------------------------------------
    def colo(self, where: str, reason: str) -> None:
        self.refusals.append(f"domain {self.domain!r}: {where}: refused for COLO: {reason}")

    def cannot(self, where: str, why: str) -> None:
        self.refusals.append(f"domain {self.domain!r}: {where}: an FT server spec cannot express it: {why}")

    def note(self, text: str) -> None:
        self.notes.append(text)

    # -- sections ------------------------------------------------------------------------------
    def domain_type(self) -> None:
        kind = self.root.get("type")
        if kind not in ("kvm", "qemu"):
            self.cannot(f"<domain type={kind!r}>", "FT servers run on QEMU (domain type kvm or qemu)")

    def machine(self) -> tuple[str | None, str]:
        """(spec machine or None if refused, chipset family 'pc'/'q35')."""
        t = self.root.find("os/type")
        arch = t.get("arch", "x86_64") if t is not None else "x86_64"
        machine = (t.get("machine") if t is not None else None) or "pc"
        if arch != "x86_64":
            self.cannot(f"<os><type arch={arch!r}>", "FT servers are x86_64 machines")
        if t is not None and (t.text or "hvm").strip() != "hvm":
            self.cannot(f"<os><type>{clip((t.text or '').strip())}</type>", "FT servers are full (hvm) virtual machines")
        for family, pattern in MACHINE_VERSIONS.items():
            if re.fullmatch(pattern, machine):
                if machine == family:
                    self.note(f"machine {machine!r} is not pinned to a version: pin it (e.g. pc-i440fx-7.2) when the "
                              "two CoServers may run different QEMU versions")
                return machine, family
        self.cannot(f"<os><type machine={clip(machine, quote=repr)}>",
                    "FT servers use the pc (i440FX) or q35 machine, versioned like pc-i440fx-7.2 or pc-q35-7.2")
        return None, "pc"

    def firmware(self) -> None:
        os_ = self.root.find("os")
        if os_ is None:
            return
        if os_.get("firmware") == "efi" or os_.find("loader") is not None or os_.find("nvram") is not None:
            self.cannot("<os> firmware (UEFI <loader>/<nvram>)",
                        "FT servers boot SeaBIOS; a UEFI guest would not boot")
        first = os_.find("boot")
        if first is not None and first.get("dev") not in (None, "hd"):
            self.note(f"<os><boot dev={first.get('dev')!r}> dropped: an FT server boots its first disk (or a kernel)")

    def boot(self) -> dict[str, Any] | str:
        os_ = self.root.find("os")
        kernel = os_.findtext("kernel") if os_ is not None else None
        if not kernel:
            return "disk"
        boot: dict[str, Any] = {"mode": "kernel", "kernel": kernel.strip()}
        initrd = os_.findtext("initrd") if os_ is not None else None
        if initrd:
            boot["initrd"] = initrd.strip()
        cmdline = (os_.findtext("cmdline") if os_ is not None else None) or ""
        if not re.fullmatch(r"[\x20-\x7e]*", cmdline):
            self.cannot("<os><cmdline>", "a kernel command line of printable ASCII")
        boot["append"] = cmdline
        for k in ("kernel", "initrd"):
            if k in boot and not Path(boot[k]).is_absolute():
                self.cannot(f"<os><{k}>", f"{clip(boot[k], quote=repr)} is not an absolute path")
        return boot

    def memory_mib(self) -> int | None:
        mem = self.root.find("memory")
        if mem is None or not _digits((mem.text or "").strip()):
            self.cannot("<memory>", "the domain gives no memory size in whole units")
            return None
        unit = mem.get("unit", "KiB")
        if unit not in UNITS:
            self.cannot(f"<memory unit={clip(unit, quote=repr)}>", f"unknown unit (libvirt's: {', '.join(UNITS)})")
            return None
        total = int((mem.text or "0").strip()) * UNITS[unit]
        mib = total // 2**20
        if total % 2**20:
            self.note(f"memory: {total} bytes is not whole MiB; the spec says {mib} MiB")
        if self.root.find("maxMemory") is not None:
            self.cannot("<maxMemory>", "memory hotplug (the spec's memory is fixed)")
        current = self.root.find("currentMemory")
        if current is not None and _digits((current.text or "").strip()):
            cur = int((current.text or "0").strip()) * UNITS.get(current.get("unit", "KiB"), 1024)
            if cur != total:
                self.note(f"<currentMemory> ({cur // 2**20} MiB, a balloon target) dropped: the guest gets all "
                          f"{mib} MiB")
        if mib < MIN_MEMORY_MIB:
            self.cannot("<memory>", f"{mib} MiB: an FT server has at least {MIN_MEMORY_MIB} MiB")
        if self.root.find("memoryBacking") is not None:
            self.note("<memoryBacking> dropped (hugepages, memfd...): host-local, not part of the spec")
        if self.root.find("numatune") is not None:
            self.note("<numatune> dropped: host-local placement, not part of the spec")
        return mib

    def cpu(self) -> dict[str, Any] | None:
        vcpu = self.root.find("vcpu")
        text = (vcpu.text or "1").strip() if vcpu is not None else "1"
        if not _digits(text) or int(text) < 1 or int(text) > 4096:
            self.cannot("<vcpu>", f"{clip(text, quote=repr)} is not a vCPU count")
            return None
        slots = int(text)
        current = vcpu.get("current") if vcpu is not None else None
        vcpus = int(current) if current and _digits(current) else slots
        if vcpu is not None and vcpu.get("cpuset"):
            self.note(f"<vcpu cpuset={vcpu.get('cpuset')!r}> dropped: pinning is each CoServer's own choice")
        if self.root.find("cputune") is not None:
            self.note("<cputune> dropped: host-local tuning, not part of the spec")
        out: dict[str, Any] = {}
        cpu = self.root.find("cpu")
        mode = cpu.get("mode", "custom") if cpu is not None else None
        if cpu is None or (mode == "custom" and cpu.find("model") is None):
            out["model"] = "qemu64"
            self.note("no <cpu><model>: the spec says qemu64, QEMU's default x86_64 CPU")
        elif mode in ("host-passthrough", "host-model", "maximum"):
            self.colo(f"<cpu mode={mode!r}>", CPU_MODEL_REFUSED["host" if mode != "maximum" else "max"])
        else:
            model = (cpu.findtext("model") or "").strip()
            if model in CPU_MODEL_REFUSED:
                self.colo(f"<cpu><model>{model}</model>", CPU_MODEL_REFUSED[model])
            elif not re.fullmatch(CPU_MODEL, model):
                self.cannot("<cpu><model>", f"{clip(model, quote=repr)} is not a QEMU CPU model name")
            out["model"] = model
        if cpu is not None:
            features = [f.get("name", "?") for f in cpu.findall("feature")]
            if features:
                self.note(f"<cpu><feature> dropped ({', '.join(features[:6])}{'...' if len(features) > 6 else ''}): "
                          "the guest sees the plain model")
            cells = cpu.findall("numa/cell")
            if len(cells) > 1:
                self.cannot("<cpu><numa>", f"{len(cells)} NUMA nodes: an FT server's guest is one NUMA node")
        topo = cpu.find("topology") if cpu is not None else None
        if topo is not None:
            def num(k: str) -> int:
                v = topo.get(k, "1")
                return int(v) if _digits(v) else 0
            sockets, cores, threads = num("sockets"), num("cores"), num("threads")
            if num("dies") != 1 or num("clusters") != 1:
                self.cannot("<cpu><topology>", "dies or clusters other than 1 (the spec has sockets, cores, threads)")
            if sockets * cores * threads != slots:
                self.cannot("<cpu><topology>", f"{sockets}*{cores}*{threads} does not make the {slots} vCPUs")
        else:   # libvirt's own default: one socket per vCPU
            sockets, cores, threads = slots, 1, 1
        out.update(sockets=sockets, cores=cores, threads=threads)
        if vcpus != slots:
            out["vcpus"] = vcpus
        return out

    def sysinfo(self) -> dict[str, dict[str, str]]:
        """What the guest sees of <sysinfo type='smbios'> (only with <os><smbios mode='sysinfo'/>)."""
        mode_el = self.root.find("os/smbios")
        mode = mode_el.get("mode") if mode_el is not None else None
        info = self.root.find("sysinfo[@type='smbios']")
        if mode == "host":
            self.note("<os><smbios mode='host'>: the guest saw this host's identity; it will see the profile's, the "
                      "same on both CoServers")
        if mode != "sysinfo" or info is None:
            return {}
        out: dict[str, dict[str, str]] = {}
        for block in info:
            entries = {e.get("name", ""): (e.text or "").strip() for e in block.findall("entry")}
            out[block.tag] = {k: v for k, v in entries.items() if v}
        return out

    def hostdev(self, dev: ET.Element) -> None:
        kind = dev.get("type", "?")
        where = f"<hostdev type={kind!r}>"
        addr = dev.find("source/address")
        if addr is not None and kind == "pci":
            parts = [_number(addr.get(k)) for k in ("domain", "bus", "slot", "function")]
            if None not in parts:
                d, b, sl, f = (p or 0 for p in parts)
                where += f" {d:04x}:{b:02x}:{sl:02x}.{f:x}"
        elif addr is not None and kind == "usb":
            where += f" bus {addr.get('bus', '?')} device {addr.get('device', '?')}"
        vendor, product = dev.find("source/vendor"), dev.find("source/product")
        if kind == "usb" and vendor is not None:
            where += f" {vendor.get('id', '?')}:{product.get('id', '?') if product is not None else '?'}"
        reason = devices.REFUSED["usb-host"] if kind == "usb" else devices.REFUSED["pci-assign"]
        self.colo(where, reason)

    def disks(self, hosts: tuple[str, str]) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        out: list[dict[str, Any]] = []
        cdrom: dict[str, Any] | None = None
        for n, d in enumerate(self.root.findall("devices/disk")):
            device, kind = d.get("device", "disk"), d.get("type", "file")
            target = d.find("target")
            dev = target.get("dev", f"#{n}") if target is not None else f"#{n}"
            bus = target.get("bus", "") if target is not None else ""
            where = f"<disk device={device!r}> {dev}"
            src = d.find("source")
            path = None
            if src is not None:
                path = src.get("file") if kind == "file" else src.get("dev") or src.get("name") or src.get("dir")
            if device == "lun":
                self.colo(where, "SCSI LUN pass-through: " + devices.REFUSED["pci-assign"].split(": ", 1)[1])
                continue
            if device == "floppy":
                self.cannot(where, "a floppy drive (the spec has disks and one CD-ROM)")
                continue
            if kind == "block":
                self.cannot(f"{where} type='block' ({path})", "a host block device; spec disks are image files "
                            "(qcow2 or raw) that COLO's block layer opens as files")
                continue
            if kind == "network":
                proto = src.get("protocol", "?") if src is not None else "?"
                self.cannot(f"{where} type='network' (protocol {proto})", "network storage; spec disks are image files "
                            "on each CoServer")
                continue
            if kind == "nvme":
                self.colo(f"{where} type='nvme'", devices.REFUSED["pci-assign"])
                continue
            if kind == "vhostuser":
                self.colo(f"{where} type='vhostuser'", devices.REFUSED_PREFIXES[1][1])
                continue
            if kind != "file":
                self.cannot(f"{where} type={kind!r}", "spec disks are image files (use the volume's file path)")
                continue
            fmt_el = d.find("driver")
            fmt = fmt_el.get("type") if fmt_el is not None else None
            if device == "cdrom":
                if not path:
                    self.note(f"{where}: an empty CD-ROM drive dropped")
                    continue
                if cdrom is not None:
                    self.cannot(where, "a second CD-ROM (a spec has one)")
                    continue
                cdrom = {"path": path}
                self.note(f"[cdrom] {path}: the same ISO must be on both CoServers (add sha256 = \"...\" to check it)")
                continue
            if device != "disk":
                self.cannot(where, f"device {device!r}")
                continue
            if not path:
                self.cannot(where, "no image file")
                continue
            if not Path(path).is_absolute():
                self.cannot(where, f"{clip(path, quote=repr)} is not an absolute path")
            if fmt is None:
                fmt = "raw"
                self.note(f"{where}: no <driver type>: the spec says raw, libvirt's default")
            elif fmt not in ("qcow2", "raw"):
                self.cannot(f"{where} format {fmt!r}", "spec disks are qcow2 or raw (convert with qemu-img convert)")
            spec_bus = self._disk_bus(d, bus, where)
            if d.find("shareable") is not None:
                self.colo(f"{where} <shareable/>", "a disk shared with other guests changes under COLO's "
                          "replication, which keeps one guest's disk in step")
            if d.find("transient") is not None:
                self.cannot(f"{where} <transient/>", "a disk whose writes are thrown away at shutdown")
            if d.find("readonly") is not None:
                self.cannot(f"{where} <readonly/>", "a read-only disk (the spec's disks are writable)")
            if d.find("encryption") is not None or (src is not None and src.find("encryption") is not None):
                self.cannot(f"{where} <encryption>", "an encrypted image (the spec has no secrets)")
            disk: dict[str, Any] = {"bus": spec_bus or "virtio-blk", "format": fmt}
            serial = d.findtext("serial")
            if serial is not None:
                if re.fullmatch(DISK_SERIAL, serial.strip()):
                    disk["serial"] = serial.strip()
                else:
                    self.cannot(f"{where} <serial>", f"{clip(serial, quote=repr)}: a spec disk serial is 1 to 20 of "
                                "[A-Za-z0-9_.-]")
            for extra in ("wwn", "vendor", "product"):
                if d.find(extra) is not None:
                    self.note(f"{where}: <{extra}> dropped (the spec sets a disk's serial only)")
            disk["path"] = path
            out.append(disk)
        if len(out) > 1 and out[0]["path"] != (self._first_boot_disk() or out[0]["path"]):
            self.note("the disk with <boot order='1'> is not the first: an FT server boots disks[0]")
        if out:
            self.note(f"disk paths are this host's: {hosts[0]} and {hosts[1]} each need their own copy of every image "
                      f"at that path (or give a [disks.hosts.<name>] path per CoServer)")
        return out, cdrom

    def _first_boot_disk(self) -> str | None:
        for d in self.root.findall("devices/disk"):
            b = d.find("boot")
            if b is not None and b.get("order") == "1":
                src = d.find("source")
                return src.get("file") if src is not None else None
        return None

    def _disk_bus(self, d: ET.Element, bus: str, where: str) -> str | None:
        if bus == "virtio":
            return "virtio-blk"
        if bus == "sata":
            return "ahci"
        if bus == "scsi":
            addr = d.find("address[@type='drive']")
            index = addr.get("controller", "0") if addr is not None else "0"
            ctl = self.root.find(f"devices/controller[@type='scsi'][@index='{index}']")
            model = ctl.get("model") if ctl is not None else None
            if model in SCSI_MODELS:
                return SCSI_MODELS[model]
            self.cannot(f"{where} on SCSI controller {index} (model {model or 'default'})",
                        f"coserver emulates SCSI as {', '.join(SCSI_MODELS)} (virtio-scsi, megasas, megasas-gen2)")
            return None
        self.cannot(f"{where} bus {bus or '?'!r}", f"the spec's disk buses are {', '.join(devices.DISK_BUSES)}")
        return None

    def nics(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for i, iface in enumerate(self.root.findall("devices/interface")):
            kind = iface.get("type", "?")
            mac_el = iface.find("mac")
            mac = mac_el.get("address") if mac_el is not None else None
            where = f"<interface type={kind!r}>" + (f" {mac}" if mac else f" #{i}")
            src = iface.find("source")
            if kind == "vhostuser":
                self.colo(where, devices.REFUSED_PREFIXES[1][1])
                continue
            if kind in ("hostdev", "vdpa"):
                self.colo(where, devices.REFUSED["pci-assign"])
                continue
            bridge: str | None = None
            if kind == "bridge":
                bridge = src.get("bridge") if src is not None else None
            elif kind == "network":
                net = src.get("network") if src is not None else None
                bridge = self.networks.get(net or "")
                if bridge is None:
                    self.cannot(f"{where} network {net!r}", "its bridge is unknown (the network is not active, or "
                                "has none): use <interface type='bridge'>")
                    continue
            else:
                self.cannot(where, "an FT server's NIC is a tap on a bridge (colo-compare watches it there); "
                            f"{kind!r} interfaces are not")
                continue
            if not bridge or not re.fullmatch(BRIDGE, bridge):
                self.cannot(where, f"bridge {clip(str(bridge), quote=repr)} is not a Linux interface name")
                continue
            if not mac or not re.fullmatch(MAC, mac) or int(mac[:2], 16) & 1:
                self.cannot(where, f"MAC {mac!r}: an FT server's NIC needs a fixed unicast MAC")
                continue
            model_el = iface.find("model")
            model = model_el.get("type") if model_el is not None else None
            if model is None:
                model = "rtl8139"
                self.note(f"{where}: no <model>: the spec says rtl8139, libvirt's default for QEMU")
            if model not in NIC_MODELS:
                self.cannot(f"{where} model {model!r}", f"the spec's NIC models are {', '.join(devices.NIC_MODELS)}")
                continue
            driver = iface.find("driver")
            if driver is not None and driver.get("name") == "vhost":
                self.note(f"{where}: <driver name='vhost'> dropped: {devices.VHOST_NET_REASON}")
            if iface.find("virtualport") is not None:
                self.note(f"{where}: <virtualport> dropped: the spec's bridge {bridge!r} is a plain Linux bridge")
            out.append({"mac": mac.lower(), "model": NIC_MODELS[model], "bridge": bridge})
        if not out and not any(r for r in self.refusals if "<interface" in r):
            self.cannot("<devices>", "no NIC: COLO paces its checkpoints by comparing the guest's network output, so "
                        "an FT server needs at least one <interface type='bridge'>")
        return out

    def other_devices(self) -> list[dict[str, str]]:
        extra: list[dict[str, str]] = []
        devs = self.root.find("devices")
        for dev in list(devs) if devs is not None else []:
            tag = dev.tag
            if tag in ("emulator", "disk", "interface", "controller", "console"):
                continue
            if tag == "hostdev":
                self.hostdev(dev)
            elif tag in COLO_DEVICES:
                self.colo(f"<{tag}>", COLO_DEVICES[tag])
            elif tag == "filesystem":
                driver = dev.find("driver")
                target = dev.find("target")
                where = f"<filesystem> {target.get('dir', '?') if target is not None else '?'}"
                if driver is not None and driver.get("type") == "virtiofs":
                    self.colo(where, "virtiofs: " + devices.REFUSED_PREFIXES[1][1])
                else:
                    self.colo(where, "host directory pass-through: the files live on one CoServer, outside QEMU's "
                              "state")
            elif tag == "memory":
                self.cannot(f"<memory model={dev.get('model')!r}>", "hotplugged or device-backed memory (the spec's "
                            "memory is one fixed size)")
            elif tag == "watchdog":
                if dev.get("model") == "i6300esb":
                    extra.append({"type": "i6300esb"})
                    if dev.get("action", "reset") != "reset":
                        self.note(f"<watchdog action={dev.get('action')!r}> dropped: QEMU's default (reset)")
                else:
                    self.cannot(f"<watchdog model={dev.get('model')!r}>", "the spec's watchdog is i6300esb")
            elif tag == "panic":
                if dev.get("model", "isa") == "isa":
                    extra.append({"type": "pvpanic"})
                else:
                    self.cannot(f"<panic model={dev.get('model')!r}>", "the spec's panic notifier is pvpanic (isa)")
            elif tag == "serial":
                if dev.get("type") == "dev":
                    src = dev.find("source")
                    self.colo(f"<serial type='dev'> {src.get('path', '?') if src is not None else '?'}",
                              "a host serial port: its data comes from one CoServer's hardware")
            elif tag == "input":
                if dev.get("bus", "ps2") != "ps2":
                    self.note(f"<input type={dev.get('type')!r} bus={dev.get('bus')!r}> dropped (PS/2 stays)")
            elif tag == "memballoon":
                if dev.get("model") != "none":
                    self.note("<memballoon> dropped: an FT server's memory is fixed (no balloon)")
            elif tag in DROPPED:
                self.note(f"<{tag}> dropped: the guest loses {DROPPED[tag]}")
            else:
                self.note(f"<{tag}> dropped: not part of an FT server's hardware")
        return extra

    def top_level(self) -> None:
        if self.root.find("launchSecurity") is not None:
            self.colo("<launchSecurity>", "encrypted guest memory (SEV/TDX): the host cannot read it to checkpoint it")
        clock = self.root.find("clock")
        if clock is not None and clock.get("offset", "utc") != "utc":
            self.note(f"<clock offset={clock.get('offset')!r}> dropped: an FT server's RTC runs in UTC (a guest that "
                      "keeps local time in its RTC will be off by the zone)")
        features = self.root.find("features")
        if features is not None:
            other = sorted({f.tag for f in features} - {"acpi", "apic", "pae", "vmport", "vmcoreinfo"})
            if other:
                self.note(f"<features> {', '.join(other)} dropped (e.g. Hyper-V enlightenments): not part of the spec")
        for el in self.root:
            if isinstance(el.tag, str) and el.tag.endswith("}commandline"):
                self.note(f"<qemu:commandline> dropped ({len(el)} entries): check what they did")


def _digits(text: str) -> bool:
    """ASCII digits only (str.isdigit() takes '²', which int() refuses), at most 18 of them."""
    return re.fullmatch(r"[0-9]{1,18}", text) is not None


def _number(text: str | None) -> int | None:
    """libvirt's address numbers: decimal or 0x-hex; None if neither."""
    if text is None:
        return 0
    try:
        return int(text, 16) if text.lower().startswith("0x") else int(text, 10)
    except ValueError:
        return None


def _fits(p: Profile, family: str, cpu: dict[str, Any], mib: int, nics: int) -> list[str]:
    """Why profile p cannot hold the domain (empty: it can)."""
    why = []
    if p.machine != family:
        why.append(f"profile {p.name} is a {p.machine} machine, the domain a {family} one")
    r = p.real
    for key, most, what in (("sockets", r.sockets, "sockets"), ("cores", r.cores_per_socket, "cores per socket"),
                            ("threads", r.threads_per_core, "threads per core")):
        if cpu[key] > most:
            why.append(f"a {p.title} has at most {most} {what}, the domain {cpu[key]}")
    if mib > r.max_memory_gib * 1024:
        why.append(f"a {p.title} takes at most {r.max_memory_gib} GiB, the domain has {mib} MiB")
    if nics > r.nic_ports:
        why.append(f"a {p.title} has {r.nic_ports} NIC ports, the domain {nics} NICs")
    return why


def _choose_profile(reader: _Reader, explicit: str | None, family: str, cpu: dict[str, Any], mib: int, nics: int,
                    product: str | None) -> Profile | None:
    profiles = list_profiles()
    if explicit is not None:
        try:
            chosen = get_profile(explicit)
        except HardwareError as exc:
            reader.refusals.append(str(exc))
            return None
        for why in _fits(chosen, family, cpu, mib, nics):
            reader.cannot("--profile", why)
        return chosen
    named = [p for p in profiles if product and p.smbios.product == product]
    if named:
        for why in _fits(named[0], family, cpu, mib, nics):
            reader.cannot(f"profile {named[0].name} (its SMBIOS product {product!r})", why)
        return named[0]
    ordered = sorted(profiles, key=lambda p: (FAMILY_ORDER.index(p.family) if p.family in FAMILY_ORDER
                                              else len(FAMILY_ORDER), profiles.index(p)))
    for p in ordered:
        if not _fits(p, family, cpu, mib, nics):
            reader.note(f"profile {p.name}: the first shipped profile whose chipset ({family}) and size fit "
                        f"(--profile NAME to choose another); the guest will identify as a {p.title}")
            return p
    reader.cannot("hardware profile", f"no shipped profile fits a {family} machine with {cpu['sockets']} sockets x "
                  f"{cpu['cores']} cores x {cpu['threads']} threads, {mib} MiB and {nics} NICs "
                  f"(`coserver hardware list`)")
    return None


def _identity(reader: _Reader, info: dict[str, dict[str, str]], profile: Profile | None, uuid: str) -> tuple[str, dict[str, str]]:
    """(serial, [smbios] overrides) from what the guest saw; notes for what the profile fixes."""
    system, bios = info.get("system", {}), info.get("bios", {})
    chassis, board = info.get("chassis", {}), info.get("baseBoard", {})
    serial = system.get("serial")
    if serial is None or not re.fullmatch(SERIAL, serial):
        made = "CZJ" + uuid.replace("-", "")[:7].upper()
        reader.note(f"serial: the domain's SMBIOS gives {'none' if serial is None else clip(serial, quote=repr)}; "
                    f"the spec says {made} (from its UUID; change it before the guest first boots as an FT server)")
        serial = made
    over: dict[str, str] = {}
    if profile is None:
        return serial, over
    p = profile.smbios

    def text(v: str | None, pattern: str = SMBIOS_TEXT) -> str | None:
        return v if v is not None and len(v) <= 64 and re.fullmatch(pattern, v) else None

    for key, got, default, pattern in (("bios_version", bios.get("version"), p.bios_version, SMBIOS_TEXT),
                                       ("bios_date", bios.get("date"), p.bios_date, BIOS_DATE),
                                       ("bios_release", bios.get("release"), p.bios_release, BIOS_RELEASE),
                                       ("sku", system.get("sku"), p.sku, SMBIOS_TEXT),
                                       ("product_version", system.get("version"), None, SMBIOS_TEXT)):
        if got is not None and got != default:
            if text(got, pattern) is None:
                reader.note(f"SMBIOS {key} {clip(got, quote=repr)} dropped: not a value the spec takes")
            else:
                over[key] = got
    asset = chassis.get("asset") or board.get("asset")
    if asset and text(asset):
        over["asset_tag"] = asset
    if chassis.get("serial") and chassis["serial"] != serial and re.fullmatch(SERIAL, chassis["serial"]):
        over["chassis_serial"] = chassis["serial"]
    if board.get("serial") and board["serial"] != serial and re.fullmatch(SERIAL, board["serial"]):
        if p.board:
            over["board_serial"] = board["serial"]
        else:
            reader.note(f"baseBoard serial dropped: profile {profile.name} has no SMBIOS board (type 2)")
    fixed = [(what, got, want) for what, got, want in (
        ("system manufacturer", system.get("manufacturer"), p.manufacturer),
        ("system product", system.get("product"), p.product),
        ("system family", system.get("family"), p.family),
        ("BIOS vendor", bios.get("vendor"), p.bios_vendor)) if got is not None and got != want]
    if fixed:
        reader.note("the profile fixes what a spec cannot override: " + "; ".join(
            f"{what} {clip(got, quote=repr)} -> {want!r}" for what, got, want in fixed))
    return serial, over


def _name(reader: _Reader, explicit: str | None) -> str:
    name = explicit if explicit is not None else reader.domain
    if re.fullmatch(NAME, name):
        return name
    if explicit is not None:
        reader.cannot("--name", f"{clip(name, quote=repr)}: an FT server's name is 1 to 63 of [a-z0-9-]")
        return name
    made = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:63].strip("-")
    if not made:
        reader.cannot("<name>", f"{clip(name, quote=repr)}: cannot make an FT server name ([a-z0-9-]) of it: give --name")
        return name
    reader.note(f"name: {name!r} is not an FT server name ([a-z0-9-]): the spec says {made!r} (its libvirt domain "
                "will be called that)")
    return made


def import_domain(domain_xml: str, *, coservers: Sequence[str] = ("cs1", "cs2"), profile: str | None = None,
                  name: str | None = None, networks: Mapping[str, str] | None = None) -> Imported:
    """The FT server spec for the domain in `domain_xml` (its persistent XML), or ImportRefused with
    every reason it cannot be one (one line each).

    coservers: the site's two CoServers (the spec names them). networks: libvirt network name ->
    its bridge, for <interface type='network'> (the caller asks libvirt; the importer never does).
    """
    root = domain_root(domain_xml)
    hosts = tuple(coservers)
    if len(hosts) != 2 or hosts[0] == hosts[1] or not all(re.fullmatch(HOST_NAME, h) for h in hosts):
        raise LibvirtError(f"coservers {', '.join(hosts)}: give two different CoServer names ([a-z0-9-])")
    r = _Reader(root, networks or {})
    r.domain_type()
    spec_name = _name(r, name)
    uuid = (root.findtext("uuid") or "").strip().lower()
    if not re.fullmatch(UUID, uuid):
        r.cannot("<uuid>", f"{clip(uuid, quote=repr)} is not a UUID")
    machine, family = r.machine()
    r.firmware()
    mib = r.memory_mib()
    cpu = r.cpu()
    info = r.sysinfo()
    disks, cdrom = r.disks((hosts[0], hosts[1]))
    nics = r.nics()
    extra = r.other_devices()
    r.top_level()
    boot = r.boot()
    if boot == "disk" and not disks:
        r.cannot("<devices>", "no disk to boot from (and no <os><kernel>)")
    chosen = None
    if cpu is not None and mib is not None:
        chosen = _choose_profile(r, profile, family, cpu, mib, len(nics), info.get("system", {}).get("product"))
    serial, smbios = _identity(r, info, chosen, uuid)
    if r.refusals or chosen is None or machine is None or cpu is None or mib is None:
        raise ImportRefused(r.domain, r.refusals or [f"domain {r.domain!r}: cannot be imported"])

    doc: dict[str, Any] = {"name": spec_name, "profile": chosen.name, "coservers": list(hosts), "serial": serial,
                           "uuid": uuid, "machine": machine, "memory_mib": mib}
    if isinstance(boot, str):
        doc["boot"] = boot
    doc["cpu"] = cpu
    if smbios:
        doc["smbios"] = smbios
    if disks:
        doc["disks"] = disks
    if cdrom:
        doc["cdrom"] = cdrom
    doc["nics"] = nics
    if isinstance(boot, dict):
        doc["boot"] = boot
    if extra:
        doc["devices"] = extra
    header = [f"FT server spec imported from libvirt domain {r.domain!r} by `coserver libvirt import` "
              f"(coserver {__version__}).", "Schema: coserver/hardware/spec.py. Check it with `coserver hardware check`."]
    if r.notes:
        header += ["", "What the import changed or dropped:"] + [f"- {n}" for n in r.notes]
    text = spectext.dumps(doc, header)
    _check(r, text)
    return Imported(domain=r.domain, name=spec_name, profile=chosen.name, text=text, notes=r.notes)


def _check(reader: _Reader, text: str) -> None:
    """The spec reads back as a valid spec (else the reader's message is the refusal)."""
    with tempfile.TemporaryDirectory(prefix="coserver-import-") as d:
        path = Path(d) / "spec.toml"
        path.write_text(text)
        try:
            load_spec(path)
        except HardwareError as exc:
            raise ImportRefused(reader.domain, [f"domain {reader.domain!r}: {str(exc).replace(str(path), 'the spec')}"]) \
                from None
