"""A small Debian guest that boots from its own disk: an FT server that is not the lab guest.

The lab guest is a kernel and an initramfs handed to QEMU. This one is an ordinary disk image:
SeaBIOS reads its MBR, SYSLINUX on its first partition loads Debian's kernel and Debian's own
initramfs (made by initramfs-tools inside the image), which mounts the ext4 root on the second
partition and starts systemd. So it tests what a user's server does: BIOS disk boot (spec
``boot = "disk"``), a real init, udev, and data on the boot disk itself.

Contents (Debian bookworm, `mmdebstrap --variant=minbase` plus systemd-sysv, udev, iproute2,
linux-image-amd64, initramfs-tools):
  * coserver-net.service: eth0 gets the FT server's fixed IPv4 address from the kernel command
    line (cs.ip=, cs.gw=, cs.port= as for the lab guest). No DHCP, and ipv6.disable=1:
    colo-compare only understands IPv4.
  * coserver-journal.service: the lab guest's journal service (the same static binary, built
    by coserver.images.labguest) with its data on the root filesystem,
    /var/lib/coserver-journal/journal.log, so "nothing lost" is checked the same way.
  * Only the kernel modules the virtual hardware needs (dpkg path-exclude): virtio, AHCI,
    virtio-scsi, e1000/e1000e/rtl8139 NICs, ext4. System logs in RAM; periodic timers masked.

Disk layout (MBR, made without loop devices or mounts): partition 1, FAT16 (SYSLINUX, vmlinuz,
initrd.img, syslinux.cfg), bootable; partition 2, ext4 root filled with mkfs.ext4 -d. The raw
disk is converted to qcow2 (the COLO layer's format); zero blocks stay unallocated.

build_debian_guest() returns a DebianGuest from cache_dir()/debian-guest/<key>/, building it
first (~1-2 min, downloads ~60 MB from the Debian mirror) when no build with the same key
exists. The key hashes every input: suite, mirrors, packages, the kernel version apt resolves
now, the journal binary, the mmdebstrap and syslinux versions, every file under
coserver/images/debian/, the disk geometry and the kernel command line (the address is on the
disk, in syslinux.cfg). Each QEMU gets its own copy: DebianGuest.new_disk(). write_spec()
writes an FT server spec for it.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coserver import log
from coserver.images import bootdisk, debpkg, qemu_img
from coserver.images.cache import cached_build
from coserver.images.errors import GuestBuildError, ImageError
from coserver.images.labguest import JOURNAL_PORT, build_lab_guest
from coserver.paths import cache_dir
from coserver.sys.files import sha256_file

_log = log.get("images.debianguest")

#: Bump when the build code changes what it produces (the key then changes).
BUILD_VERSION = "1"
SUITE = bootdisk.SUITE
SOURCES = bootdisk.SOURCES
PACKAGES = ("systemd-sysv", "udev", "iproute2", "linux-image-amd64", "initramfs-tools")
KERNEL_PACKAGE = "linux-image-amd64"
SRC = Path(__file__).resolve().parent / "debian"
#: Kernel modules kept (dpkg path-include after excluding them all): what the spec's device
#: models need. Everything else of the kernel package is left out (saves ~250 MB).
MODULES_KEPT = (
    "drivers/virtio/*", "drivers/block/virtio_blk.ko", "drivers/char/hw_random/virtio-rng.ko",
    "drivers/net/virtio_net.ko", "drivers/net/net_failover.ko", "net/core/failover.ko",
    "drivers/net/ethernet/intel/e1000/*", "drivers/net/ethernet/intel/e1000e/*",
    "drivers/net/ethernet/realtek/8139*", "drivers/net/mii.ko", "drivers/ptp/*", "drivers/pps/*",
    "drivers/scsi/virtio_scsi.ko", "drivers/scsi/sd_mod.ko", "drivers/scsi/scsi_mod.ko",
    "drivers/scsi/scsi_common.ko", "drivers/scsi/megaraid/*", "drivers/ata/*",
    "fs/ext4/*", "fs/jbd2/*", "fs/mbcache.ko", "lib/*", "crypto/*", "arch/x86/crypto/*",
)
DPKG_EXCLUDES = bootdisk.DPKG_EXCLUDES
#: Units masked: periodic jobs that would write to the disk behind the application's back, and
#: binfmt_misc's automount (its module is left out of the image).
MASKED_UNITS = ("apt-daily.timer", "apt-daily-upgrade.timer", "dpkg-db-backup.timer",
                "e2scrub_all.timer", "e2scrub_reap.service", "fstrim.timer",
                "proc-sys-fs-binfmt_misc.automount")
ENABLED_UNITS = ("coserver-net.service", "coserver-journal.service")
DATA_DIR = "var/lib/coserver-journal"
JOURNAL_FILE = "journal.log"

SECTOR = bootdisk.SECTOR
DISK_SIZE = 1024 * 1024 * 1024
BOOT_START = 2048                     # sectors: partition 1 at 1 MiB
BOOT_SECTORS = 64 * 2048              # 64 MiB FAT16
ROOT_START = BOOT_START + BOOT_SECTORS
MKFS_EXT4 = ("-b", "4096", "-m", "1", "-L", "csroot",
             "-E", "lazy_itable_init=0,lazy_journal_init=0")
LAYOUT = bootdisk.Layout(DISK_SIZE, BOOT_START, BOOT_SECTORS, "CSBOOT", MKFS_EXT4).checked()
WHAT = "Debian guest"
#: Kernel command line besides root=, cs.*: serial console, no IPv6 (colo-compare is
#: IPv4-only), eth0 as the NIC's name, no fsck (the image is made clean; saves boot time).
BASE_CMDLINE = ("rw", "console=ttyS0", "quiet", "loglevel=3", "ipv6.disable=1", "net.ifnames=0",
                "fsck.mode=skip", "panic=-1")
DEFAULT_HOSTNAME = "cs-debian"

Progress = Callable[[str], None]


# ---------------------------------------------------------------- inputs and key


@dataclass(frozen=True)
class NetConfig:
    """The FT server's network identity, written into the disk's kernel command line."""

    address: str
    prefix: int = 24
    gateway: str | None = None
    port: int = JOURNAL_PORT
    hostname: str = DEFAULT_HOSTNAME

    def checked(self) -> NetConfig:
        try:
            iface = ipaddress.IPv4Interface(f"{self.address}/{self.prefix}")
        except ValueError as exc:
            raise ImageError(f"Debian guest address {self.address}/{self.prefix}: not an IPv4 "
                             f"address/prefix (colo-compare is IPv4-only): {exc}") from exc
        net = iface.network
        if net.prefixlen < 31 and iface.ip in (net.network_address, net.broadcast_address):
            raise ImageError(f"Debian guest address {iface}: is the network or broadcast "
                             f"address of {net}")
        if self.gateway is not None:
            try:
                gw = ipaddress.IPv4Address(self.gateway)
            except ValueError as exc:
                raise ImageError(f"Debian guest gateway {self.gateway}: not an IPv4 "
                                 f"address") from exc
            if gw not in net or gw == iface.ip:
                raise ImageError(f"Debian guest gateway {gw}: not another address in {net}")
        if isinstance(self.port, bool) or not isinstance(self.port, int) \
                or not 0 < self.port < 65536:
            raise ImageError(f"Debian guest journal port {self.port!r}: not a TCP port")
        h = self.hostname
        if not h or len(h) > 63 or not all(c.isalnum() or c == "-" for c in h) \
                or h.startswith("-") or h.endswith("-"):
            raise ImageError(f"Debian guest hostname {h!r}: letters, digits and '-' only")
        return self

    def cmdline_params(self) -> list[str]:
        parts = [f"cs.ip={self.address}/{self.prefix}"]
        if self.gateway:
            parts.append(f"cs.gw={self.gateway}")
        return parts + [f"cs.port={self.port}"]


@dataclass(frozen=True)
class DebianInputs:
    """Everything one build depends on; debian_key() hashes it."""

    kernel: debpkg.DebPackage
    journal_sha256: str
    mmdebstrap_version: str
    syslinux_version: str
    net: NetConfig
    src_dir: Path = SRC
    build_version: str = BUILD_VERSION
    params: dict[str, Any] = field(default_factory=lambda: {
        "suite": SUITE, "sources": list(SOURCES), "packages": list(PACKAGES),
        "modules_kept": list(MODULES_KEPT), "dpkg_excludes": list(DPKG_EXCLUDES),
        "masked": list(MASKED_UNITS), "enabled": list(ENABLED_UNITS),
        "disk_size": DISK_SIZE, "boot_start": BOOT_START, "boot_sectors": BOOT_SECTORS,
        "mkfs_ext4": list(MKFS_EXT4), "cmdline": list(BASE_CMDLINE),
    })

    def source_hashes(self) -> dict[str, str]:
        """sha256 and mode of every file under src_dir, by relative path."""
        return bootdisk.tree_hashes(self.src_dir, WHAT)

    def material(self) -> dict[str, Any]:
        return {"build_version": self.build_version, "kernel": str(self.kernel),
                "journal_sha256": self.journal_sha256,
                "mmdebstrap": self.mmdebstrap_version, "syslinux": self.syslinux_version,
                "net": self.net.__dict__, "sources": self.source_hashes(), "params": self.params}


def debian_key(inputs: DebianInputs) -> str:
    blob = json.dumps(inputs.material(), sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


def _derived_uuid(key: str, what: str) -> str:
    return bootdisk.derived_uuid("cs-debian", key, what)


# ---------------------------------------------------------------- the built guest


@dataclass(frozen=True)
class DebianGuest:
    """One built Debian guest in the cache."""

    key: str
    directory: Path
    disk: Path                  # qcow2 template: copy it per QEMU (new_disk)
    manifest_path: Path
    net: NetConfig
    kernel_release: str
    root_uuid: str
    manifest: dict[str, Any] = field(repr=False, compare=False)

    def new_disk(self, dst: str | Path, *, overwrite: bool = False) -> Path:
        """A private copy of the disk (each QEMU needs its own)."""
        d = Path(dst)
        if d.exists() and not overwrite:
            raise ImageError(f"image {d}: already exists (refusing to overwrite)")
        if not d.parent.is_dir():
            raise ImageError(f"image {d}: directory {d.parent} does not exist")
        shutil.copyfile(self.disk, d)
        return d

    @property
    def cmdline(self) -> str:
        return self.manifest["cmdline"]


def debian_cache() -> Path:
    return cache_dir() / "debian-guest"


def load(directory: Path) -> DebianGuest:
    """The DebianGuest in a build directory, checked: manifest readable, disk present."""
    mpath = directory / "manifest.json"
    try:
        m = json.loads(mpath.read_text())
        disk = directory / m["disk"]["name"]
        guest = DebianGuest(key=m["key"], directory=directory, disk=disk, manifest_path=mpath,
                            net=NetConfig(**m["net"]), kernel_release=m["kernel"]["release"],
                            root_uuid=m["root_uuid"], manifest=m)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise GuestBuildError(f"Debian guest {directory}: unreadable manifest ({exc})") from exc
    if not disk.is_file() or disk.stat().st_size != m["disk"]["size"]:
        raise GuestBuildError(f"Debian guest {directory}: {disk.name} missing or of the wrong "
                              f"size")
    if guest.key != directory.name:
        raise GuestBuildError(f"Debian guest {directory}: manifest key {guest.key} is not the "
                              f"directory's name")
    return guest


def debian_inputs(net: NetConfig, journal: Path) -> DebianInputs:
    """The inputs a build would use now (asks apt-cache and dpkg-query; downloads nothing)."""
    memo = debian_cache() / "kernel-candidate.json"
    return DebianInputs(kernel=debpkg.resolve_kernel_memo(KERNEL_PACKAGE, memo),
                        journal_sha256=sha256_file(journal),
                        mmdebstrap_version=debpkg.installed_version("mmdebstrap"),
                        syslinux_version=debpkg.installed_version("syslinux"),
                        net=net)


def build_debian_guest(address: str, prefix: int = 24, *, gateway: str | None = None,
                       port: int = JOURNAL_PORT, hostname: str = DEFAULT_HOSTNAME,
                       force: bool = False, progress: Progress | None = None) -> DebianGuest:
    """The Debian guest for these network settings, from the cache or built now.

    force=True rebuilds even when a build with the same key exists; progress, if given, gets
    one short line per build step.
    """
    say = progress or (lambda _msg: None)
    net = NetConfig(address, prefix, gateway, port, hostname).checked()
    journal = build_lab_guest(progress=progress).journal
    inputs = debian_inputs(net, journal)
    key = debian_key(inputs)
    return cached_build(debian_cache(), key, load=load, build=lambda tmp: _build(tmp, inputs, key, journal, say),
                        what="Debian guest", force=force, say=say)


# ---------------------------------------------------------------- the spec


def write_spec(path: Path, guest: DebianGuest, *, disks: dict[str, Path], name: str = "debian",
               profile: str = "dl360-g5", coservers: tuple[str, str] = ("cs1", "cs2"),
               serial: str, uuid: str, mac: str, bridge: str, memory_mib: int | None = None,
               disk_serial: str = "DEBIAN-ROOT") -> Path:
    """An FT server spec (coserver.hardware.spec) that boots this guest from disks[0].

    disks: each CoServer's own copy of the disk (the secondary's may be blank: the lab syncs
    it from the primary). The [lab] section carries the guest's address and journal port.
    """
    if set(disks) != set(coservers):
        raise ImageError(f"spec {path}: disks given for {sorted(disks)}, want {list(coservers)}")
    host_disks = "".join(f'[disks.hosts.{h}]\npath = "{disks[h]}"\n' for h in coservers)
    memory = f"memory_mib = {memory_mib}\n" if memory_mib else ""
    text = f'''# FT server spec for the coserver Debian guest {guest.key} (coserver.images.debianguest):
# Debian {SUITE} booted by the BIOS from its own disk (SYSLINUX, Debian's kernel and initramfs,
# systemd), the journal service on TCP {guest.net.port} with its data on the same disk.
name = "{name}"
profile = "{profile}"
coservers = {json.dumps(list(coservers))}
serial = "{serial}"
uuid = "{uuid}"
{memory}boot = "disk"

[[disks]]
bus = "virtio-blk"
format = "qcow2"
serial = "{disk_serial}"
{host_disks}
[[nics]]
mac = "{mac}"
model = "virtio-net-pci"
bridge = "{bridge}"

[lab]
address = "{guest.net.address}"
prefix = {guest.net.prefix}
port = {guest.net.port}
'''
    path.write_text(text)
    return path


# ---------------------------------------------------------------- build steps


def _mmdebstrap(target: Path, say: Progress) -> None:
    """Debian minbase + our packages into target (which must not exist), as root (chroot)."""
    options = bootdisk.dpkg_path_options(DPKG_EXCLUDES)
    for base in ("/lib/modules", "/usr/lib/modules"):
        options.append(f"--dpkgopt=path-exclude={base}/*/kernel/*")
        options += [f"--dpkgopt=path-include={base}/*/kernel/{m}" for m in MODULES_KEPT]
    # initramfs-tools settings must be in place before the kernel's postinst makes the initrd
    options.append(f"--setup-hook=sync-in {SRC / 'setup'} /")
    bootdisk.mmdebstrap(target, PACKAGES, what=WHAT, say=say, options=options)


def _customize(rootfs: Path, journal: Path, key: str, net: NetConfig, root_uuid: str) -> None:
    """Our files, units, identity and data directory, written straight into the tree."""
    shutil.copytree(SRC / "root", rootfs, symlinks=True, dirs_exist_ok=True)
    sbin = rootfs / "usr/local/sbin"
    shutil.copyfile(journal, sbin / "journal")
    (sbin / "journal").chmod(0o755)
    system = rootfs / "etc/systemd/system"
    wants = system / "multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    for unit in ENABLED_UNITS:
        link = wants / unit
        link.unlink(missing_ok=True)
        link.symlink_to(f"/etc/systemd/system/{unit}")
    for unit in MASKED_UNITS:
        link = system / unit
        link.unlink(missing_ok=True)
        link.symlink_to("/dev/null")
    data = rootfs / DATA_DIR
    data.mkdir(parents=True, exist_ok=True)
    (data / JOURNAL_FILE).touch()
    (rootfs / "etc/fstab").write_text(
        "# coserver Debian guest: the root filesystem on partition 2 of the boot disk\n"
        f"UUID={root_uuid} / ext4 rw,noatime,noinit_itable,errors=remount-ro 0 0\n")
    (rootfs / "etc/hostname").write_text(net.hostname + "\n")
    (rootfs / "etc/hosts").write_text(f"127.0.0.1\tlocalhost\n{net.address}\t{net.hostname}\n")
    (rootfs / "etc/machine-id").write_text(_derived_uuid(key, "machine").replace("-", "") + "\n")


def _build(tmp: Path, inputs: DebianInputs, key: str, journal: Path, say: Progress) -> None:
    work = tmp / "work"
    work.mkdir()
    rootfs = work / "rootfs"
    t0 = time.monotonic()
    _mmdebstrap(rootfs, say)
    t_strap = time.monotonic() - t0
    root_uuid = _derived_uuid(key, "root")
    say("installing the journal service, units and identity")
    _customize(rootfs, journal, key, inputs.net, root_uuid)
    raw = work / "disk.raw"
    facts = bootdisk.make_disk(raw, rootfs, LAYOUT, cmdline=[*BASE_CMDLINE, *inputs.net.cmdline_params()],
                               root_uuid=root_uuid, disk_sig=bootdisk.disk_id("cs-debian", key), label="debian",
                               comment="coserver Debian guest", what=WHAT, say=say)
    qemu_img.convert(raw, tmp / "disk.qcow2", "qcow2", src_fmt="raw")
    shutil.rmtree(work)
    disk = tmp / "disk.qcow2"
    manifest = {
        "key": key,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "mmdebstrap_seconds": round(t_strap, 1),
        "inputs": inputs.material(),
        "net": inputs.net.__dict__,
        **facts.manifest(str(inputs.kernel)),
        "journal": {"port": inputs.net.port, "file": f"/{DATA_DIR}/{JOURNAL_FILE}"},
        "disk": {"name": disk.name, "format": "qcow2", "size": disk.stat().st_size,
                 "sha256": sha256_file(disk)},
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


__all__ = ["DebianGuest", "NetConfig", "DebianInputs", "build_debian_guest", "debian_inputs",
           "debian_key", "load", "write_spec"]
