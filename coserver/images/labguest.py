"""The lab guest: Debian's kernel, a busybox initramfs, the journal service, an ext4 data disk.

build_lab_guest() returns a LabGuest from cache_dir()/guest/<key>/, building it first when no
build with the same key exists. The key hashes every input (see GuestInputs): the kernel
package and version apt would fetch now, the busybox-static version, the C compiler, every
file under coserver/images/guest/, the build parameters below, and BUILD_VERSION (bump it when
the build code changes what it produces). A build happens in a temp dir under the same parent
and is renamed into place, under a lock, so readers never see half a guest.

Contents of a build: vmlinuz, initrd.img (gzip newc cpio: busybox, /init, the journal, the
needed modules in dependency order), journal (the static binary, also handy on the host),
data.qcow2 (template of the guest's ext4 data disk holding an empty journal), manifest.json.
Each QEMU gets its own copy of the data disk: LabGuest.new_data_disk().
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import shutil
import struct
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coserver import log
from coserver.images import debpkg, kmodules, qemu_img
from coserver.images.cache import cached_build
from coserver.images.cpio import Entry, write_gzip
from coserver.images.errors import GuestBuildError, ImageError
from coserver.paths import cache_dir
from coserver.sys.files import sha256_file
from coserver.sys.run import run

_log = log.get("images.labguest")

#: Bump when the build code changes what it produces (the key then changes).
BUILD_VERSION = "1"
KERNEL_PACKAGE = "linux-image-amd64"
BUSYBOX_PACKAGE = "busybox-static"
#: What /init needs; their dependencies are found from the modules' .modinfo. Besides virtio, the
#: drivers of every emulated NIC and disk controller a hardware profile names (e1000, e1000e,
#: megasas/megasas-gen2 via megaraid_sas and sd_mod): a guest without virtio drivers, like the
#: Windows servers the product is for, uses those, so the lab guest must run protected on them too.
#: button (the ACPI power button) and evdev give /init the button's events when QEMU presses it for
#: `system_powerdown`: `coserver server stop` shuts the guest down cleanly.
ROOT_MODULES = ("virtio_pci", "virtio_blk", "virtio_net", "e1000", "e1000e", "megaraid_sas", "sd_mod",
                "ext4", "evdev", "button")
#: softdep "pre:" names we can satisfy (ext4 and jbd2 want crc32c for metadata checksums).
SOFTDEP_PROVIDERS = {"crypto-crc32c": "crc32c_generic", "crc32c": "crc32c_generic"}
DATA_DISK_SIZE = 256 * 1024 * 1024
#: ext4 options: all inode tables and the fs journal zeroed now, so the guest's kernel has no
#: lazy-init work running behind two lock-stepped copies.
MKFS_OPTIONS = ("-b", "4096", "-m", "0", "-L", "csdata",
                "-E", "lazy_itable_init=0,lazy_journal_init=0")
JOURNAL_PORT = 7777
JOURNAL_FILE = "journal.log"
CFLAGS = ("-static", "-O2", "-s", "-Wall", "-Wextra")
GUEST_SRC = Path(__file__).resolve().parent / "guest"
#: Kernel command line besides cs.*: serial console, quiet, no IPv6 (colo-compare is IPv4-only).
BASE_CMDLINE = ("console=ttyS0", "quiet", "loglevel=3", "ipv6.disable=1")

Progress = Callable[[str], None]


@dataclass(frozen=True)
class GuestInputs:
    """Everything a lab guest build depends on; guest_key() hashes it."""

    kernel: debpkg.DebPackage
    busybox_version: str
    compiler: str
    guest_dir: Path
    build_version: str = BUILD_VERSION
    params: dict[str, Any] = field(default_factory=lambda: {
        "root_modules": list(ROOT_MODULES),
        "softdep_providers": dict(sorted(SOFTDEP_PROVIDERS.items())),
        "data_disk_size": DATA_DISK_SIZE,
        "mkfs_options": list(MKFS_OPTIONS),
        "cflags": list(CFLAGS),
    })

    def source_hashes(self) -> dict[str, str]:
        """sha256 of every file under guest_dir, by relative path (caches and dotfiles skipped)."""
        out: dict[str, str] = {}
        if not self.guest_dir.is_dir():
            raise GuestBuildError(f"guest sources {self.guest_dir}: not a directory")
        for p in sorted(self.guest_dir.rglob("*")):
            rel = p.relative_to(self.guest_dir)
            if p.is_dir() or any(part.startswith(".") or part == "__pycache__" for part in rel.parts):
                continue
            out[rel.as_posix()] = hashlib.sha256(p.read_bytes()).hexdigest()
        if "journal.c" not in out or "init" not in out:
            raise GuestBuildError(f"guest sources {self.guest_dir}: journal.c or init missing")
        return out

    def material(self) -> dict[str, Any]:
        return {
            "build_version": self.build_version,
            "kernel_package": self.kernel.name,
            "kernel_version": self.kernel.version,
            "busybox_version": self.busybox_version,
            "compiler": self.compiler,
            "sources": self.source_hashes(),
            "params": self.params,
        }


def guest_key(inputs: GuestInputs) -> str:
    """The cache key: a hash of all inputs (20 hex digits)."""
    blob = json.dumps(inputs.material(), sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


def _compiler() -> tuple[str, str]:
    """(path, identity) of the C compiler: musl-gcc if present, else gcc."""
    for name in ("musl-gcc", "gcc"):
        path = shutil.which(name)
        if not path:
            continue
        try:
            out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30,
                                 check=True).stdout
        except (OSError, subprocess.SubprocessError):
            continue
        first = out.strip().splitlines()[0] if out.strip() else "unknown"
        return path, f"{name}: {first}"
    raise GuestBuildError("journal service: no C compiler (apt-get install musl-tools or gcc)")


def guest_inputs(kernel_package: str = KERNEL_PACKAGE, guest_dir: Path = GUEST_SRC) -> GuestInputs:
    """The inputs a build would use now (asks apt-cache and dpkg-query; downloads nothing)."""
    memo = cache_dir() / "guest" / "kernel-candidate.json"
    return GuestInputs(kernel=debpkg.resolve_kernel_memo(kernel_package, memo),
                       busybox_version=debpkg.installed_version(BUSYBOX_PACKAGE),
                       compiler=_compiler()[1], guest_dir=guest_dir)


@dataclass(frozen=True)
class LabGuest:
    """One built lab guest in the cache."""

    key: str
    directory: Path
    vmlinuz: Path
    initrd: Path
    data_template: Path
    journal: Path
    manifest_path: Path
    kernel_release: str
    kernel_package: str
    modules: tuple[str, ...]
    manifest: dict[str, Any] = field(repr=False, compare=False)

    def cmdline(self, ip: str, prefix: int = 24, gateway: str | None = None, *,
                port: int = JOURNAL_PORT, hostname: str | None = None) -> str:
        return kernel_cmdline(ip, prefix, gateway, port=port, hostname=hostname)

    def boot_args(self, ip: str, prefix: int = 24, gateway: str | None = None, *,
                  port: int = JOURNAL_PORT, hostname: str | None = None) -> list[str]:
        """QEMU argv: -kernel, -initrd and -append for this guest at ip/prefix."""
        return ["-kernel", str(self.vmlinuz), "-initrd", str(self.initrd),
                "-append", self.cmdline(ip, prefix, gateway, port=port, hostname=hostname)]

    def new_data_disk(self, dst: str | Path, *, overwrite: bool = False) -> Path:
        """A private copy of the data disk template (each QEMU needs its own)."""
        d = Path(dst)
        if d.exists() and not overwrite:
            raise ImageError(f"image {d}: already exists (refusing to overwrite)")
        if not d.parent.is_dir():
            raise ImageError(f"image {d}: directory {d.parent} does not exist")
        shutil.copyfile(self.data_template, d)
        return d


def kernel_cmdline(ip: str, prefix: int = 24, gateway: str | None = None, *,
                   port: int = JOURNAL_PORT, hostname: str | None = None) -> str:
    """The lab guest's kernel command line for a static IPv4 address (no DHCP, no IPv6)."""
    try:
        iface = ipaddress.IPv4Interface(f"{ip}/{prefix}")
    except ValueError as exc:
        raise ImageError(f"guest address {ip}/{prefix}: not an IPv4 address/prefix ({exc})") from exc
    net = iface.network
    if net.prefixlen < 31 and iface.ip in (net.network_address, net.broadcast_address):
        raise ImageError(f"guest address {iface}: is the network or broadcast address of {net}")
    parts = [*BASE_CMDLINE, f"cs.ip={iface.with_prefixlen}"]
    if gateway is not None:
        try:
            gw = ipaddress.IPv4Address(gateway)
        except ValueError as exc:
            raise ImageError(f"guest gateway {gateway}: not an IPv4 address") from exc
        if gw not in net or gw == iface.ip:
            raise ImageError(f"guest gateway {gw}: not another address in the guest's network {net}")
        parts.append(f"cs.gw={gw}")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ImageError(f"guest journal port {port!r}: not a TCP port")
    parts.append(f"cs.port={port}")
    if hostname is not None:
        if not hostname or len(hostname) > 63 or not all(c.isalnum() or c == "-" for c in hostname):
            raise ImageError(f"guest hostname {hostname!r}: letters, digits and '-' only")
        parts.append(f"cs.hostname={hostname}")
    return " ".join(parts)


def boot_args(guest: LabGuest, ip: str, prefix: int = 24, gateway: str | None = None, *,
              port: int = JOURNAL_PORT) -> list[str]:
    """-kernel/-initrd/-append argv for a LabGuest (same as guest.boot_args)."""
    return guest.boot_args(ip, prefix, gateway, port=port)


# ---------------------------------------------------------------- cache


def guest_cache() -> Path:
    return cache_dir() / "guest"


def load(directory: Path) -> LabGuest:
    """The LabGuest in a build directory, checked: manifest readable and every file present."""
    mpath = directory / "manifest.json"
    try:
        m = json.loads(mpath.read_text())
        files = {k: directory / v["name"] for k, v in m["files"].items()}
        guest = LabGuest(key=m["key"], directory=directory, vmlinuz=files["vmlinuz"],
                         initrd=files["initrd"], data_template=files["data"],
                         journal=files["journal"], manifest_path=mpath,
                         kernel_release=m["kernel"]["release"],
                         kernel_package=f"{m['kernel']['package']}={m['kernel']['version']}",
                         modules=tuple(m["modules"]), manifest=m)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise GuestBuildError(f"lab guest {directory}: unreadable manifest ({exc})") from exc
    for k, p in files.items():
        if not p.is_file() or p.stat().st_size != m["files"][k]["size"]:
            raise GuestBuildError(f"lab guest {directory}: {p.name} missing or of the wrong size")
    if guest.key != directory.name:
        raise GuestBuildError(f"lab guest {directory}: manifest key {guest.key} is not the dir name")
    return guest


def build_lab_guest(force: bool = False, progress: Progress | None = None, *,
                    kernel_package: str = KERNEL_PACKAGE) -> LabGuest:
    """The lab guest for the current inputs, from the cache or built now (~1 min).

    force=True rebuilds even when a build with the same key exists. progress, if given, is
    called with one short line per build step.
    """
    say = progress or (lambda _msg: None)
    inputs = guest_inputs(kernel_package)
    key = guest_key(inputs)
    return cached_build(guest_cache(), key, load=load, build=lambda tmp: _build(tmp, inputs, key, say),
                        what="lab guest", force=force, say=say)


# ---------------------------------------------------------------- build steps


def _run(argv: list[str], what: str, timeout: float = 600.0, **kw: Any) -> subprocess.CompletedProcess[str]:
    return run(argv, what, timeout=timeout, error=GuestBuildError, **kw)


def _elf_is_static(path: Path) -> bool:
    """True when an ELF64 executable has no PT_INTERP (needs no dynamic loader)."""
    data = path.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2:
        return False
    e_phoff, = struct.unpack_from("<Q", data, 0x20)
    e_phentsize, e_phnum = struct.unpack_from("<HH", data, 0x36)
    for i in range(e_phnum):
        p_type, = struct.unpack_from("<I", data, e_phoff + i * e_phentsize)
        if p_type == 3:  # PT_INTERP
            return False
    return True


def compile_journal(src: Path, out: Path) -> str:
    """Compile journal.c into a static binary; returns the compiler identity."""
    cc, ident = _compiler()
    res = _run([cc, *CFLAGS, "-o", str(out), str(src)], f"journal service {src}")
    if res.stderr.strip():
        _log.warning("images.labguest.journal.warnings", warnings=res.stderr.strip())
    if not _elf_is_static(out):
        raise GuestBuildError(f"journal service {out}: {cc} did not produce a static binary")
    return ident


def _busybox_binary() -> Path:
    out = _run(["dpkg-query", "-L", BUSYBOX_PACKAGE], f"package {BUSYBOX_PACKAGE}").stdout
    for line in out.splitlines():
        p = Path(line.strip())
        if p.name == "busybox" and p.parent.name == "bin" and p.is_file():
            if not _elf_is_static(p):
                raise GuestBuildError(f"busybox {p}: not a static binary")
            return p
    raise GuestBuildError(f"package {BUSYBOX_PACKAGE}: ships no bin/busybox")


def _initramfs(out: Path, busybox: Path, init: Path, journal: Path,
               modules: list[kmodules.KernelModule], key: str) -> None:
    applets = _run([str(busybox), "--list"], f"busybox {busybox}").stdout.split()
    entries = [Entry.dir(d) for d in ("bin", "data", "dev", "etc", "etc/cs", "lib",
                                       "lib/modules", "proc", "root", "sys", "tmp")]
    entries += [Entry.chardev("dev/console", 5, 1), Entry.chardev("dev/null", 1, 3, 0o666)]
    entries.append(Entry.file("bin/busybox", busybox.read_bytes(), 0o755))
    entries += [Entry.symlink(f"bin/{a}", "busybox")
                for a in sorted(set(applets)) if a not in ("busybox", "journal") and "/" not in a]
    entries.append(Entry.file("bin/journal", journal.read_bytes(), 0o755))
    entries.append(Entry.file("init", init.read_bytes(), 0o755))
    for m in modules:
        entries.append(Entry.file(f"lib/modules/{m.name}.ko", kmodules.read_module(m.path)))
    entries.append(Entry.file("etc/cs/modules", "".join(f"{m.name}\n" for m in modules).encode()))
    entries.append(Entry.file("etc/cs/build", f"{key}\n".encode()))
    write_gzip(entries, out)


def _data_disk(out: Path, work: Path, key: str) -> None:
    raw = work / "data.raw"
    content = work / "data-root"
    content.mkdir()
    (content / JOURNAL_FILE).touch()
    with open(raw, "wb") as f:
        f.truncate(DATA_DISK_SIZE)
    fs_uuid = str(uuid.UUID(hashlib.sha256(f"cs-data-{key}".encode()).hexdigest()[:32]))
    mkfs = shutil.which("mkfs.ext4") or "/sbin/mkfs.ext4"
    _run([mkfs, "-F", "-q", "-t", "ext4", *MKFS_OPTIONS, "-U", fs_uuid, "-d", str(content),
          str(raw)], f"data disk {raw}")
    qemu_img.convert(raw, out, "qcow2", src_fmt="raw")
    raw.unlink()


def _build(tmp: Path, inputs: GuestInputs, key: str, say: Progress) -> None:
    work = tmp / "work"
    work.mkdir()
    say("compiling the journal service")
    journal = tmp / "journal"
    compile_journal(inputs.guest_dir / "journal.c", journal)

    say(f"downloading {inputs.kernel}")
    deb = debpkg.download(inputs.kernel, work)
    say(f"unpacking {deb.name}")
    kroot = debpkg.extract(deb, work / "kernel")
    deb.unlink()
    vmlinuzes = sorted((kroot / "boot").glob("vmlinuz-*"))
    if len(vmlinuzes) != 1:
        raise GuestBuildError(f"package {inputs.kernel}: {len(vmlinuzes)} vmlinuz files in /boot")
    release = vmlinuzes[0].name[len("vmlinuz-"):]
    moddir = next((d for d in (kroot / "lib" / "modules" / release,
                               kroot / "usr" / "lib" / "modules" / release) if d.is_dir()), None)
    if moddir is None:
        raise GuestBuildError(f"package {inputs.kernel}: no modules dir for {release}")
    shutil.copyfile(vmlinuzes[0], tmp / "vmlinuz")

    say("resolving module dependencies")
    modules = kmodules.load_order(list(ROOT_MODULES), moddir, SOFTDEP_PROVIDERS)
    for m in modules:
        if not m.vermagic.startswith(release + " "):
            raise GuestBuildError(f"module {m.path}: vermagic {m.vermagic!r} is not for {release}")
    builtin = sorted(r for r in ROOT_MODULES if r in kmodules.builtin_modules(moddir))

    say(f"writing initrd.img ({len(modules)} modules)")
    busybox = _busybox_binary()
    _initramfs(tmp / "initrd.img", busybox, inputs.guest_dir / "init", journal, modules, key)

    say(f"making the {DATA_DISK_SIZE >> 20} MiB ext4 data disk")
    _data_disk(tmp / "data.qcow2", work, key)
    shutil.rmtree(work)

    files = {"vmlinuz": "vmlinuz", "initrd": "initrd.img", "data": "data.qcow2",
             "journal": "journal"}
    manifest = {
        "key": key,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "inputs": inputs.material(),
        "kernel": {"package": inputs.kernel.name, "version": inputs.kernel.version,
                   "release": release},
        "modules": [m.name for m in modules],
        "modules_builtin": builtin,
        "busybox": {"package": BUSYBOX_PACKAGE, "version": inputs.busybox_version,
                    "binary": str(busybox)},
        "data_disk": {"size": DATA_DISK_SIZE, "fs": "ext4", "journal_file": JOURNAL_FILE,
                      "mount_options": "noatime,noinit_itable"},
        "journal": {"port": JOURNAL_PORT},
        "cmdline_base": list(BASE_CMDLINE),
        "files": {k: {"name": n, "size": (tmp / n).stat().st_size, "sha256": sha256_file(tmp / n)}
                  for k, n in files.items()},
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
