"""ProLiant-like hardware profiles: data files, one per model family, read into frozen dataclasses.

A profile is the *identity* of a real box plus the *default virtual hardware* of the guest:

- ``smbios``: what the real box's firmware tells the OS (SMBIOS types 0, 1, 2, 3, and the
  manufacturer strings of types 4 and 17): vendor "HP" (or "HPE" from Gen10), the System ROM
  family as BIOS version (P56, P67, P89, U30, ...), product name, SKU, family. This is what the
  guest reads from /sys/class/dmi/id and ``dmidecode``; it is the same on both CoServers.
- ``real``: the physical box from its QuickSpecs (sockets, cores, threads, memory, NIC ports,
  storage) and the closest QEMU emulation of its CPU, NIC and RAID controller. These are upper
  bounds for a spec (a DL360 never had 4 sockets) and options a spec may choose.
- ``guest``: the virtual machine's default size and devices. **Deliberately not the real box**:
  1 socket x 1 core x 1 thread, 256 MiB, virtio NIC and disk, ``qemu64`` CPU model. COLO under
  TCG is tested here with ``-smp 1 -m 256``, and a lab machine (2 cores, 24 GiB) must run two
  copies (primary and secondary, whose COLO RAM cache doubles the guest's memory). A spec
  overrides sizes and devices for a real deployment.

Files live in ``coserver/hardware/profiles/<family>.toml``; each top-level table is a generation,
and the profile name is ``<family>-<generation>`` (``dl380-g5``, ``dl360-gen9``). Each file cites
its sources in comments and in a ``sources`` key per generation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from coserver.errors import clip
from coserver.hardware import devices
from coserver.hardware._toml import Origin, Table, read_toml, show
from coserver.hardware.errors import ProfileNotFound

PROFILES_DIR = Path(__file__).parent / "profiles"

MACHINES: dict[str, str] = {
    "pc": "i440FX + PIIX3 chipset (QEMU 'pc')",
    "q35": "Q35 + ICH9 chipset (QEMU 'q35')",
}

SMBIOS_TEXT = r"[\x20-\x7e]*"  # printable ASCII, as SMBIOS strings are in practice
SMBIOS_TEXT_WHAT = "printable ASCII"
BIOS_DATE = r"(0[1-9]|1[0-2])/(0[1-9]|[12][0-9]|3[01])/(19|20)[0-9]{2}"
BIOS_DATE_WHAT = "a date MM/DD/YYYY, as SMBIOS wants"
BIOS_RELEASE = r"(25[0-5]|2[0-4][0-9]|1?[0-9]{1,2})\.(25[0-5]|2[0-4][0-9]|1?[0-9]{1,2})"
BIOS_RELEASE_WHAT = "MAJOR.MINOR with each part 0-255"
CPU_MODEL = r"[A-Za-z0-9][A-Za-z0-9_.-]*"
CPU_MODEL_REFUSED = {
    "host": "-cpu host copies the CPU of whichever CoServer runs it, so the guest would not see "
            "the same CPU on both (and could not move between them)",
    "max": "-cpu max depends on the host and the QEMU build, so the guest would not see the same "
           "CPU on both CoServers",
}
GENERATION = r"g[0-9]+|gen[0-9]+"
FAMILY = r"[a-z][a-z0-9]*"


@dataclass(frozen=True)
class SmbiosIdentity:
    """The firmware identity of a real box (per-server serial and UUID come from the spec)."""

    bios_vendor: str
    bios_version: str
    bios_date: str
    bios_release: str | None
    manufacturer: str
    product: str
    family: str | None
    sku: str | None
    board: bool
    board_manufacturer: str | None
    board_product: str | None
    chassis_manufacturer: str
    processor_manufacturer: str
    memory_manufacturer: str


@dataclass(frozen=True)
class RealBox:
    """The physical server from its QuickSpecs, and the closest QEMU emulation of its parts."""

    form_factor: str
    cpu: str
    sockets: int
    cores_per_socket: int
    threads_per_core: int
    max_memory_gib: int
    nic: str
    nic_ports: int
    storage: str
    qemu_cpu_model: str
    qemu_nic_model: str
    qemu_disk_bus: str


@dataclass(frozen=True)
class GuestDefaults:
    """The virtual machine's default size and devices (lab-friendly; a spec overrides them)."""

    cpu_model: str
    sockets: int
    cores: int
    threads: int
    memory_mib: int
    nic_model: str
    disk_bus: str


@dataclass(frozen=True)
class Profile:
    """One model generation, e.g. dl380-g5."""

    name: str
    title: str
    family: str
    generation: str
    product_line: str
    machine: str
    smbios: SmbiosIdentity
    real: RealBox
    guest: GuestDefaults
    sources: tuple[str, ...]
    file: Path

    @property
    def origin(self) -> str:
        return f"profile {self.file}"


def check_cpu_model(value: object) -> str:
    """A QEMU CPU model name (the refusal of host/max is the caller's: it knows the key)."""
    if not isinstance(value, str):
        raise ValueError(f"must be a string, got {show(value)}")
    if not re.fullmatch(CPU_MODEL, value):
        raise ValueError(f"must be a QEMU CPU model name such as qemu64 or Westmere, "
                         f"got {show(value)}")
    return value


def _smbios_text(t: Table, name: str, default: Any = ..., *, empty_ok: bool = False) -> Any:
    kwargs = {} if default is ... else {"default": default}
    return t.string(name, **kwargs, pattern=SMBIOS_TEXT, what=SMBIOS_TEXT_WHAT, max_len=64,
                    empty_ok=empty_ok)


def _read_smbios(t: Table) -> SmbiosIdentity:
    manufacturer = _smbios_text(t, "manufacturer")
    product = _smbios_text(t, "product")
    board = t.boolean("board")
    ident = SmbiosIdentity(
        bios_vendor=_smbios_text(t, "bios_vendor"),
        bios_version=_smbios_text(t, "bios_version"),
        bios_date=t.string("bios_date", pattern=BIOS_DATE, what=BIOS_DATE_WHAT),
        bios_release=t.string("bios_release", None, pattern=BIOS_RELEASE, what=BIOS_RELEASE_WHAT),
        manufacturer=manufacturer,
        product=product,
        family=_smbios_text(t, "family", None),
        sku=_smbios_text(t, "sku", None),
        board=board,
        board_manufacturer=_smbios_text(t, "board_manufacturer", manufacturer) if board else None,
        board_product=_smbios_text(t, "board_product", product) if board else None,
        chassis_manufacturer=_smbios_text(t, "chassis_manufacturer", manufacturer),
        # "" is allowed here: it clears QEMU's default "QEMU" (dmidecode: "Not Specified")
        processor_manufacturer=_smbios_text(t, "processor_manufacturer", empty_ok=True),
        memory_manufacturer=_smbios_text(t, "memory_manufacturer", empty_ok=True),
    )
    t.finish()
    return ident


def _read_real(t: Table) -> RealBox:
    real = RealBox(
        form_factor=t.string("form_factor"),
        cpu=t.string("cpu"),
        sockets=t.integer("sockets"),
        cores_per_socket=t.integer("cores_per_socket"),
        threads_per_core=t.integer("threads_per_core"),
        max_memory_gib=t.integer("max_memory_gib"),
        nic=t.string("nic"),
        nic_ports=t.integer("nic_ports"),
        storage=t.string("storage"),
        qemu_cpu_model=t.custom("qemu_cpu_model", check_cpu_model),
        qemu_nic_model=t.string("qemu_nic_model", choices=tuple(devices.NIC_MODELS)),
        qemu_disk_bus=t.string("qemu_disk_bus", choices=tuple(devices.DISK_BUSES)),
    )
    t.finish()
    return real


def _read_guest(t: Table, real: RealBox) -> GuestDefaults:
    guest = GuestDefaults(
        cpu_model=t.custom("cpu_model", check_cpu_model),
        sockets=t.integer("sockets", maximum=real.sockets),
        cores=t.integer("cores", maximum=real.cores_per_socket),
        threads=t.integer("threads", maximum=real.threads_per_core),
        memory_mib=t.integer("memory_mib", minimum=64, maximum=real.max_memory_gib * 1024),
        nic_model=t.string("nic_model", choices=tuple(devices.NIC_MODELS)),
        disk_bus=t.string("disk_bus", choices=tuple(devices.DISK_BUSES)),
    )
    if guest.cpu_model in CPU_MODEL_REFUSED:
        raise t.error("cpu_model", CPU_MODEL_REFUSED[guest.cpu_model])
    t.finish()
    return guest


def load_family(path: Path) -> list[Profile]:
    """Read one family file (e.g. profiles/dl380.toml) into its generations' profiles."""
    origin = Origin("profile", path)
    top = Table(read_toml(origin), origin)
    family = top.string("family", pattern=FAMILY, what="a lower-case family name like dl380")
    if family != path.stem:
        raise top.error("family", f"must match the file name {path.stem!r}, got {clip(family, quote=repr)}")
    product_line = top.string("product_line")
    profiles: list[Profile] = []
    for gen in list(top.data):
        if gen in ("family", "product_line"):
            continue
        if not re.fullmatch(GENERATION, gen) or not isinstance(top.data[gen], dict):
            continue  # left for finish() to report as unknown
        g = top.table(gen)
        real = _read_real(g.table("real"))
        profile = Profile(
            name=f"{family}-{gen}",
            title=g.string("title"),
            family=family,
            generation=gen,
            product_line=product_line,
            machine=g.string("machine", choices=tuple(MACHINES)),
            smbios=_read_smbios(g.table("smbios")),
            real=real,
            guest=_read_guest(g.table("guest"), real),
            sources=tuple(g.strings("sources")),
            file=path,
        )
        g.finish()
        profiles.append(profile)
    top.finish()
    if not profiles:
        raise top.error(None, "defines no generation table such as [g5] or [gen9]")
    return profiles


@lru_cache(maxsize=4)
def _all_profiles(directory: Path) -> dict[str, Profile]:
    found: dict[str, Profile] = {}
    for path in sorted(directory.glob("*.toml")):
        for profile in load_family(path):
            found[profile.name] = profile
    return found


def _order(p: Profile) -> tuple[str, int, int]:
    """Family, then era: g5 < g7 < gen9 < gen10."""
    number = int(re.sub(r"\D", "", p.generation))
    return (p.family, 0 if p.generation.startswith("g") and not p.generation.startswith("gen")
            else 1, number)


def list_profiles(directory: Path = PROFILES_DIR) -> list[Profile]:
    """Every shipped profile, by family then generation (dl360-g5 ... dl580-gen9)."""
    return sorted(_all_profiles(directory).values(), key=_order)


def profile_names(directory: Path = PROFILES_DIR) -> list[str]:
    return [p.name for p in list_profiles(directory)]


def get_profile(name: str, directory: Path = PROFILES_DIR) -> Profile:
    """The profile called name (e.g. "dl380-g5"), or ProfileNotFound naming the known ones."""
    profiles = _all_profiles(directory)
    try:
        return profiles[name]
    except KeyError:
        raise ProfileNotFound(f"no hardware profile {clip(str(name), quote=repr)} in {directory} "
                              f"(known: {', '.join(profile_names(directory))})") from None
