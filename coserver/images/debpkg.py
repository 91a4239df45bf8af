"""Debian packages for the lab guest: resolve with apt-cache, fetch with apt-get download,
unpack with dpkg-deb -x. Nothing is installed on the host.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from coserver import log
from coserver.images.errors import GuestBuildError
from coserver.sys.run import run

_log = log.get("images.debpkg")


@dataclass(frozen=True)
class DebPackage:
    """One concrete binary package version."""

    name: str
    version: str

    def __str__(self) -> str:
        return f"{self.name}={self.version}"


def _apt_error(res: subprocess.CompletedProcess[str]) -> str:
    """apt's last line that is not a warning (W: ...)."""
    lines = [ln for ln in res.stderr.splitlines() if ln.strip() and not ln.startswith("W:")]
    return lines[-1] if lines else f"exit status {res.returncode}"


def _run(argv: list[str], what: str, timeout: float = 600.0, cwd: Path | None = None) -> str:
    return run(argv, what, timeout=timeout, error=GuestBuildError, reason=_apt_error, cwd=cwd).stdout


def _fields(stanza: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in stanza.splitlines():
        m = re.match(r"^([A-Za-z0-9-]+):\s*(.*)$", line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def candidate(name: str) -> DebPackage:
    """The version apt would install now (apt-cache's candidate) of package `name`."""
    out = _run(["apt-cache", "show", "--no-all-versions", name], f"package {name}", timeout=120)
    f = _fields(out.split("\n\n")[0])
    if "Version" not in f:
        raise GuestBuildError(f"package {name}: apt-cache knows no candidate (run apt-get update)")
    return DebPackage(f.get("Package", name), f["Version"])


def resolve_kernel(name: str) -> DebPackage:
    """A concrete linux-image package: `name` itself, or what the metapackage `name` depends on.

    linux-image-amd64 (a metapackage) -> linux-image-6.1.0-NN-amd64 at its candidate version.
    """
    out = _run(["apt-cache", "show", "--no-all-versions", name], f"package {name}", timeout=120)
    f = _fields(out.split("\n\n")[0])
    if "Version" not in f:
        raise GuestBuildError(f"package {name}: apt-cache knows no candidate (run apt-get update)")
    depends = f.get("Depends", "")
    m = re.search(r"(linux-image-[0-9][^\s,(|]*)\s*\(=\s*([^)\s]+)\)", depends)
    if m:  # a metapackage pins the real image to one version
        return DebPackage(m.group(1), m.group(2))
    return DebPackage(f.get("Package", name), f["Version"])


APT_STATE = ("/var/lib/apt/lists", "/etc/apt", "/var/lib/dpkg/status")


def apt_state_signature() -> str:
    """A hash of what apt's candidate choice depends on: package lists, apt config, dpkg status.

    Same signature, same candidates: lets a caller skip apt-cache (~1 s a call).
    """
    h = hashlib.sha256()
    for root in APT_STATE:
        base = Path(root)
        paths = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file())
        for p in paths:
            if "partial" in p.parts or p.name == "lock":
                continue
            try:
                st = p.stat()
            except OSError:
                continue
            h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def resolve_kernel_memo(name: str, memo: Path) -> DebPackage:
    """resolve_kernel(name), remembered in `memo` (JSON) while apt's state is unchanged."""
    sig = apt_state_signature()
    try:
        d = json.loads(memo.read_text())
        if d["signature"] == sig and d["query"] == name:
            return DebPackage(d["name"], d["version"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    pkg = resolve_kernel(name)
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        tmp = memo.with_name(memo.name + f".{os.getpid()}")
        tmp.write_text(json.dumps({"signature": sig, "query": name, "name": pkg.name,
                                   "version": pkg.version}) + "\n")
        os.replace(tmp, memo)
    except OSError as exc:
        _log.warning("images.debpkg.memo.failed", memo=str(memo), error=str(exc))
    return pkg


def installed_version(name: str) -> str:
    """The installed version of a host package (dpkg-query), or a GuestBuildError saying so."""
    try:
        res = subprocess.run(["dpkg-query", "-W", "-f=${Status}\t${Version}", name],
                             capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        raise GuestBuildError(f"package {name}: cannot run dpkg-query: {exc}") from exc
    status, _, version = res.stdout.partition("\t")
    if res.returncode != 0 or "install ok installed" not in status or not version:
        raise GuestBuildError(f"package {name}: not installed (apt-get install {name})")
    return version


def download(pkg: DebPackage, directory: Path) -> Path:
    """apt-get download of exactly pkg.version into directory; returns the .deb path."""
    argv = ["apt-get", "download", "-q"]
    if os.geteuid() == 0:
        # root downloading into a private temp dir: apt's _apt sandbox user could not write there
        argv += ["-o", "APT::Sandbox::User=root"]
    _run([*argv, f"{pkg.name}={pkg.version}"], f"package {pkg}", cwd=directory)
    debs = sorted(directory.glob(f"{pkg.name}_*.deb"))
    if len(debs) != 1:
        raise GuestBuildError(f"package {pkg}: apt-get download left {len(debs)} .deb files "
                              f"in {directory}")
    _log.info("images.debpkg.downloaded", package=str(pkg), deb=str(debs[0]), bytes=debs[0].stat().st_size)
    return debs[0]


def extract(deb: Path, directory: Path) -> Path:
    """dpkg-deb -x deb directory (no maintainer scripts run, nothing installed)."""
    directory.mkdir(parents=True, exist_ok=True)
    _run(["dpkg-deb", "-x", str(deb), str(directory)], f"package file {deb}")
    return directory
