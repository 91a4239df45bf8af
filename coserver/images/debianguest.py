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
import os
import shutil
import struct
import time
import uuid as uuidlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coserver import log
from coserver.images import debpkg, qemu_img
from coserver.images.cache import cached_build
from coserver.images.errors import GuestBuildError, ImageError
from coserver.images.labguest import JOURNAL_PORT, build_lab_guest
from coserver.paths import cache_dir
from coserver.sys.files import sha256_file
from coserver.sys.run import run

_log = log.get("images.debianguest")

#: Bump when the build code changes what it produces (the key then changes).
BUILD_VERSION = "1"
SUITE = "bookworm"
SOURCES = (f"deb http://deb.debian.org/debian {SUITE} main",
           f"deb http://deb.debian.org/debian {SUITE}-updates main",
           f"deb http://deb.debian.org/debian-security {SUITE}-security main")
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
DPKG_EXCLUDES = ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/info/*",
                 "/usr/share/locale/*", "/usr/share/lintian/*")
#: Units masked: periodic jobs that would write to the disk behind the application's back, and
#: binfmt_misc's automount (its module is left out of the image).
MASKED_UNITS = ("apt-daily.timer", "apt-daily-upgrade.timer", "dpkg-db-backup.timer",
                "e2scrub_all.timer", "e2scrub_reap.service", "fstrim.timer",
                "proc-sys-fs-binfmt_misc.automount")
ENABLED_UNITS = ("coserver-net.service", "coserver-journal.service")
DATA_DIR = "var/lib/coserver-journal"
JOURNAL_FILE = "journal.log"

SECTOR = 512
DISK_SIZE = 1024 * 1024 * 1024
BOOT_START = 2048                     # sectors: partition 1 at 1 MiB
BOOT_SECTORS = 64 * 2048              # 64 MiB FAT16
ROOT_START = BOOT_START + BOOT_SECTORS
MKFS_EXT4 = ("-b", "4096", "-m", "1", "-L", "csroot",
             "-E", "lazy_itable_init=0,lazy_journal_init=0")
SYSLINUX_DIR = Path("/usr/lib/syslinux")
MBR_BIN = SYSLINUX_DIR / "mbr" / "mbr.bin"
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
        if not self.src_dir.is_dir():
            raise GuestBuildError(f"Debian guest sources {self.src_dir}: not a directory")
        out: dict[str, str] = {}
        for p in sorted(self.src_dir.rglob("*")):
            rel = p.relative_to(self.src_dir)
            if p.is_dir() or any(part.startswith(".") or part == "__pycache__"
                                 for part in rel.parts):
                continue
            mode = "x" if os.access(p, os.X_OK) else "-"
            out[rel.as_posix()] = f"{mode}{hashlib.sha256(p.read_bytes()).hexdigest()}"
        return out

    def material(self) -> dict[str, Any]:
        return {"build_version": self.build_version, "kernel": str(self.kernel),
                "journal_sha256": self.journal_sha256,
                "mmdebstrap": self.mmdebstrap_version, "syslinux": self.syslinux_version,
                "net": self.net.__dict__, "sources": self.source_hashes(), "params": self.params}


def debian_key(inputs: DebianInputs) -> str:
    blob = json.dumps(inputs.material(), sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


def _derived_uuid(key: str, what: str) -> str:
    return str(uuidlib.UUID(hashlib.sha256(f"cs-debian-{what}-{key}".encode()).hexdigest()[:32]))


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


def _run(argv: list[str], what: str, timeout: float = 900.0, **kw: Any) -> str:
    return run(argv, what, timeout=timeout, error=GuestBuildError, **kw).stdout


def _tool(name: str, package: str) -> str:
    found = shutil.which(name) or next((str(p) for p in (Path("/usr/sbin") / name,
                                                          Path("/sbin") / name) if p.exists()), None)
    if not found:
        raise GuestBuildError(f"Debian guest: {name} not found (apt-get install {package})")
    return found


def _mmdebstrap(target: Path, say: Progress) -> None:
    """Debian minbase + our packages into target (which must not exist), as root (chroot)."""
    argv = [_tool("mmdebstrap", "mmdebstrap"), "--variant=minbase", "--mode=root",
            "--include=" + ",".join(PACKAGES), "--aptopt=Acquire::Retries=3"]
    for pat in DPKG_EXCLUDES:
        argv.append(f"--dpkgopt=path-exclude={pat}")
    argv.append("--dpkgopt=path-include=/usr/share/locale/locale.alias")
    for base in ("/lib/modules", "/usr/lib/modules"):
        argv.append(f"--dpkgopt=path-exclude={base}/*/kernel/*")
        argv += [f"--dpkgopt=path-include={base}/*/kernel/{m}" for m in MODULES_KEPT]
    # initramfs-tools settings must be in place before the kernel's postinst makes the initrd
    argv.append(f"--setup-hook=sync-in {SRC / 'setup'} /")
    argv += [SUITE, str(target), *SOURCES]
    say("mmdebstrap: Debian minbase + " + ", ".join(PACKAGES))
    if os.geteuid() != 0:
        raise GuestBuildError("Debian guest: building the root filesystem needs root "
                              "(mmdebstrap --mode=root)")
    _run(argv, f"Debian guest root filesystem {target}", timeout=1800)


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


def _kernel_files(rootfs: Path) -> tuple[str, Path, Path]:
    vmlinuzes = sorted((rootfs / "boot").glob("vmlinuz-*"))
    if len(vmlinuzes) != 1:
        raise GuestBuildError(f"Debian guest: {len(vmlinuzes)} kernels in /boot (want 1)")
    release = vmlinuzes[0].name[len("vmlinuz-"):]
    initrd = rootfs / "boot" / f"initrd.img-{release}"
    if not initrd.is_file():
        raise GuestBuildError(f"Debian guest: no {initrd.name} in /boot (initramfs-tools failed?)")
    return release, vmlinuzes[0], initrd


def _mbr(mbr_code: bytes, disk_id: int, total_sectors: int) -> bytes:
    """SYSLINUX's MBR code, a disk signature and two partitions: FAT16 (active), Linux."""
    def entry(active: bool, ptype: int, start: int, count: int) -> bytes:
        chs = b"\xfe\xff\xff"  # beyond CHS: BIOSes and SYSLINUX use the LBA fields
        return struct.pack("<B3sB3sII", 0x80 if active else 0, chs, ptype, chs, start, count)
    if len(mbr_code) > 440:
        raise GuestBuildError(f"{MBR_BIN}: {len(mbr_code)} bytes of MBR code (at most 440)")
    table = entry(True, 0x0E, BOOT_START, BOOT_SECTORS) + \
        entry(False, 0x83, ROOT_START, total_sectors - ROOT_START) + bytes(32)
    return mbr_code.ljust(440, b"\0") + struct.pack("<IH", disk_id, 0) + table + b"\x55\xaa"


def _syslinux_cfg(cmdline: str) -> str:
    return ("# coserver Debian guest: boot at once, messages on the serial port\n"
            "SERIAL 0 115200\nDEFAULT debian\nPROMPT 0\nTIMEOUT 0\n\n"
            "LABEL debian\n  LINUX /vmlinuz\n  INITRD /initrd.img\n"
            f"  APPEND {cmdline}\n")


def _disk(raw: Path, work: Path, rootfs: Path, vmlinuz: Path, initrd: Path, cmdline: str,
          key: str, root_uuid: str) -> None:
    """The raw disk: MBR, FAT boot partition with SYSLINUX, ext4 root filled from rootfs."""
    if not MBR_BIN.is_file():
        raise GuestBuildError(f"Debian guest: {MBR_BIN} not found (apt-get install "
                              f"syslinux-common)")
    mbr_code = MBR_BIN.read_bytes()[:440]
    total = DISK_SIZE // SECTOR
    with open(raw, "wb") as f:
        f.truncate(DISK_SIZE)
    disk_id = int(hashlib.sha256(f"cs-debian-disk-{key}".encode()).hexdigest()[:8], 16)
    boot_off = BOOT_START * SECTOR
    # partition 1: FAT16, written in place at its offset (no loop device, no mount)
    _run([_tool("mkfs.fat", "dosfstools"), "-F", "16", "-n", "CSBOOT", "-i", f"{disk_id:08x}",
          "-h", str(BOOT_START), "--offset", str(BOOT_START), str(raw),
          str(BOOT_SECTORS * SECTOR // 1024)], "boot partition")
    cfg = work / "syslinux.cfg"
    cfg.write_text(_syslinux_cfg(cmdline))
    _run([_tool("syslinux", "syslinux"), "--offset", str(boot_off), "--install", str(raw)],
         "SYSLINUX on the boot partition")
    img = f"{raw}@@{boot_off}"
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    for src, name in ((vmlinuz, "vmlinuz"), (initrd, "initrd.img"), (cfg, "syslinux.cfg")):
        _run([_tool("mcopy", "mtools"), "-o", "-i", img, str(src), f"::/{name}"],
             f"boot partition: {name}", env=env)
    # partition 2: ext4 filled from the tree (mkfs.ext4 -d), also in place
    root_blocks = (total - ROOT_START) * SECTOR // 4096
    _run([_tool("mkfs.ext4", "e2fsprogs"), "-F", "-q", "-t", "ext4", *MKFS_EXT4, "-U", root_uuid,
          "-E", f"offset={ROOT_START * SECTOR}", "-d", str(rootfs), str(raw), str(root_blocks)],
         "root filesystem")
    with open(raw, "r+b") as f:
        f.write(_mbr(mbr_code, disk_id, total))


def _packages(rootfs: Path) -> dict[str, str]:
    out = _run(["dpkg-query", f"--admindir={rootfs / 'var/lib/dpkg'}", "-W",
                "-f=${Package}\t${Version}\t${db:Status-Abbrev}\n"], "Debian guest packages")
    pkgs = {}
    for line in out.splitlines():
        name, version, status = (line.split("\t") + ["", ""])[:3]
        if status.startswith("ii"):
            pkgs[name] = version
    return pkgs


def _tree_size(root: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total


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
    release, vmlinuz, initrd = _kernel_files(rootfs)
    cmdline = " ".join([f"root=UUID={root_uuid}", *BASE_CMDLINE, *inputs.net.cmdline_params()])
    packages = _packages(rootfs)
    rootfs_bytes = _tree_size(rootfs)
    say(f"making the {DISK_SIZE >> 20} MiB disk (SYSLINUX + ext4 root, "
        f"{rootfs_bytes >> 20} MiB of files)")
    raw = work / "disk.raw"
    _disk(raw, work, rootfs, vmlinuz, initrd, cmdline, key, root_uuid)
    qemu_img.convert(raw, tmp / "disk.qcow2", "qcow2", src_fmt="raw")
    vmlinuz_size, initrd_size = vmlinuz.stat().st_size, initrd.stat().st_size
    shutil.rmtree(work)
    disk = tmp / "disk.qcow2"
    manifest = {
        "key": key,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "mmdebstrap_seconds": round(t_strap, 1),
        "inputs": inputs.material(),
        "net": inputs.net.__dict__,
        "kernel": {"package": str(inputs.kernel), "release": release,
                   "vmlinuz_bytes": vmlinuz_size, "initrd_bytes": initrd_size},
        "cmdline": cmdline,
        "root_uuid": root_uuid,
        "rootfs_bytes": rootfs_bytes,
        "packages": packages,
        "layout": {"sector": SECTOR, "size": DISK_SIZE,
                   "partitions": [{"n": 1, "type": "FAT16", "start": BOOT_START,
                                   "sectors": BOOT_SECTORS, "bootable": True,
                                   "files": ["ldlinux.sys", "ldlinux.c32", "syslinux.cfg",
                                             "vmlinuz", "initrd.img"]},
                                  {"n": 2, "type": "ext4", "start": ROOT_START,
                                   "sectors": DISK_SIZE // SECTOR - ROOT_START,
                                   "uuid": root_uuid}]},
        "journal": {"port": inputs.net.port, "file": f"/{DATA_DIR}/{JOURNAL_FILE}"},
        "disk": {"name": disk.name, "format": "qcow2", "size": disk.stat().st_size,
                 "sha256": sha256_file(disk)},
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


__all__ = ["DebianGuest", "NetConfig", "DebianInputs", "build_debian_guest", "debian_inputs",
           "debian_key", "load", "write_spec"]
