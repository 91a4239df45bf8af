"""The Vagrant box of the Vagrant lab: Debian 12 for vagrant-libvirt, built here from Debian packages.

The Vagrant lab's VMs (two CoServers and the witness) reach no internet, so their box carries
everything a CoServer needs: every package of deps/apt-setup.txt and deps/apt-libvirt.txt (the
lists `make setup` checks, so `make setup` in a VM finds them installed), libvirt-daemon-system
(libvirtd under systemd, as on a real CoServer), and what Vagrant needs of a box.

Contents (Debian bookworm, `mmdebstrap --variant=minbase`, no recommends, no docs, man pages or
locales):
  * Debian's kernel with all its modules (bridge, tun, veth, netfilter) and Debian's own initrd
    (with only the disk drivers vagrant-libvirt's buses need: it boots faster); systemd, udev;
    kernel command line `net.ifnames=0`, so the NICs are eth0, eth1, ...
  * systemd-networkd: eth0 (vagrant-libvirt's management network) by DHCP, the other NICs left to
    the lab's provisioning; no resolver (an empty /etc/resolv.conf).
  * user vagrant (uid 1000, password vagrant), sudo without a password, Vagrant's insecure public
    key in ~vagrant/.ssh/authorized_keys; sshd with `UseDNS no`. No SSH host keys and an empty
    /etc/machine-id: each VM makes its own at first boot (coserver-ssh-keygen.service: Ed25519 and
    ECDSA keys, no RSA key, which takes 25-80 s under TCG; systemd the machine id).
  * apt-daily, e2scrub, fstrim and man-db timers masked; libvirt's `default` network not autostarted.

The disk (coserver.images.bootdisk, no loop devices or mounts): MBR, SYSLINUX on a FAT16
partition 1, ext4 root on partition 2; 16 GiB virtual, converted to qcow2 with the zero blocks
unallocated. The box is a tar of metadata.json, box.img (that qcow2) and an empty Vagrantfile.

build_vagrant_box() returns a VagrantBox from cache_dir()/vagrant-box/<key>/, building it first
when no build with the same key exists. The key hashes every input: the package list (read from
deps/ now), the kernel version apt resolves now, Vagrant's public key, the mmdebstrap and
syslinux versions, every file under coserver/images/vagrant/, the disk geometry, the kernel
command line and the box's format. .debs already in the host's /var/cache/apt/archives are
hard-linked into the build (copied if they cannot be) so that apt does not download them again.
"""

from __future__ import annotations

import glob
import hashlib
import io
import json
import os
import re
import shlex
import shutil
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from coserver import log
from coserver.images import bootdisk, debpkg, qemu_img
from coserver.images.cache import cached_build
from coserver.images.errors import GuestBuildError, ImageError
from coserver.paths import cache_dir
from coserver.sys.files import sha256_file

_log = log.get("images.vagrantbox")

WHAT = "Vagrant box"
#: Bump when the build code changes what it produces (the key then changes).
BUILD_VERSION = "1"
SRC = Path(__file__).resolve().parent / "vagrant"
#: The repo's apt lists (`make setup` reads the same files); the box installs all they name.
DEPS_DIR = Path(__file__).resolve().parents[2] / "deps"
APT_LISTS = ("apt-setup.txt", "apt-libvirt.txt")
#: What a Vagrant box needs besides the lists, and libvirtd under systemd as on a real CoServer.
BOX_PACKAGES = ("systemd-sysv", "udev", "linux-image-amd64", "initramfs-tools", "openssh-server",
                "sudo", "rsync", "python3", "ca-certificates", "iptables", "less", "procps",
                "libvirt-daemon-system")
KERNEL_PACKAGE = "linux-image-amd64"
VARIANT = "minbase"
MASKED_UNITS = ("apt-daily.timer", "apt-daily-upgrade.timer", "e2scrub_all.timer",
                "e2scrub_reap.service", "fstrim.timer", "man-db.timer")
ENABLED_UNITS = ("systemd-networkd.service", "coserver-ssh-keygen.service")
USER, UID, PASSWORD = "vagrant", 1000, "vagrant"
#: Groups the vagrant user joins when the box has them (virsh without sudo).
USER_GROUPS = ("libvirt",)
HOSTNAME = "coserver-box"
LIBVIRT_AUTOSTART = "etc/libvirt/qemu/networks/autostart/default.xml"

GIB = 1 << 30
LAYOUT = bootdisk.Layout(16 * GIB, boot_start=2048, boot_sectors=128 * 2048, boot_label="BOOT",
                         mkfs_ext4=("-b", "4096", "-m", "1", "-L", "root",
                                    "-E", "lazy_itable_init=0,lazy_journal_init=0")).checked()
CMDLINE = ("rw", "console=ttyS0,115200", "net.ifnames=0", "biosdevname=0", "quiet")
BOX_NAME = "coserver-debian12.box"
IMAGE_NAME = "box.img"
METADATA = {"provider": "libvirt", "format": "qcow2", "virtual_size": LAYOUT.size // GIB}
VAGRANTFILE = ("# coserver Debian 12 box (coserver.images.vagrantbox): nothing set here; the Vagrant\n"
               "# lab's own Vagrantfile sets the provider, CPUs, memory and networks.\n")
#: box.img's clusters are compressed (qemu-img convert -c): 1.18 GB -> 0.40 GB for ~65 s more of
#: build, no slower a boot under TCG (64-89 s to SSH either way), `vagrant box add` 2.2 s instead of
#: 4.4 s. So the box file is a plain tar: gzip over it would gain little for more time (a gzip -1 tar
#: of the uncompressed image: 468 MB, +26 s to build, 10.7 s to add).
IMAGE_COMPRESSED = True
BOX_COMPRESSION = "none"
DEB_CACHE = Path("/var/cache/apt/archives")
VAGRANT_KEYS_GLOB = "/usr/share/rubygems-integration/all/gems/vagrant-*/keys"

_PACKAGE_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")

Progress = Callable[[str], None]


# ---------------------------------------------------------------- the package list


def parse_apt_list(text: str, source: str) -> list[str]:
    """Package names of one deps/apt-*.txt: whitespace-separated, `#` to the end of a line a comment."""
    names: list[str] = []
    for n, line in enumerate(text.splitlines(), 1):
        for word in line.split("#", 1)[0].split():
            if not _PACKAGE_RE.match(word):
                raise ImageError(f"{source} line {n}: {word!r} is not a Debian package name")
            names.append(word)
    return names


def box_packages(deps_dir: Path = DEPS_DIR) -> tuple[str, ...]:
    """Every package of the apt lists and BOX_PACKAGES, sorted, each once."""
    names = set(BOX_PACKAGES)
    for name in APT_LISTS:
        path = deps_dir / name
        try:
            text = path.read_text()
        except OSError as exc:
            raise ImageError(f"{WHAT}: cannot read the package list {path} ({exc.strerror or exc}; "
                             f"run from a coserver checkout)") from exc
        names.update(parse_apt_list(text, str(path)))
    return tuple(sorted(names))


def vagrant_keys_dir(pattern: str = VAGRANT_KEYS_GLOB) -> Path:
    """Vagrant's keys directory (vagrant.pub, the insecure private key `vagrant`) of the newest install."""
    found = [Path(p) for p in glob.glob(pattern) if (Path(p) / "vagrant.pub").is_file()]
    if not found:
        raise GuestBuildError(f"{WHAT}: Vagrant's insecure public key not found ({pattern}/vagrant.pub): "
                              f"apt-get install vagrant")

    def version(p: Path) -> tuple[int, ...]:
        m = re.search(r"vagrant-([0-9.]+)", str(p))
        return tuple(int(x) for x in m.group(1).split(".") if x) if m else ()
    return max(found, key=version)


# ---------------------------------------------------------------- inputs and key


def _default_params() -> dict[str, Any]:
    return {"suite": bootdisk.SUITE, "sources": list(bootdisk.SOURCES), "variant": VARIANT,
            "dpkg_excludes": list(bootdisk.DPKG_EXCLUDES), "masked": list(MASKED_UNITS),
            "enabled": list(ENABLED_UNITS), "user": [USER, UID, PASSWORD], "groups": list(USER_GROUPS),
            "hostname": HOSTNAME, "disk_size": LAYOUT.size, "boot_start": LAYOUT.boot_start,
            "boot_sectors": LAYOUT.boot_sectors, "boot_label": LAYOUT.boot_label,
            "mkfs_ext4": list(LAYOUT.mkfs_ext4), "cmdline": list(CMDLINE), "metadata": METADATA,
            "vagrantfile": VAGRANTFILE, "image_compressed": IMAGE_COMPRESSED, "box_compression": BOX_COMPRESSION}


@dataclass(frozen=True)
class BoxInputs:
    """Everything one build depends on; box_key() hashes it."""

    packages: tuple[str, ...]
    kernel: debpkg.DebPackage
    vagrant_pub: str                     # Vagrant's insecure public key (authorized_keys)
    mmdebstrap_version: str
    syslinux_version: str
    src_dir: Path = SRC
    build_version: str = BUILD_VERSION
    params: dict[str, Any] = field(default_factory=_default_params)

    def material(self) -> dict[str, Any]:
        return {"build_version": self.build_version, "packages": list(self.packages),
                "kernel": str(self.kernel), "vagrant_pub_sha256": hashlib.sha256(self.vagrant_pub.encode()).hexdigest(),
                "mmdebstrap": self.mmdebstrap_version, "syslinux": self.syslinux_version,
                "sources": bootdisk.tree_hashes(self.src_dir, WHAT), "params": self.params}


def box_key(inputs: BoxInputs) -> str:
    blob = json.dumps(inputs.material(), sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


def box_cache() -> Path:
    return cache_dir() / "vagrant-box"


def box_inputs(deps_dir: Path = DEPS_DIR) -> BoxInputs:
    """The inputs a build would use now (reads deps/, asks apt-cache and dpkg-query; downloads nothing)."""
    packages = box_packages(deps_dir)
    pub = (vagrant_keys_dir() / "vagrant.pub").read_text().strip()
    for name, package in (("mkfs.fat", "dosfstools"), ("mcopy", "mtools"), ("mkfs.ext4", "e2fsprogs"),
                          ("chroot", "coreutils")):
        bootdisk.tool(name, package, WHAT)
    if not bootdisk.MBR_BIN.is_file():
        raise GuestBuildError(f"{WHAT}: {bootdisk.MBR_BIN} not found (apt-get install syslinux-common)")
    return BoxInputs(packages=packages,
                     kernel=debpkg.resolve_kernel_memo(KERNEL_PACKAGE, box_cache() / "kernel-candidate.json"),
                     vagrant_pub=pub, mmdebstrap_version=debpkg.installed_version("mmdebstrap"),
                     syslinux_version=debpkg.installed_version("syslinux"))


# ---------------------------------------------------------------- the built box


@dataclass(frozen=True)
class VagrantBox:
    """One built box in the cache."""

    key: str
    directory: Path
    box: Path                   # the .box file (a tar) for `vagrant box add`
    image: Path                 # the same box.img, outside the tar
    manifest_path: Path
    kernel_release: str
    manifest: dict[str, Any] = field(repr=False, compare=False)

    @property
    def size_bytes(self) -> int:
        return int(self.manifest["box"]["size"])

    @property
    def virtual_size_gib(self) -> int:
        return int(self.manifest["metadata"]["virtual_size"])

    def facts(self) -> dict[str, Any]:
        """What `coserver image vagrant-box --json` prints."""
        m = self.manifest
        return {"key": self.key, "box": str(self.box), "image": str(self.image),
                "size_bytes": self.size_bytes, "virtual_size_gib": self.virtual_size_gib,
                "image_bytes": m["image"]["size"], "packages": len(m["packages"]),
                "kernel_release": self.kernel_release, "sha256": m["box"]["sha256"],
                "built_at": m["built_at"], "manifest": str(self.manifest_path)}


def load(directory: Path) -> VagrantBox:
    """The VagrantBox in a build directory, checked: manifest readable, box and image present."""
    mpath = directory / "manifest.json"
    try:
        m = json.loads(mpath.read_text())
        box = VagrantBox(key=m["key"], directory=directory, box=directory / m["box"]["name"],
                         image=directory / m["image"]["name"], manifest_path=mpath,
                         kernel_release=m["kernel"]["release"], manifest=m)
        sizes = ((box.box, m["box"]["size"]), (box.image, m["image"]["size"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise GuestBuildError(f"{WHAT} {directory}: unreadable manifest ({exc})") from exc
    for path, size in sizes:
        if not path.is_file() or path.stat().st_size != size:
            raise GuestBuildError(f"{WHAT} {directory}: {path.name} missing or of the wrong size")
    if box.key != directory.name:
        raise GuestBuildError(f"{WHAT} {directory}: manifest key {box.key} is not the directory's name")
    return box


def build_vagrant_box(*, force: bool = False, progress: Progress | None = None,
                      deb_cache: Path | None = DEB_CACHE) -> VagrantBox:
    """The box, from the cache or built now (as root: mmdebstrap --mode=root).

    force=True rebuilds even when a build with the same key exists; progress, if given, gets one
    short line per build step; deb_cache: a directory of .debs to reuse (None: download all).
    """
    say = progress or (lambda _msg: None)
    inputs = box_inputs()
    key = box_key(inputs)
    return cached_build(box_cache(), key, load=load,
                        build=lambda tmp: _build(tmp, inputs, key, deb_cache, say),
                        what=WHAT, force=force, say=say)


# ---------------------------------------------------------------- build steps


def deb_filename(name: str, version: str, arch: str) -> str:
    """The name apt gives a downloaded .deb (an epoch's ':' written %3a)."""
    return f"{name}_{version.replace(':', '%3a')}_{arch}.deb"


def seed_debs(src: Path, archives: Path) -> list[str]:
    """Hard-link (else copy) every regular *.deb of src into archives; the names seeded."""
    archives.mkdir(parents=True, exist_ok=True)
    seeded = []
    try:
        entries = sorted(os.scandir(src), key=lambda e: e.name)
    except OSError as exc:
        _log.warning("images.vagrantbox.debs.unreadable", dir=str(src), error=str(exc))
        return []
    for entry in entries:
        if not entry.name.endswith(".deb") or not entry.is_file(follow_symlinks=False):
            continue
        dst = archives / entry.name
        try:
            os.link(entry.path, dst)
        except OSError:
            try:
                shutil.copyfile(entry.path, dst)
            except OSError:
                continue
        seeded.append(entry.name)
    return seeded


def _mmdebstrap(rootfs: Path, work: Path, packages: tuple[str, ...], deb_cache: Path | None,
                say: Progress) -> tuple[list[str], Path]:
    """The Debian tree; (the .debs seeded from deb_cache, the listing of the archives before cleanup)."""
    # the essential set's .debs are kept until the listing below (which tells what apt downloaded);
    # mmdebstrap's cleanup removes them all
    options = [*bootdisk.dpkg_path_options(), "--skip=essential/unlink"]
    seeded: list[str] = []
    if deb_cache is not None and deb_cache.is_dir():
        seeded = seed_debs(deb_cache, rootfs / "var/cache/apt/archives")
        say(f"{len(seeded)} .debs from {deb_cache} offered to apt")
        options.append("--skip=check/empty")  # the target holds the seeded archives
    listing = work / "archives.txt"
    # initramfs-tools settings must be in place before the kernel's postinst makes the initrd
    options.append(f"--setup-hook=sync-in {SRC / 'setup'} /")
    # before mmdebstrap's cleanup empties the archives: what is there, to tell what apt downloaded
    options.append(f"--customize-hook=find \"$1/var/cache/apt/archives\" -maxdepth 1 -name '*.deb' "
                   f"-printf '%s\\t%f\\n' > {shlex.quote(str(listing))}")
    bootdisk.mmdebstrap(rootfs, packages, what=WHAT, say=say, options=options, variant=VARIANT,
                        timeout=3600)
    return seeded, listing


def deb_stats(listing: Path, seeded: list[str], installed: list[tuple[str, str, str]]) -> dict[str, int]:
    """How many .debs (and bytes) the build took from the host's cache, and how many apt downloaded."""
    sizes: dict[str, int] = {}
    if listing.is_file():
        for line in listing.read_text().splitlines():
            size, _, name = line.partition("\t")
            if name and size.isdigit():
                sizes[name] = int(size)
    seeded_set = set(seeded)
    wanted = {deb_filename(*p) for p in installed}
    reused = [n for n in sizes if n in seeded_set and n in wanted]
    downloaded = [n for n in sizes if n not in seeded_set]
    return {"seeded_files": len(seeded), "reused_files": len(reused),
            "reused_bytes": sum(sizes[n] for n in reused), "downloaded_files": len(downloaded),
            "downloaded_bytes": sum(sizes[n] for n in downloaded)}


def _installed(rootfs: Path) -> list[tuple[str, str, str]]:
    out = bootdisk.run_step(["dpkg-query", f"--admindir={rootfs / 'var/lib/dpkg'}", "-W",
                             "-f=${Package}\t${Version}\t${Architecture}\n"], f"{WHAT} packages")
    return [(a, b, c) for a, b, c in (ln.split("\t") for ln in out.splitlines() if ln.count("\t") == 2)]


def _chroot(rootfs: Path, argv: list[str], what: str, **kw: Any) -> str:
    return bootdisk.run_step([bootdisk.tool("chroot", "coreutils", WHAT), str(rootfs), *argv], what, **kw)


def _customize(rootfs: Path, vagrant_pub: str, root_uuid: str) -> None:
    """Our files, the vagrant user, units enabled and masked, a blank identity."""
    shutil.copytree(SRC / "root", rootfs, symlinks=True, dirs_exist_ok=True)
    (rootfs / "etc/sudoers.d/vagrant").chmod(0o440)
    _chroot(rootfs, ["visudo", "--check", "--quiet", "--file", "/etc/sudoers.d/vagrant"], "the vagrant user's sudoers")
    _chroot(rootfs, ["useradd", "--create-home", "--uid", str(UID), "--user-group",
                     "--shell", "/bin/bash", USER], "the vagrant user")
    _chroot(rootfs, ["chpasswd"], "the vagrant user's password", input=f"{USER}:{PASSWORD}\n")
    groups = (rootfs / "etc/group").read_text()
    joined = [g for g in USER_GROUPS if re.search(rf"^{re.escape(g)}:", groups, re.MULTILINE)]
    if joined:
        _chroot(rootfs, ["usermod", "--append", "--groups", ",".join(joined), USER], "the vagrant user's groups")
    home = rootfs / "home" / USER
    ssh = home / ".ssh"
    ssh.mkdir(mode=0o700, exist_ok=True)
    (ssh / "authorized_keys").write_text(vagrant_pub + "\n")
    (ssh / "authorized_keys").chmod(0o600)
    for p in (ssh, ssh / "authorized_keys"):
        os.chown(p, UID, UID)
    _chroot(rootfs, ["systemctl", "enable", "--quiet", *ENABLED_UNITS], "units enabled")
    _chroot(rootfs, ["systemctl", "mask", "--quiet", *MASKED_UNITS], "units masked")
    (rootfs / LIBVIRT_AUTOSTART).unlink(missing_ok=True)
    for key in (rootfs / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    (rootfs / "etc/fstab").write_text(
        "# coserver Vagrant box: the root filesystem on partition 2 of the boot disk (partition 1, the\n"
        "# FAT boot partition with SYSLINUX, the kernel and the initrd, is not mounted)\n"
        f"UUID={root_uuid} / ext4 rw,noatime,errors=remount-ro 0 1\n")
    (rootfs / "etc/hostname").write_text(HOSTNAME + "\n")
    (rootfs / "etc/hosts").write_text(f"127.0.0.1\tlocalhost\n127.0.1.1\t{HOSTNAME}\n"
                                      "::1\tlocalhost ip6-localhost ip6-loopback\n")
    resolv = rootfs / "etc/resolv.conf"
    resolv.unlink(missing_ok=True)
    resolv.write_text("# coserver Vagrant box: no name server (the lab has none; use /etc/hosts)\n")
    # systemd makes a machine id at first boot when the file is empty
    (rootfs / "etc/machine-id").write_text("")
    dbus_id = rootfs / "var/lib/dbus/machine-id"
    if dbus_id.exists() or dbus_id.is_symlink():
        dbus_id.unlink()
        dbus_id.symlink_to("/etc/machine-id")


def write_box(box: Path, image: Path, metadata: dict[str, Any] = METADATA,
              vagrantfile: str = VAGRANTFILE) -> None:
    """The .box file: a tar of metadata.json, Vagrantfile and box.img (vagrant-libvirt's format 1)."""
    mtime = int(time.time())

    def add(tar: tarfile.TarFile, name: str, size: int, f: IO[bytes]) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = size, mtime, 0o644
        info.uname = info.gname = "root"
        tar.addfile(info, f)
    with tarfile.open(box, "w", format=tarfile.GNU_FORMAT) as tar:
        for name, text in (("metadata.json", json.dumps(metadata) + "\n"), ("Vagrantfile", vagrantfile)):
            data = text.encode()
            add(tar, name, len(data), io.BytesIO(data))
        with open(image, "rb") as f:
            add(tar, IMAGE_NAME, os.fstat(f.fileno()).st_size, f)


def _build(tmp: Path, inputs: BoxInputs, key: str, deb_cache: Path | None, say: Progress) -> None:
    try:
        _build_steps(tmp, inputs, key, deb_cache, say)
    except OSError as exc:
        raise GuestBuildError(f"{WHAT}: {exc}") from exc


def _build_steps(tmp: Path, inputs: BoxInputs, key: str, deb_cache: Path | None, say: Progress) -> None:
    work = tmp / "work"
    work.mkdir()
    rootfs = work / "rootfs"
    t0 = time.monotonic()
    seeded, listing = _mmdebstrap(rootfs, work, inputs.packages, deb_cache, say)
    t_strap = time.monotonic() - t0
    root_uuid = bootdisk.derived_uuid("cs-vagrant", key, "root")
    say("the vagrant user, sshd, networkd, units masked, a blank identity")
    _customize(rootfs, inputs.vagrant_pub, root_uuid)
    debs = deb_stats(listing, seeded, _installed(rootfs))
    t1 = time.monotonic()
    raw = work / "disk.raw"
    facts = bootdisk.make_disk(raw, rootfs, LAYOUT, cmdline=CMDLINE, root_uuid=root_uuid,
                               disk_sig=bootdisk.disk_id("cs-vagrant", key), label="debian12",
                               comment="coserver Vagrant box", what=WHAT, say=say)
    missing = sorted(set(inputs.packages) - set(facts.packages))
    if missing:
        raise GuestBuildError(f"{WHAT}: packages not installed in the tree: {', '.join(missing)}")
    shutil.rmtree(rootfs)
    image = tmp / IMAGE_NAME
    say(f"converting to qcow2{' (compressed)' if IMAGE_COMPRESSED else ''}")
    qemu_img.convert(raw, image, "qcow2", src_fmt="raw", compress=IMAGE_COMPRESSED, timeout=1800)
    shutil.rmtree(work)
    t_disk = time.monotonic() - t1
    say(f"packing {BOX_NAME}")
    box = tmp / BOX_NAME
    write_box(box, image)
    t_box = time.monotonic() - t1 - t_disk
    manifest = {
        "key": key,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seconds": {"mmdebstrap": round(t_strap, 1), "disk": round(t_disk, 1), "box": round(t_box, 1),
                    "total": round(time.monotonic() - t0, 1)},
        "inputs": inputs.material(),
        "debs": debs,
        **facts.manifest(str(inputs.kernel)),
        "metadata": METADATA,
        "image": {"name": image.name, "format": "qcow2", "size": image.stat().st_size,
                  "virtual_size": LAYOUT.size, "compressed": IMAGE_COMPRESSED},
        "box": {"name": box.name, "size": box.stat().st_size, "compression": BOX_COMPRESSION,
                "sha256": sha256_file(box)},
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


__all__ = ["BoxInputs", "VagrantBox", "box_inputs", "box_key", "box_packages", "build_vagrant_box", "load",
           "parse_apt_list", "vagrant_keys_dir", "write_box"]
