#!/usr/bin/env python3
"""Build a COLO-capable QEMU from Debian's source package, cached outside the repo.

Why: Debian 12's QEMU (7.2) deadlocks at the first COLO checkpoint under TCG,
bookworm-backports' 10.0.2 never enters COLO, and every 10.x needs the fixes
in qemu/patches/ (see each patch's header). So `make setup` builds a pinned
QEMU with those patches when the system one fails the COLO self-test.

What: only the x86_64 system emulator (plus qemu-img/qemu-nbd), TCG and KVM,
built as just those three ninja targets (QEMU's own test binaries would add
a fifth to the build time),
replication and the COLO proxy on, everything the lab does not need off.
Where: <cache>/qemu/<key>/ with key = hash(source version, patches, configure
options, this script's BUILD_REV); a rebuild happens only when one changes.
The source comes through a private apt configuration (deb-src lines for sid
and trixie) so the host's own apt sources are left alone. Debian's pool drops
superseded versions, so SOURCE_VERSIONS is a short list tried in order; the
COLO self-test (`coserver doctor`) is the judge of the result.

Stdlib only: it runs before and without the project's venv. Prints the path
of the built qemu-system-x86_64 on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

BUILD_REV = "2"
HERE = Path(__file__).resolve().parent

# (Debian source version, patch series directory under qemu/patches/)
SOURCE_VERSIONS: list[tuple[str, str]] = [
    ("1:10.2.2+ds-1", "10.2"),
    ("1:10.0.13+ds-0+deb13u1", "10.0"),
]

DEB_SRC_LINES = """\
deb-src http://deb.debian.org/debian sid main
deb-src http://deb.debian.org/debian trixie main
deb-src http://deb.debian.org/debian-security trixie-security main
"""

# The Python packages QEMU's configure needs; the +ds tarball drops QEMU's bundled wheels.
BUILD_PY_PACKAGES = ["meson==1.9.0", "pycotap==1.3.1"]

TARGETS = ["qemu-system-x86_64", "qemu-img", "qemu-nbd"]

CONFIGURE_OPTIONS = [
    "--target-list=x86_64-softmmu",
    "--without-default-features",
    "--enable-tcg",
    "--enable-kvm",
    "--enable-replication",
    "--enable-colo-proxy",
    "--enable-slirp",
    "--enable-gnutls",      # TLS on the migration, NBD and proxy streams (coserver.colo.tls)
    "--enable-fdt=system",
    "--enable-tools",
    "--disable-docs",
    "--disable-rust",
    "--disable-werror",
    "--disable-install-blobs",
    "--disable-guest-agent",
    "--disable-gtk",
    "--disable-sdl",
    "--disable-vnc",
    "--disable-opengl",
    "--disable-spice",
    "--disable-virglrenderer",
    "--disable-xen",
]


def log(msg: str) -> None:
    print(f"[build-qemu] {msg}", file=sys.stderr, flush=True)


def run(argv: list[str], cwd: Path | None = None, env: dict | None = None, quiet_log: Path | None = None) -> None:
    """Run argv (a list, never a shell string); on failure show the log's tail and stop."""
    if quiet_log is None:
        subprocess.run(argv, cwd=cwd, env=env, check=True)
        return
    with open(quiet_log, "ab") as out:
        proc = subprocess.run(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = quiet_log.read_text(errors="replace").splitlines()[-25:]
        sys.stderr.write("\n".join(tail) + "\n")
        raise SystemExit(f"build-qemu: {argv[0]} failed (exit {proc.returncode}); log: {quiet_log}")


def cache_root() -> Path:
    env = os.environ.get("COSERVER_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "coserver"


def build_key(version: str, series: str) -> str:
    h = hashlib.sha256()
    h.update(f"rev={BUILD_REV}\nversion={version}\n".encode())
    h.update("\n".join(CONFIGURE_OPTIONS + BUILD_PY_PACKAGES + TARGETS).encode())
    for patch in sorted((HERE / "patches" / series).glob("*.patch")):
        h.update(patch.name.encode())
        h.update(patch.read_bytes())
    return h.hexdigest()[:16]


class PrivateApt:
    """apt-get with its own sources list, lists and cache: the host's apt config is untouched."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "lists" / "partial").mkdir(parents=True, exist_ok=True)
        (root / "cache" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
        self.sources = root / "sources.list"
        self.sources.write_text(DEB_SRC_LINES)

    def argv(self, *args: str) -> list[str]:
        return ["apt-get", "-q",
                "-o", f"Dir::Etc::SourceList={self.sources}",
                "-o", "Dir::Etc::SourceParts=/dev/null",
                "-o", f"Dir::State::Lists={self.root / 'lists'}",
                "-o", f"Dir::Cache={self.root / 'cache'}",
                "-o", "APT::Sandbox::User=root",
                *args]

    def update(self, logf: Path) -> None:
        run(self.argv("update"), quiet_log=logf)

    def download_source(self, version: str, dest: Path, logf: Path) -> bool:
        dest.mkdir(parents=True, exist_ok=True)
        with open(logf, "ab") as out:
            proc = subprocess.run(self.argv("source", "--download-only", f"qemu={version}"),
                                  cwd=dest, stdout=out, stderr=subprocess.STDOUT)
        return proc.returncode == 0 and any(dest.glob("*.orig.tar.*"))


def upstream_version(version: str) -> str:
    """'1:10.2.2+ds-1' -> '10.2.2+ds' (the orig tarball's version)."""
    v = version.split(":", 1)[-1]
    return v.rsplit("-", 1)[0]


def extract(src_dir: Path, version: str, dest: Path) -> Path:
    orig = next(src_dir.glob(f"qemu_{upstream_version(version)}.orig.tar.*"))
    log(f"extracting {orig.name}")
    with tarfile.open(orig) as tar:
        tar.extractall(dest, filter="tar")
    tops = [p for p in dest.iterdir() if p.is_dir()]
    if len(tops) != 1:
        raise SystemExit(f"build-qemu: {orig}: expected one top directory, got {len(tops)}")
    return tops[0]


def disable_edk2_unpack(tree: Path) -> None:
    """The +ds tarball has no edk2 firmware blobs: stop meson from unpacking them."""
    meson = tree / "meson.build"
    text = meson.read_text()
    needle = "    unpack_edk2_blobs = bzip2.found()\n"
    if needle not in text:
        raise SystemExit(f"build-qemu: {meson}: edk2 unpack line not found; update disable_edk2_unpack()")
    meson.write_text(text.replace(needle, "    unpack_edk2_blobs = false\n"))


def apply_patches(tree: Path, series: str, logf: Path) -> None:
    for patch in sorted((HERE / "patches" / series).glob("*.patch")):
        log(f"applying {series}/{patch.name}")
        run(["patch", "-p1", "--forward", "--batch", "-i", str(patch)], cwd=tree, quiet_log=logf)


def build_venv(root: Path, logf: Path) -> Path:
    venv = root / "build-venv"
    marker = venv / ".packages"
    wanted = "\n".join(BUILD_PY_PACKAGES)
    if not marker.is_file() or marker.read_text() != wanted:
        shutil.rmtree(venv, ignore_errors=True)
        log("creating the build venv (meson, pycotap)")
        run([sys.executable, "-m", "venv", str(venv)], quiet_log=logf)
        run([str(venv / "bin" / "pip"), "install", "-q", *BUILD_PY_PACKAGES], quiet_log=logf)
        marker.write_text(wanted)
    return venv / "bin" / "python3"


def build(version: str, series: str, root: Path) -> Path:
    key = build_key(version, series)
    prefix = root / "qemu" / key
    binary = prefix / "bin" / "qemu-system-x86_64"
    if binary.is_file():
        log(f"cached: QEMU {version} + {series} patches at {prefix}")
        return binary
    work = root / "qemu-work"
    work.mkdir(parents=True, exist_ok=True)
    logf = work / f"build-{key}.log"
    logf.write_text("")
    apt = PrivateApt(root / "apt")
    src_dir = root / "qemu-src" / version.replace(":", "_")
    if not any(src_dir.glob("*.orig.tar.*")):
        log("fetching the source index (private apt config)")
        apt.update(logf)
        log(f"downloading Debian source qemu={version}")
        if not apt.download_source(version, src_dir, logf):
            shutil.rmtree(src_dir, ignore_errors=True)
            raise FileNotFoundError(version)
    python = build_venv(root, logf)
    with tempfile.TemporaryDirectory(dir=work, prefix=f"tree-{key}-") as tmp:
        tree = extract(src_dir, version, Path(tmp))
        disable_edk2_unpack(tree)
        apply_patches(tree, series, logf)
        staging = root / "qemu" / f".{key}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        builddir = tree / "build"
        builddir.mkdir()
        log("configure")
        run([str(tree / "configure"), f"--prefix={staging}", f"--python={python}", *CONFIGURE_OPTIONS],
            cwd=builddir, quiet_log=logf)
        jobs = str(os.cpu_count() or 2)
        log(f"ninja -j{jobs} {' '.join(TARGETS)} (about 4 minutes on 2 cores)")
        run(["ninja", "-j", jobs, *TARGETS], cwd=builddir, quiet_log=logf)
        (staging / "bin").mkdir(parents=True)
        for target in TARGETS:
            shutil.copy2(builddir / target, staging / "bin" / target)
    (staging / "coserver-build.json").write_text(json.dumps(
        {"debian_source_version": version, "patch_series": series, "key": key,
         "patches": sorted(p.name for p in (HERE / "patches" / series).glob("*.patch")),
         "configure": CONFIGURE_OPTIONS, "targets": TARGETS}, indent=2) + "\n")
    shutil.rmtree(prefix, ignore_errors=True)
    staging.rename(prefix)
    log(f"built QEMU {version} at {prefix}")
    return binary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=None, help="cache root (default: COSERVER_CACHE or ~/.cache/coserver)")
    parser.add_argument("--version", dest="only", default=None, help="build just this Debian source version")
    args = parser.parse_args()
    root = args.cache or cache_root()
    candidates = [(v, s) for v, s in SOURCE_VERSIONS if args.only in (None, v)]
    if not candidates:
        raise SystemExit(f"build-qemu: --version {args.only!r} is not one of {[v for v, _ in SOURCE_VERSIONS]}")
    for version, series in candidates:
        try:
            print(build(version, series, root))
            return 0
        except FileNotFoundError:
            log(f"source qemu={version} is no longer in Debian's pool; trying the next version")
    raise SystemExit("build-qemu: none of the accepted QEMU source versions could be downloaded: "
                     + ", ".join(v for v, _ in SOURCE_VERSIONS))


if __name__ == "__main__":
    sys.exit(main())
