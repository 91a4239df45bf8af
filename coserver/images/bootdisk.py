"""Bootable Debian disks made without loop devices or mounts: what the disk-image builders share.

Two builders make a Debian disk that the BIOS boots: the Debian test guest
(coserver.images.debianguest, 1 GiB) and the Vagrant box (coserver.images.vagrantbox, 16 GiB).
Both use the steps here:

  * mmdebstrap(): a Debian tree from the mirror, as root (``--mode=root``: chroot, real
    maintainer scripts), with dpkg path rules (docs, man pages, locales left out);
  * kernel_files(): the one kernel and its initramfs-tools initrd in the tree's /boot;
  * write_disk(): the raw disk, in place in one sparse file. An MBR (SYSLINUX's boot code, a disk
    signature, two partitions); partition 1 FAT16 (active) made with ``mkfs.fat --offset``,
    SYSLINUX installed with ``syslinux --offset``, the kernel, initrd and syslinux.cfg copied in
    with mtools; partition 2 ext4 filled from the tree with ``mkfs.ext4 -d -E offset=``;
  * make_disk(): those two for one tree, with the facts a manifest records (DiskFacts);
  * packages(), tree_size(), tree_hashes(): what a manifest and a cache key record.

A Layout says the disk's size, the boot partition's place and size, and the file systems'
labels and options; each builder keeps its own (it is part of its cache key).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import uuid as uuidlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coserver.images.errors import GuestBuildError
from coserver.sys.run import run

#: Debian 12, the one suite both builders install, and the mirrors they use.
SUITE = "bookworm"
SOURCES = (f"deb http://deb.debian.org/debian {SUITE} main",
           f"deb http://deb.debian.org/debian {SUITE}-updates main",
           f"deb http://deb.debian.org/debian-security {SUITE}-security main")
#: Left out of every package (dpkg path-exclude); /usr/share/locale/locale.alias is kept.
DPKG_EXCLUDES = ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/info/*",
                 "/usr/share/locale/*", "/usr/share/lintian/*")
DPKG_INCLUDES = ("/usr/share/locale/locale.alias",)

SECTOR = 512
SYSLINUX_DIR = Path("/usr/lib/syslinux")
MBR_BIN = SYSLINUX_DIR / "mbr" / "mbr.bin"
#: Partition types in the MBR: FAT16 (LBA) for the boot partition, Linux for the root.
FAT16_LBA, LINUX = 0x0E, 0x83

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Layout:
    """One disk's geometry and file system settings (sectors of 512 bytes)."""

    size: int                           # bytes, the disk's virtual size
    boot_start: int = 2048              # partition 1 at 1 MiB
    boot_sectors: int = 64 * 2048       # 64 MiB FAT16
    boot_label: str = "CSBOOT"
    mkfs_ext4: tuple[str, ...] = ("-b", "4096", "-m", "1", "-L", "csroot",
                                  "-E", "lazy_itable_init=0,lazy_journal_init=0")

    @property
    def total_sectors(self) -> int:
        return self.size // SECTOR

    @property
    def root_start(self) -> int:
        return self.boot_start + self.boot_sectors

    @property
    def root_sectors(self) -> int:
        return self.total_sectors - self.root_start

    def checked(self) -> Layout:
        if self.size % (1 << 20) or self.boot_start < 2048 or self.boot_sectors < 32 * 2048 \
                or self.root_sectors < 64 * 2048:
            raise GuestBuildError(f"disk layout {self}: want whole MiB, partition 1 from sector 2048, "
                                  f"at least 32 MiB of boot and 64 MiB of root")
        if not self.boot_label or len(self.boot_label) > 11:
            raise GuestBuildError(f"disk layout: FAT label {self.boot_label!r} (1 to 11 characters)")
        return self

    def describe(self, root_uuid: str) -> dict[str, Any]:
        """The manifest's "layout": the partitions, where they are and what is on them."""
        return {"sector": SECTOR, "size": self.size,
                "partitions": [{"n": 1, "type": "FAT16", "start": self.boot_start,
                                "sectors": self.boot_sectors, "bootable": True,
                                "files": ["ldlinux.sys", "ldlinux.c32", "syslinux.cfg",
                                          "vmlinuz", "initrd.img"]},
                               {"n": 2, "type": "ext4", "start": self.root_start,
                                "sectors": self.root_sectors, "uuid": root_uuid}]}


# ---------------------------------------------------------------- tools and steps


def run_step(argv: list[str], what: str, timeout: float = 900.0, **kw: Any) -> str:
    """Run one build step (argv list), its failure a one-line GuestBuildError; stdout."""
    return run(argv, what, timeout=timeout, error=GuestBuildError, **kw).stdout


def tool(name: str, package: str, what: str) -> str:
    """The path of a host program (PATH, then /usr/sbin, /sbin), or an error naming its package."""
    found = shutil.which(name) or next((str(p) for p in (Path("/usr/sbin") / name,
                                                          Path("/sbin") / name) if p.exists()), None)
    if not found:
        raise GuestBuildError(f"{what}: {name} not found (apt-get install {package})")
    return found


def derived_uuid(prefix: str, key: str, purpose: str) -> str:
    """A UUID fixed by the build's key (the same build, the same root file system UUID)."""
    return str(uuidlib.UUID(hashlib.sha256(f"{prefix}-{purpose}-{key}".encode()).hexdigest()[:32]))


def disk_id(prefix: str, key: str) -> int:
    """The MBR's 32-bit disk signature (also the FAT volume id), fixed by the key."""
    return int(hashlib.sha256(f"{prefix}-disk-{key}".encode()).hexdigest()[:8], 16)


def dpkg_path_options(excludes: Iterable[str] = DPKG_EXCLUDES,
                      includes: Iterable[str] = DPKG_INCLUDES) -> list[str]:
    """mmdebstrap --dpkgopt arguments: path-exclude each of excludes, then path-include includes."""
    return [f"--dpkgopt=path-exclude={p}" for p in excludes] + \
        [f"--dpkgopt=path-include={p}" for p in includes]


def mmdebstrap(target: Path, packages: Sequence[str], *, what: str, say: Progress,
               variant: str = "minbase", options: Sequence[str] = (), suite: str = SUITE,
               sources: Sequence[str] = SOURCES, timeout: float = 1800.0) -> None:
    """Debian `variant` + packages into target (which must not exist), as root (chroot).

    options: more mmdebstrap options (dpkg path rules, hooks), placed before the suite.
    """
    argv = [tool("mmdebstrap", "mmdebstrap", what), f"--variant={variant}", "--mode=root",
            "--include=" + ",".join(packages), "--aptopt=Acquire::Retries=3", *options,
            suite, str(target), *sources]
    say(f"mmdebstrap: Debian {variant} + " + ", ".join(packages))
    if os.geteuid() != 0:
        raise GuestBuildError(f"{what}: building the root filesystem needs root "
                              f"(mmdebstrap --mode=root)")
    run_step(argv, f"{what} root filesystem {target}", timeout=timeout)


def kernel_files(rootfs: Path, what: str) -> tuple[str, Path, Path]:
    """(release, vmlinuz, initrd) of the one kernel in rootfs/boot."""
    vmlinuzes = sorted((rootfs / "boot").glob("vmlinuz-*"))
    if len(vmlinuzes) != 1:
        raise GuestBuildError(f"{what}: {len(vmlinuzes)} kernels in /boot (want 1)")
    release = vmlinuzes[0].name[len("vmlinuz-"):]
    initrd = rootfs / "boot" / f"initrd.img-{release}"
    if not initrd.is_file():
        raise GuestBuildError(f"{what}: no {initrd.name} in /boot (initramfs-tools failed?)")
    return release, vmlinuzes[0], initrd


def mbr(mbr_code: bytes, disk_sig: int, layout: Layout) -> bytes:
    """SYSLINUX's MBR code, a disk signature and two partitions: FAT16 (active), Linux."""
    def entry(active: bool, ptype: int, start: int, count: int) -> bytes:
        chs = b"\xfe\xff\xff"  # beyond CHS: BIOSes and SYSLINUX use the LBA fields
        return struct.pack("<B3sB3sII", 0x80 if active else 0, chs, ptype, chs, start, count)
    if len(mbr_code) > 440:
        raise GuestBuildError(f"{MBR_BIN}: {len(mbr_code)} bytes of MBR code (at most 440)")
    table = entry(True, FAT16_LBA, layout.boot_start, layout.boot_sectors) + \
        entry(False, LINUX, layout.root_start, layout.root_sectors) + bytes(32)
    return mbr_code.ljust(440, b"\0") + struct.pack("<IH", disk_sig, 0) + table + b"\x55\xaa"


def syslinux_cfg(cmdline: str, *, label: str, comment: str) -> str:
    """Boot `label` at once (no prompt), SYSLINUX's messages on the first serial port."""
    return (f"# {comment}: boot at once, messages on the serial port\n"
            f"SERIAL 0 115200\nDEFAULT {label}\nPROMPT 0\nTIMEOUT 0\n\n"
            f"LABEL {label}\n  LINUX /vmlinuz\n  INITRD /initrd.img\n"
            f"  APPEND {cmdline}\n")


def write_disk(raw: Path, work: Path, layout: Layout, *, rootfs: Path, vmlinuz: Path, initrd: Path,
               syslinux_config: str, disk_sig: int, root_uuid: str, what: str) -> None:
    """The raw disk: MBR, FAT boot partition with SYSLINUX, ext4 root filled from rootfs."""
    if not MBR_BIN.is_file():
        raise GuestBuildError(f"{what}: {MBR_BIN} not found (apt-get install syslinux-common)")
    mbr_code = MBR_BIN.read_bytes()[:440]
    with open(raw, "wb") as f:
        f.truncate(layout.size)
    boot_off = layout.boot_start * SECTOR
    # partition 1: FAT16, written in place at its offset (no loop device, no mount)
    run_step([tool("mkfs.fat", "dosfstools", what), "-F", "16", "-n", layout.boot_label,
              "-i", f"{disk_sig:08x}", "-h", str(layout.boot_start), "--offset", str(layout.boot_start),
              str(raw), str(layout.boot_sectors * SECTOR // 1024)], "boot partition")
    cfg = work / "syslinux.cfg"
    cfg.write_text(syslinux_config)
    run_step([tool("syslinux", "syslinux", what), "--offset", str(boot_off), "--install", str(raw)],
             "SYSLINUX on the boot partition")
    img = f"{raw}@@{boot_off}"
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    for src, name in ((vmlinuz, "vmlinuz"), (initrd, "initrd.img"), (cfg, "syslinux.cfg")):
        run_step([tool("mcopy", "mtools", what), "-o", "-i", img, str(src), f"::/{name}"],
                 f"boot partition: {name}", env=env)
    # partition 2: ext4 filled from the tree (mkfs.ext4 -d), also in place
    root_blocks = layout.root_sectors * SECTOR // 4096
    run_step([tool("mkfs.ext4", "e2fsprogs", what), "-F", "-q", "-t", "ext4", *layout.mkfs_ext4,
              "-U", root_uuid, "-E", f"offset={layout.root_start * SECTOR}", "-d", str(rootfs), str(raw),
              str(root_blocks)], "root filesystem", timeout=1800)
    with open(raw, "r+b") as f:
        f.write(mbr(mbr_code, disk_sig, layout))


@dataclass(frozen=True)
class DiskFacts:
    """What make_disk() made: the kernel it boots, its command line, what the root file system holds."""

    release: str
    cmdline: str
    root_uuid: str
    packages: dict[str, str]
    rootfs_bytes: int
    vmlinuz_bytes: int
    initrd_bytes: int
    layout: Layout

    def manifest(self, kernel_package: str) -> dict[str, Any]:
        """The manifest entries both builders write: kernel, cmdline, root_uuid, rootfs_bytes, packages, layout."""
        return {"kernel": {"package": kernel_package, "release": self.release,
                           "vmlinuz_bytes": self.vmlinuz_bytes, "initrd_bytes": self.initrd_bytes},
                "cmdline": self.cmdline, "root_uuid": self.root_uuid, "rootfs_bytes": self.rootfs_bytes,
                "packages": self.packages, "layout": self.layout.describe(self.root_uuid)}


def make_disk(raw: Path, rootfs: Path, layout: Layout, *, cmdline: Sequence[str], root_uuid: str, disk_sig: int,
              label: str, comment: str, what: str, say: Progress) -> DiskFacts:
    """The raw disk of rootfs (write_disk), SYSLINUX booting its one kernel with root=UUID=root_uuid + cmdline.

    Temporary files go next to raw; rootfs is only read.
    """
    release, vmlinuz, initrd = kernel_files(rootfs, what)
    line = " ".join([f"root=UUID={root_uuid}", *cmdline])
    pkgs = packages(rootfs, what)
    rootfs_bytes = tree_size(rootfs)
    say(f"making the {layout.size >> 20} MiB disk (SYSLINUX + ext4 root, {rootfs_bytes >> 20} MiB of files)")
    write_disk(raw, raw.parent, layout, rootfs=rootfs, vmlinuz=vmlinuz, initrd=initrd,
               syslinux_config=syslinux_cfg(line, label=label, comment=comment), disk_sig=disk_sig,
               root_uuid=root_uuid, what=what)
    return DiskFacts(release=release, cmdline=line, root_uuid=root_uuid, packages=pkgs, rootfs_bytes=rootfs_bytes,
                     vmlinuz_bytes=vmlinuz.stat().st_size, initrd_bytes=initrd.stat().st_size, layout=layout)


def packages(rootfs: Path, what: str) -> dict[str, str]:
    """The packages installed in rootfs (dpkg status "ii"): name -> version."""
    out = run_step(["dpkg-query", f"--admindir={rootfs / 'var/lib/dpkg'}", "-W",
                    "-f=${Package}\t${Version}\t${db:Status-Abbrev}\n"], f"{what} packages")
    pkgs = {}
    for line in out.splitlines():
        name, version, status = (line.split("\t") + ["", ""])[:3]
        if status.startswith("ii"):
            pkgs[name] = version
    return pkgs


def tree_size(root: Path) -> int:
    """Bytes of the files under root (a symlink counts as itself, a hard link once per name)."""
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total


def tree_hashes(src_dir: Path, what: str) -> dict[str, str]:
    """sha256 and mode ("x" executable, "-" not) of every file under src_dir, by relative path.

    Dot files and __pycache__ are left out (they are not part of a build).
    """
    if not src_dir.is_dir():
        raise GuestBuildError(f"{what} sources {src_dir}: not a directory")
    out: dict[str, str] = {}
    for p in sorted(src_dir.rglob("*")):
        rel = p.relative_to(src_dir)
        if p.is_dir() or any(part.startswith(".") or part == "__pycache__" for part in rel.parts):
            continue
        mode = "x" if os.access(p, os.X_OK) else "-"
        out[rel.as_posix()] = f"{mode}{hashlib.sha256(p.read_bytes()).hexdigest()}"
    return out
