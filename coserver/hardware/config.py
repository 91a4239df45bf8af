"""The effective configuration of an FT server on one CoServer, and the checks between the two.

``resolve(spec, host)`` flattens a spec and its profile into a :class:`MachineConfig` for one
CoServer: everything the guest sees (machine, CPUs, memory, SMBIOS, device models, MACs, disk
serials, boot command line, digests of read-only inputs) plus the host-local things (image
paths, bridges). Fields marked host-local are the only ones allowed to differ between the two
CoServers; ``guest_view()`` drops them and ``compare_configs()`` reports the first difference in
the rest, by key. ``measure()`` reads this host's ISO, kernel and initrd and records their
sha256, so the two hosts' configs differ if their files do.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import uuid as uuidlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from coserver.errors import clip
from coserver.hardware._toml import show
from coserver.hardware.errors import ConfigMismatchError, FileDigestError, SchemaError
from coserver.hardware.profile import Profile
from coserver.hardware.spec import FTServerSpec, HostValue
from coserver.sys.files import sha256_file

HOST_LOCAL = {"host_local": True}


def _local(default: Any = None) -> Any:
    return field(default=default, metadata=HOST_LOCAL)


@dataclass(frozen=True)
class CpuConfig:
    model: str
    sockets: int
    cores: int
    threads: int
    vcpus: int


@dataclass(frozen=True)
class SmbiosConfig:
    """Every SMBIOS string the guest will read. "" means deliberately empty (Not Specified)."""

    bios_vendor: str
    bios_version: str
    bios_date: str
    bios_release: str | None
    manufacturer: str
    product: str
    version: str
    serial: str
    uuid: str
    sku: str | None
    family: str | None
    board: bool
    board_manufacturer: str | None
    board_product: str | None
    board_serial: str | None
    chassis_manufacturer: str
    chassis_serial: str
    asset_tag: str | None
    processor_manufacturer: str
    memory_manufacturer: str


@dataclass(frozen=True)
class DiskConfig:
    index: int
    bus: str
    format: str
    serial: str | None
    path: Path | None = _local()
    path_key: str | None = _local()


@dataclass(frozen=True)
class CdromConfig:
    sha256: str | None
    path: Path | None = _local()
    path_key: str | None = _local()


@dataclass(frozen=True)
class NicConfig:
    index: int
    model: str
    mac: str
    bridge: str | None = _local()


@dataclass(frozen=True)
class BootConfig:
    mode: str
    append: str | None = None
    kernel_sha256: str | None = None
    initrd_sha256: str | None = None
    kernel: Path | None = _local()
    kernel_key: str | None = _local()
    initrd: Path | None = _local()
    initrd_key: str | None = _local()


@dataclass(frozen=True)
class LabConfig:
    address: str
    prefix: int
    port: int


@dataclass(frozen=True)
class MachineConfig:
    """One CoServer's effective configuration of one FT server."""

    name: str
    profile: str
    machine: str
    cpu: CpuConfig
    memory_mib: int
    smbios: SmbiosConfig
    disks: tuple[DiskConfig, ...]
    cdrom: CdromConfig | None
    nics: tuple[NicConfig, ...]
    boot: BootConfig
    devices: tuple[str, ...]
    lab: LabConfig | None
    host: str | None = _local()
    origin: str = _local("")


def _hv(values: Mapping[str, HostValue] | None, host: str) -> tuple[Any, str | None]:
    if not values:
        return None, None
    v = values[host]
    return v.value, v.key


def _smbios(profile: Profile, serial: str, uuid: str, overrides: Any = None) -> SmbiosConfig:
    p = profile.smbios

    def pick(name: str, default: Any) -> Any:
        value = getattr(overrides, name, None) if overrides is not None else None
        return default if value is None else value

    return SmbiosConfig(
        bios_vendor=p.bios_vendor,
        bios_version=pick("bios_version", p.bios_version),
        bios_date=pick("bios_date", p.bios_date),
        bios_release=pick("bios_release", p.bios_release),
        manufacturer=p.manufacturer,
        product=p.product,
        version=pick("product_version", ""),
        serial=serial,
        uuid=uuid,
        sku=pick("sku", p.sku),
        family=p.family,
        board=p.board,
        board_manufacturer=p.board_manufacturer,
        board_product=p.board_product,
        board_serial=pick("board_serial", serial) if p.board else None,
        chassis_manufacturer=p.chassis_manufacturer,
        chassis_serial=pick("chassis_serial", serial),
        asset_tag=pick("asset_tag", None),
        processor_manufacturer=p.processor_manufacturer,
        memory_manufacturer=p.memory_manufacturer,
    )


def resolve(spec: FTServerSpec, host: str) -> MachineConfig:
    """The configuration of spec's FT server on CoServer host (no file is read)."""
    if host not in spec.coservers:
        raise SchemaError(spec.origin, "coservers",
                              f"{clip(host, quote=repr)} is not one of this spec's coservers "
                              f"({', '.join(spec.coservers)})")
    disks = []
    for i, d in enumerate(spec.disks):
        path, key = _hv(d.paths, host)
        disks.append(DiskConfig(index=i, bus=d.bus, format=d.format, serial=d.serial,
                                path=path, path_key=key))
    cdrom = None
    if spec.cdrom is not None:
        path, key = _hv(spec.cdrom.paths, host)
        cdrom = CdromConfig(sha256=spec.cdrom.sha256, path=path, path_key=key)
    nics = tuple(NicConfig(index=i, model=n.model, mac=n.mac, bridge=_hv(n.bridges, host)[0])
                 for i, n in enumerate(spec.nics))
    b = spec.boot
    kernel, kernel_key = _hv(b.kernels, host)
    initrd, initrd_key = _hv(b.initrds, host)
    boot = BootConfig(mode=b.mode, append=b.append, kernel_sha256=b.kernel_sha256,
                      initrd_sha256=b.initrd_sha256, kernel=kernel, kernel_key=kernel_key,
                      initrd=initrd, initrd_key=initrd_key)
    lab = LabConfig(spec.lab.address, spec.lab.prefix, spec.lab.port) if spec.lab else None
    return MachineConfig(
        name=spec.name, profile=spec.profile.name, machine=spec.machine,
        cpu=CpuConfig(spec.cpu.model, spec.cpu.sockets, spec.cpu.cores, spec.cpu.threads,
                      spec.cpu.vcpus),
        memory_mib=spec.memory_mib,
        smbios=_smbios(spec.profile, spec.serial, spec.uuid, spec.smbios),
        disks=tuple(disks), cdrom=cdrom, nics=nics, boot=boot, devices=spec.devices, lab=lab,
        host=host, origin=spec.origin)


def default_config(profile: Profile, *, serial: str | None = None,
                   uuid: str | None = None) -> MachineConfig:
    """A profile's default machine with a placeholder identity and no devices (for checks)."""
    g = profile.guest
    serial = serial or f"LAB{profile.family.upper()}{profile.generation.upper()}"[:10]
    uuid = uuid or str(uuidlib.uuid5(uuidlib.NAMESPACE_URL, f"coserver:profile:{profile.name}"))
    return MachineConfig(
        name=profile.name, profile=profile.name, machine=profile.machine,
        cpu=CpuConfig(g.cpu_model, g.sockets, g.cores, g.threads, g.sockets * g.cores * g.threads),
        memory_mib=g.memory_mib, smbios=_smbios(profile, serial, uuid),
        disks=(), cdrom=None, nics=(), boot=BootConfig(mode="disk"), devices=(), lab=None,
        host=None, origin=profile.origin)


# -- local files ----------------------------------------------------------------------------

def _measured(origin: str, path: Path | None, key: str | None, declared: str | None,
              declared_key: str) -> str | None:
    if path is None:
        return declared
    try:
        digest = sha256_file(path)  # refuses a FIFO or a device (it would hang): NotRegularFileError
    except OSError as exc:
        raise FileDigestError(origin, key, f"cannot read {path}: {exc.strerror or exc}") from None
    except ValueError:  # a NUL in the path (the spec reader refuses those; a caller may not have)
        raise FileDigestError(origin, key, "cannot read the file: its path contains a NUL character") from None
    if declared is not None and digest != declared:
        raise FileDigestError(origin, key, f"sha256 of {path} is {digest}, but {declared_key} "
                                           f"says {declared}")
    return digest


def measure(config: MachineConfig) -> MachineConfig:
    """This host's config with the sha256 of its ISO, kernel and initrd filled in and checked
    against any digest the spec declares; a missing or unreadable file is an error."""
    cdrom = config.cdrom
    if cdrom is not None:
        cdrom = dataclasses.replace(cdrom, sha256=_measured(
            config.origin, cdrom.path, cdrom.path_key, cdrom.sha256, "cdrom.sha256"))
    b = config.boot
    boot = dataclasses.replace(
        b,
        kernel_sha256=_measured(config.origin, b.kernel, b.kernel_key, b.kernel_sha256,
                                "boot.kernel_sha256"),
        initrd_sha256=_measured(config.origin, b.initrd, b.initrd_key, b.initrd_sha256,
                                "boot.initrd_sha256"))
    return dataclasses.replace(config, cdrom=cdrom, boot=boot)


# -- comparing the two CoServers -----------------------------------------------------------

def _view(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _view(getattr(value, f.name)) for f in dataclasses.fields(value)
                if not f.metadata.get("host_local")}
    if isinstance(value, (tuple, list)):
        return [_view(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def guest_view(config: MachineConfig) -> dict[str, Any]:
    """Everything the guest can see, as JSON-able data (host-local fields left out)."""
    view: dict[str, Any] = _view(config)
    return view


def to_dict(config: MachineConfig) -> dict[str, Any]:
    """The whole config, host-local fields included, as JSON-able data."""

    def full(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {f.name: full(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (tuple, list)):
            return [full(v) for v in value]
        if isinstance(value, Path):
            return str(value)
        return value

    data: dict[str, Any] = full(config)
    return data


def config_digest(config: MachineConfig | Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of the guest view: equal on both CoServers or a problem."""
    view = guest_view(config) if isinstance(config, MachineConfig) else dict(config)
    return hashlib.sha256(json.dumps(view, sort_keys=True, separators=(",", ":"))
                          .encode()).hexdigest()


def config_differences(a: Any, b: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(key, a's value, b's value) for each guest-visible difference, in field order."""
    if isinstance(a, MachineConfig):
        a = guest_view(a)
    if isinstance(b, MachineConfig):
        b = guest_view(b)
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[tuple[str, Any, Any]] = []
        for k in list(a) + [k for k in b if k not in a]:
            key = f"{prefix}.{k}" if prefix else k
            if k not in a or k not in b:
                out.append((key, a.get(k), b.get(k)))
            else:
                out.extend(config_differences(a[k], b[k], key))
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [(prefix, a, b)]
        out = []
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            out.extend(config_differences(x, y, f"{prefix}[{i}]"))
        return out
    return [] if a == b else [(prefix, a, b)]


def _brief(value: Any) -> str:
    if isinstance(value, list):
        return f"{len(value)} entries"
    if value is None:
        return "nothing"
    if isinstance(value, dict):
        return "a table"
    return show(value)


def compare_configs(a: MachineConfig | Mapping[str, Any], b: MachineConfig | Mapping[str, Any],
                    *, names: tuple[str, str] | None = None, origin: str | None = None) -> None:
    """Raise ConfigMismatchError at the first guest-visible difference between two CoServers'
    configs (MachineConfigs, or guest views received from a peer)."""
    if names is None:
        names = (getattr(a, "host", None) or "first", getattr(b, "host", None) or "second")
    if origin is None:
        origin = getattr(a, "origin", None) or getattr(b, "origin", None) or "config"
    diffs = config_differences(a, b)
    if diffs:
        key, va, vb = diffs[0]
        more = f" (and {len(diffs) - 1} more differences)" if len(diffs) > 1 else ""
        raise ConfigMismatchError(origin, key or None,
                                  f"differs between CoServers: {names[0]} has {_brief(va)}, "
                                  f"{names[1]} has {_brief(vb)}{more}")
