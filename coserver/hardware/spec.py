"""FT server specs: one TOML file per protected server, the single source of its virtual hardware.

Both CoServers read the same spec (a copy on each); everything the guest can see comes from it
and from the profile it names, so the FT server is one stable machine on either host, before and
after failover. Only host-local things (image paths, bridge names) may differ per CoServer, and
they are given per host. Relative paths are relative to the spec file's directory.

Schema (``*`` = required; every other key is optional; unknown keys are errors)::

    name = "journal"              # * [a-z0-9-], at most 63: the FT server's name
    profile = "dl380-g5"          # * a shipped profile (`coserver hardware list`)
    coservers = ["cs1", "cs2"]    # * the two CoServers' names, as used in [*.hosts.<name>]
    serial = "CZJ7300ABC"         # * SMBIOS system serial (types 1, 3; 2 if the profile has one)
    uuid = "6f1c2a7e-3b9d-4c1e-9a55-0c1d2e3f4a5b"   # * SMBIOS type 1 UUID and QEMU -uuid
    machine = "pc-i440fx-7.2"     # pin the versioned machine type; must be the profile's chipset
                                  # (pin it when the two CoServers may run different QEMU versions)
    memory_mib = 256              # guest RAM; default: the profile's [guest] memory_mib

    [cpu]                         # default: the profile's [guest] values
    model = "qemu64"              # QEMU CPU model; "host" and "max" are refused (differ per host)
    sockets = 1                   # each at most what the real box has (profile [real])
    cores = 1
    threads = 1
    vcpus = 1                     # CPUs online at boot; <= sockets*cores*threads (the default)

    [smbios]                      # identity of one particular box, over the profile's defaults
    bios_version = "P56"          # e.g. the ROM family of the box being replaced
    bios_date = "04/26/2010"      # MM/DD/YYYY
    bios_release = "2.30"         # SMBIOS "BIOS Revision", MAJOR.MINOR
    sku = "458564-421"
    product_version = ""          # type 1 version ("" = Not Specified, as HP ships it)
    asset_tag = "ACME-0042"       # type 3 asset tag (and type 2 when the profile has a board)
    board_serial = "..."          # default: serial
    chassis_serial = "..."        # default: serial

    [[disks]]                     # in guest order; disks[0] is the boot disk for boot = "disk"
    bus = "virtio-blk"            # virtio-blk | virtio-scsi | ahci | megasas | megasas-gen2
    format = "qcow2"              # qcow2 | raw (for the image and COLO layers)
    serial = "JRNL-D0"            # guest-visible disk serial, [A-Za-z0-9_.-], at most 20
    path = "/var/lib/coserver/journal/disk0.qcow2"   # same path on both CoServers, or:
    [disks.hosts.cs1]
    path = "/var/lib/coserver/journal/cs1/disk0.qcow2"
    [disks.hosts.cs2]
    path = "/var/lib/coserver/journal/cs2/disk0.qcow2"

    [cdrom]                       # optional read-only ISO, identical on both CoServers
    sha256 = "<64 hex digits>"    # expected digest; each host's file is checked against it
    path = "install.iso"          # or per host: [cdrom.hosts.<name>] path = ...

    [[nics]]                      # 1 to the profile's real NIC port count
    mac = "52:54:00:12:34:56"     # * fixed, unicast; the same on both CoServers
    model = "virtio-net-pci"      # virtio-net-pci | e1000 | e1000e | rtl8139
    vhost = false                 # true is refused: vhost bypasses COLO's packet comparison
    bridge = "br-lan"             # client-LAN bridge, or per host: [nics.hosts.<name>] bridge = ...

    boot = "disk"                 # BIOS boots disks[0]; or direct kernel boot:
    [boot]
    mode = "kernel"               # "disk" | "kernel"
    kernel = "vmlinuz"            # or per host: [boot.hosts.<name>] kernel = ..., initrd = ...
    initrd = "initrd.img"
    append = "console=ttyS0"
    kernel_sha256 = "..."         # optional expected digests, as for the ISO
    initrd_sha256 = "..."

    [[devices]]                   # extra guest devices
    type = "i6300esb"             # i6300esb | pvpanic; pass-through, vhost and USB-host
                                  # types (vfio-*, pci-assign, vhost-*, usb-host...) are refused

    [lab]                         # what the lab reports and its tests connect to
    address = "10.77.0.10"        # the guest's IPv4 address (colo-compare is IPv4 only)
    prefix = 24
    port = 7777                   # the journal service

Validation happens here, before anything starts: schema (unknown keys, types), topology
(positive sizes that fit the profile's real box), COLO compatibility (refused device types with
the reason). Host capacity, local file digests and the two hosts' agreement are checked on the
resolved configurations (coserver.hardware.config / check).
"""

from __future__ import annotations

import ipaddress
import os
import re
import uuid as uuidlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from coserver.errors import clip
from coserver.hardware import devices
from coserver.hardware._toml import Origin, Table, read_toml, show
from coserver.hardware.errors import ColoIncompatibleError, ProfileNotFound, TopologyError
from coserver.hardware.profile import (
    BIOS_DATE,
    BIOS_DATE_WHAT,
    BIOS_RELEASE,
    BIOS_RELEASE_WHAT,
    CPU_MODEL_REFUSED,
    SMBIOS_TEXT,
    SMBIOS_TEXT_WHAT,
    Profile,
    check_cpu_model,
    get_profile,
    profile_names,
)

NAME = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
HOST_NAME = r"[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?"
SERIAL = r"[\x21-\x7e]([\x20-\x7e]{0,62}[\x21-\x7e])?"
SERIAL_WHAT = "1 to 64 printable ASCII characters, no leading or trailing space"
DISK_SERIAL = r"[A-Za-z0-9_.-]{1,20}"
BRIDGE = r"[A-Za-z0-9_.-]{1,15}"
SHA256 = r"[0-9a-fA-F]{64}"
UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
MAC = r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}"
MACHINE_VERSIONS = {"pc": r"pc|pc-i440fx-[0-9]+\.[0-9]+", "q35": r"q35|pc-q35-[0-9]+\.[0-9]+"}
DISK_FORMATS = ("qcow2", "raw")
BOOT_MODES = ("disk", "kernel")
MAX_DISKS = {"virtio-blk": 8, "virtio-scsi": 8, "ahci": 6, "megasas": 8, "megasas-gen2": 8}
MIN_MEMORY_MIB = 64
PATH_MAX = 4095  # Linux's PATH_MAX less the NUL: no longer path can be opened


@dataclass(frozen=True)
class HostValue:
    """A host-local value and the TOML key it was given under (for messages)."""

    value: Any
    key: str


@dataclass(frozen=True)
class CpuSpec:
    model: str
    sockets: int
    cores: int
    threads: int
    vcpus: int


@dataclass(frozen=True)
class SmbiosOverrides:
    bios_version: str | None = None
    bios_date: str | None = None
    bios_release: str | None = None
    sku: str | None = None
    product_version: str | None = None
    asset_tag: str | None = None
    board_serial: str | None = None
    chassis_serial: str | None = None


@dataclass(frozen=True)
class DiskSpec:
    bus: str
    format: str
    serial: str | None
    paths: dict[str, HostValue]


@dataclass(frozen=True)
class CdromSpec:
    sha256: str | None
    paths: dict[str, HostValue]


@dataclass(frozen=True)
class NicSpec:
    model: str
    mac: str
    bridges: dict[str, HostValue]


@dataclass(frozen=True)
class BootSpec:
    mode: str
    append: str | None = None
    kernel_sha256: str | None = None
    initrd_sha256: str | None = None
    kernels: dict[str, HostValue] | None = None
    initrds: dict[str, HostValue] | None = None


@dataclass(frozen=True)
class LabSpec:
    address: str
    prefix: int
    port: int


@dataclass(frozen=True)
class FTServerSpec:
    """A validated spec: what one FT server is, on both CoServers."""

    file: Path
    name: str
    profile: Profile
    coservers: tuple[str, str]
    serial: str
    uuid: str
    machine: str
    cpu: CpuSpec
    memory_mib: int
    smbios: SmbiosOverrides
    disks: tuple[DiskSpec, ...]
    cdrom: CdromSpec | None
    nics: tuple[NicSpec, ...]
    boot: BootSpec
    devices: tuple[str, ...]
    lab: LabSpec | None

    @property
    def origin(self) -> str:
        return f"spec {self.file}"


# -- small checkers (raise ValueError(reason); Table.custom locates them) -----------------

def _uuid(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(UUID, value):
        raise ValueError(f"must be a UUID like 6f1c2a7e-3b9d-4c1e-9a55-0c1d2e3f4a5b, "
                         f"got {show(value)}")
    u = str(uuidlib.UUID(value))
    if u in ("00000000-0000-0000-0000-000000000000", "ffffffff-ffff-ffff-ffff-ffffffffffff"):
        raise ValueError(f"must not be {u}: firmware and operating systems read it as 'no UUID'")
    return u


def _mac(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(MAC, value):
        raise ValueError(f"must be a MAC address like 52:54:00:12:34:56, got {show(value)}")
    mac = value.lower()
    if int(mac[:2], 16) & 1:
        raise ValueError(f"must be a unicast MAC (first octet even), got {show(value)}")
    if mac == "00:00:00:00:00:00":
        raise ValueError("must not be 00:00:00:00:00:00")
    return mac


def _sha256(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(SHA256, value):
        raise ValueError(f"must be a sha256 digest (64 hex digits), got {show(value)}")
    return value.lower()


def _ipv4(value: Any) -> str:
    try:
        if not isinstance(value, str):
            raise ValueError
        return str(ipaddress.IPv4Address(value))
    except ValueError:
        raise ValueError(f"must be an IPv4 address (colo-compare handles IPv4 only), "
                         f"got {show(value)}") from None


def _coservers(value: Any) -> tuple[str, str]:
    ok = (isinstance(value, list) and len(value) == 2
          and all(isinstance(v, str) and re.fullmatch(HOST_NAME, v) for v in value))
    if not ok:
        raise ValueError(f"must be two CoServer names like [\"cs1\", \"cs2\"], got {show(value)}"
                         if not isinstance(value, list) else
                         f"must be exactly two CoServer names ([a-z0-9-]), got {clip(repr(value))}")
    if value[0] == value[1]:
        raise ValueError(f"must name two different CoServers, got {value[0]!r} twice")
    return (value[0], value[1])


def _bridge(t: Table, name: str) -> str:
    bridge: str = t.string(name, pattern=BRIDGE, what="a Linux interface name (1-15 of [A-Za-z0-9_.-])")
    return bridge


def _text(t: Table, name: str, default: Any = None) -> Any:
    return t.string(name, default, pattern=SMBIOS_TEXT, what=SMBIOS_TEXT_WHAT, max_len=64,
                    empty_ok=True)


class _SpecReader:
    """Reads one spec file; each method reads one section and validates it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.origin = Origin("spec", path)
        self.top = Table(read_toml(self.origin), self.origin)

    def local_path(self, t: Table, name: str) -> Path:
        """A host-local file path; relative to the spec's directory. A NUL character is refused
        here: no file can have one, and the OS calls that get the path raise ValueError."""
        raw = t.string(name, max_len=PATH_MAX)
        if "\0" in raw:
            raise t.error(name, f"must be a file path, got {show(raw)} (contains a NUL character)")
        p = Path(os.path.expanduser(raw))
        if not p.is_absolute():
            p = self.path.parent / p
        return Path(os.path.normpath(p))

    def per_host(self, t: Table, hosts: tuple[str, str],
                 fields: dict[str, tuple[Callable[[Table, str], Any], bool]],
                 ) -> dict[str, dict[str, HostValue] | None]:
        """Host-local fields, each given once for both hosts (t.<field>) and/or per host
        (t.hosts.<host>.<field>, which wins). fields maps name -> (reader, required);
        an optional field given nowhere comes back as None."""
        common = {n: HostValue(read(t, n), t.key(n))
                  for n, (read, _) in fields.items() if t.has(n)}
        per: dict[str, dict[str, HostValue]] = {n: {} for n in fields}
        hosts_t = t.table("hosts", None)
        if hosts_t is not None:
            for h in hosts_t.data:
                if h not in hosts:
                    raise hosts_t.error(h, f"not one of this spec's coservers ({', '.join(hosts)})")
            for h in hosts:
                ht = hosts_t.table(h, None)
                if ht is None:
                    continue
                for n, (read, _) in fields.items():
                    if ht.has(n):
                        per[n][h] = HostValue(read(ht, n), ht.key(n))
                ht.finish()
        out: dict[str, dict[str, HostValue] | None] = {}
        for n, (_, required) in fields.items():
            if not required and n not in common and not per[n]:
                out[n] = None
                continue
            values: dict[str, HostValue] = {}
            for h in hosts:
                value = per[n].get(h, common.get(n))
                if value is None:
                    raise self.origin.error(
                        f"{t.key('hosts')}.{h}.{n}",
                        f"missing: give {t.key(n)} for both CoServers or "
                        f"{t.key('hosts')}.{h}.{n} for this one")
                values[h] = value
            out[n] = values
        return out

    # -- sections -------------------------------------------------------------------------

    def profile(self) -> Profile:
        name = self.top.string("profile")
        try:
            return get_profile(name)
        except ProfileNotFound:
            raise self.top.error("profile", f"no such profile {show(name)} (known: "
                                            f"{', '.join(profile_names())})") from None

    def machine(self, profile: Profile) -> str:
        machine: str = self.top.string("machine", profile.machine)
        if not re.fullmatch(MACHINE_VERSIONS[profile.machine], machine):
            raise self.top.error("machine", f"must be a {profile.machine} machine type "
                                 f"({MACHINE_VERSIONS[profile.machine].replace('|', ' or ')}) "
                                 f"as profile {profile.name} uses, got {show(machine)}")
        return machine

    def cpu(self, profile: Profile) -> CpuSpec:
        g, real = profile.guest, profile.real
        t = self.top.table("cpu", None) or Table({}, self.origin, "cpu")
        model = t.custom("model", check_cpu_model, g.cpu_model)
        if model in CPU_MODEL_REFUSED:
            raise t.error("model", f"refused for COLO: {CPU_MODEL_REFUSED[model]}",
                          ColoIncompatibleError)
        sockets = t.integer("sockets", g.sockets)
        cores = t.integer("cores", g.cores)
        threads = t.integer("threads", g.threads)
        for key, got, most, what in (("sockets", sockets, real.sockets, "sockets"),
                                     ("cores", cores, real.cores_per_socket, "cores per socket"),
                                     ("threads", threads, real.threads_per_core,
                                      "threads per core")):
            if got > most:
                raise t.error(key, f"a {profile.title} has at most {most} {what}, got {got}",
                              TopologyError)
        slots = sockets * cores * threads
        vcpus = t.integer("vcpus", slots)
        if vcpus > slots:
            raise t.error("vcpus", f"{vcpus} vCPUs do not fit sockets*cores*threads = "
                                   f"{sockets}*{cores}*{threads} = {slots}", TopologyError)
        t.finish()
        return CpuSpec(model, sockets, cores, threads, vcpus)

    def memory(self, profile: Profile) -> int:
        mib: int = self.top.integer("memory_mib", profile.guest.memory_mib)
        if mib < MIN_MEMORY_MIB:
            raise self.top.error("memory_mib", f"must be at least {MIN_MEMORY_MIB} MiB, got {mib}",
                                 TopologyError)
        most = profile.real.max_memory_gib * 1024
        if mib > most:
            raise self.top.error("memory_mib", f"a {profile.title} takes at most "
                                 f"{profile.real.max_memory_gib} GiB ({most} MiB), got {mib}",
                                 TopologyError)
        return mib

    def smbios(self) -> SmbiosOverrides:
        t = self.top.table("smbios", None)
        if t is None:
            return SmbiosOverrides()
        o = SmbiosOverrides(
            bios_version=t.string("bios_version", None, pattern=SMBIOS_TEXT,
                                  what=SMBIOS_TEXT_WHAT, max_len=64),
            bios_date=t.string("bios_date", None, pattern=BIOS_DATE, what=BIOS_DATE_WHAT),
            bios_release=t.string("bios_release", None, pattern=BIOS_RELEASE,
                                  what=BIOS_RELEASE_WHAT),
            sku=_text(t, "sku"),
            product_version=_text(t, "product_version"),
            asset_tag=_text(t, "asset_tag"),
            board_serial=t.string("board_serial", None, pattern=SERIAL, what=SERIAL_WHAT),
            chassis_serial=t.string("chassis_serial", None, pattern=SERIAL, what=SERIAL_WHAT),
        )
        t.finish()
        return o

    def disks(self, profile: Profile, hosts: tuple[str, str]) -> tuple[DiskSpec, ...]:
        out: list[DiskSpec] = []
        for t in self.top.tables("disks"):
            bus = t.string("bus", profile.guest.disk_bus)
            refusal = devices.colo_refusal(bus)
            if refusal:
                raise t.error("bus", f"refused for COLO: {refusal}", ColoIncompatibleError)
            if bus not in devices.DISK_BUSES:
                raise t.error("bus", f"must be one of {', '.join(devices.DISK_BUSES)}; "
                                     f"got {show(bus)}")
            disk = DiskSpec(
                bus=bus,
                format=t.string("format", "qcow2", choices=DISK_FORMATS),
                serial=t.string("serial", None, pattern=DISK_SERIAL,
                                what="1 to 20 of [A-Za-z0-9_.-]"),
                paths=self.per_host(t, hosts, {"path": (self.local_path, True)})["path"] or {},
            )
            t.finish()
            out.append(disk)
        for bus, most in MAX_DISKS.items():
            n = sum(1 for d in out if d.bus == bus)
            if n > most:
                raise self.top.error("disks", f"at most {most} disks on bus {bus}, got {n}",
                                     TopologyError)
        for i, d in enumerate(out):
            for j in range(i):
                if d.serial and d.serial == out[j].serial:
                    raise self.origin.error(f"disks[{i}].serial", f"same serial as disks[{j}]")
                for h in hosts:
                    if d.paths[h].value == out[j].paths[h].value:
                        raise self.origin.error(d.paths[h].key,
                                                f"same image as disks[{j}] on {h}: "
                                                f"{d.paths[h].value}")
        return tuple(out)

    def cdrom(self, hosts: tuple[str, str]) -> CdromSpec | None:
        t = self.top.table("cdrom", None)
        if t is None:
            return None
        c = CdromSpec(sha256=t.custom("sha256", _sha256, None),
                      paths=self.per_host(t, hosts, {"path": (self.local_path, True)})["path"]
                      or {})
        t.finish()
        return c

    def nics(self, profile: Profile, hosts: tuple[str, str]) -> tuple[NicSpec, ...]:
        out: list[NicSpec] = []
        tables = self.top.tables("nics")
        if not tables:
            raise self.top.error("nics", "required: an FT server needs at least one [[nics]] "
                                         "(COLO paces its checkpoints by comparing network "
                                         "output)")
        for t in tables:
            model = t.string("model", profile.guest.nic_model)
            refusal = devices.colo_refusal(model)
            if refusal:
                raise t.error("model", f"refused for COLO: {refusal}", ColoIncompatibleError)
            if model not in devices.NIC_MODELS:
                raise t.error("model", f"must be one of {', '.join(devices.NIC_MODELS)}; "
                                       f"got {show(model)}")
            if t.boolean("vhost", False):
                raise t.error("vhost", f"refused for COLO: {devices.VHOST_NET_REASON}",
                              ColoIncompatibleError)
            nic = NicSpec(
                model=model,
                mac=t.custom("mac", _mac),
                bridges=self.per_host(t, hosts, {"bridge": (_bridge, True)})["bridge"] or {},
            )
            t.finish()
            out.append(nic)
        if len(out) > profile.real.nic_ports:
            raise self.top.error("nics", f"a {profile.title} has {profile.real.nic_ports} NIC "
                                         f"ports, the spec asks for {len(out)}", TopologyError)
        for i, n in enumerate(out):
            for j in range(i):
                if n.mac == out[j].mac:
                    raise self.origin.error(f"nics[{i}].mac", f"same MAC as nics[{j}]: {n.mac}")
        return tuple(out)

    def boot(self, hosts: tuple[str, str], n_disks: int) -> BootSpec:
        if not self.top.has("boot"):
            raise self.top.error("boot", "required key is missing (boot = \"disk\", or a [boot] "
                                         "table with mode = \"kernel\")")
        raw = self.top.data["boot"]
        if isinstance(raw, str):
            mode = self.top.string("boot", choices=BOOT_MODES)
            if mode == "kernel":
                raise self.top.error("boot", "boot = \"kernel\" needs a [boot] table with "
                                             "mode, kernel, initrd and append")
            spec = BootSpec(mode="disk")
            where = "boot"
        else:
            t = self.top.table("boot")
            mode = t.string("mode", choices=BOOT_MODES)
            where = t.key("mode")
            if mode == "disk":
                spec = BootSpec(mode="disk")
            else:
                files = self.per_host(t, hosts, {"kernel": (self.local_path, True),
                                                 "initrd": (self.local_path, False)})
                spec = BootSpec(
                    mode="kernel",
                    append=t.string("append", "", pattern=r"[\x20-\x7e]*",
                                    what="printable ASCII", empty_ok=True),
                    kernel_sha256=t.custom("kernel_sha256", _sha256, None),
                    initrd_sha256=t.custom("initrd_sha256", _sha256, None),
                    kernels=files["kernel"],
                    initrds=files["initrd"],
                )
            t.finish()
        if spec.mode == "disk" and n_disks == 0:
            raise self.origin.error(where, "boot from disk needs at least one [[disks]]")
        return spec

    def devices(self) -> tuple[str, ...]:
        out: list[str] = []
        for t in self.top.tables("devices"):
            kind = t.string("type")
            refusal = devices.colo_refusal(kind)
            if refusal:
                raise t.error("type", f"refused for COLO: {refusal}", ColoIncompatibleError)
            if kind not in devices.EXTRA_DEVICES:
                raise t.error("type", f"must be one of {', '.join(devices.EXTRA_DEVICES)}; "
                                      f"got {show(kind)}")
            if kind in out:
                raise t.error("type", f"{kind} is already in [[devices]]")
            t.finish()
            out.append(kind)
        return tuple(out)

    def lab(self) -> LabSpec | None:
        t = self.top.table("lab", None)
        if t is None:
            return None
        lab = LabSpec(address=t.custom("address", _ipv4), prefix=t.integer("prefix", 24,
                                                                             maximum=32),
                      port=t.integer("port", 7777, maximum=65535))
        t.finish()
        return lab

    def read(self) -> FTServerSpec:
        top = self.top
        name = top.string("name", pattern=NAME, what="1 to 63 of [a-z0-9-], not starting or "
                                                     "ending with -")
        profile = self.profile()
        hosts = top.custom("coservers", _coservers)
        serial = top.string("serial", pattern=SERIAL, what=SERIAL_WHAT)
        uuid = top.custom("uuid", _uuid)
        machine = self.machine(profile)
        cpu = self.cpu(profile)
        memory_mib = self.memory(profile)
        smbios = self.smbios()
        disks = self.disks(profile, hosts)
        cdrom = self.cdrom(hosts)
        nics = self.nics(profile, hosts)
        boot = self.boot(hosts, len(disks))
        extra = self.devices()
        lab = self.lab()
        top.finish()
        return FTServerSpec(file=self.path, name=name, profile=profile, coservers=hosts,
                            serial=serial, uuid=uuid, machine=machine, cpu=cpu,
                            memory_mib=memory_mib, smbios=smbios, disks=disks, cdrom=cdrom,
                            nics=nics, boot=boot, devices=extra, lab=lab)


def load_spec(path: str | Path) -> FTServerSpec:
    """Read and validate a spec file; any problem is one SpecError line naming file and key."""
    p = Path(path)
    p = Path(os.path.abspath(p))
    return _SpecReader(p).read()


__all__ = ["FTServerSpec", "CpuSpec", "SmbiosOverrides", "DiskSpec", "CdromSpec", "NicSpec",
           "BootSpec", "LabSpec", "HostValue", "load_spec"]
