"""Where coserver keeps things outside the repo, and which QEMU it runs.

Every command that runs QEMU or qemu-img asks qemu_install() here: this is the
one place that decides the binary (env COSERVER_QEMU, else the choice `make
setup` recorded after the COLO self-test, else the system's). Builds and
images are cached outside the repo, under cache_dir(), keyed by their inputs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from coserver.errors import CoserverError

SYSTEM_QEMU = "qemu-system-x86_64"
FIRMWARE_DIRS = ("/usr/share/seabios", "/usr/share/qemu")


class QemuNotFound(CoserverError):
    """No usable QEMU binary where we looked."""


def cache_dir() -> Path:
    """Root of coserver's caches (QEMU builds, guest images): COSERVER_CACHE or XDG cache."""
    env = os.environ.get("COSERVER_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "coserver"


def selection_file() -> Path:
    """Where `make setup` records the QEMU it chose and why (JSON)."""
    return cache_dir() / "qemu-selected.json"


@dataclass(frozen=True)
class QemuInstall:
    """One QEMU: the system emulator, its qemu-img, firmware dirs, and why it was chosen."""

    system: Path
    img: Path
    version: str
    source: str  # "env", "selected", "system"
    reason: str

    def firmware_args(self) -> list[str]:
        """-L options so a build without installed blobs still finds SeaBIOS and option ROMs."""
        args: list[str] = []
        for d in FIRMWARE_DIRS:
            if Path(d).is_dir():
                args += ["-L", d]
        return args


def _version_of(binary: Path) -> str:
    try:
        out = subprocess.run([str(binary), "--version"], capture_output=True, text=True,
                             timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise QemuNotFound(f"{binary}: cannot run --version: {exc}") from exc
    m = re.search(r"version (\S+)", out)
    return m.group(1) if m else out.strip().splitlines()[0]


def version_tuple(version: str) -> tuple[int, ...]:
    """'10.2.2' or '7.2.19 (Debian 1:7.2+dfsg-7+deb12u18)' -> (10, 2, 2)."""
    head = version.split()[0]
    parts = []
    for piece in head.split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def _img_beside(system: Path) -> Path:
    sibling = system.parent / "qemu-img"
    if sibling.is_file() and os.access(sibling, os.X_OK):
        return sibling
    found = shutil.which("qemu-img")
    if not found:
        raise QemuNotFound(f"no qemu-img beside {system} nor on PATH (apt-get install qemu-utils)")
    return Path(found)


def _resolve(binary: str) -> Path:
    p = Path(binary)
    if p.is_file() and os.access(p, os.X_OK):
        return p.resolve()
    found = shutil.which(binary)
    if not found:
        raise QemuNotFound(f"QEMU binary {binary!r} not found or not executable")
    return Path(found).resolve()


def install_for(binary: str, source: str, reason: str) -> QemuInstall:
    """Describe the QEMU at `binary` (a path or a name on PATH)."""
    system = _resolve(binary)
    return QemuInstall(system=system, img=_img_beside(system), version=_version_of(system),
                       source=source, reason=reason)


@lru_cache(maxsize=1)
def qemu_install() -> QemuInstall:
    """The QEMU every coserver command uses (see module docstring for the order)."""
    env = os.environ.get("COSERVER_QEMU")
    if env:
        return install_for(env, "env", "COSERVER_QEMU is set")
    sel = selection_file()
    if sel.is_file():
        try:
            data = json.loads(sel.read_text())
            return install_for(data["binary"], "selected", data.get("reason", "chosen by make setup"))
        except (ValueError, KeyError) as exc:
            raise QemuNotFound(f"{sel}: unreadable QEMU selection ({exc}); run `make setup`") from exc
    return install_for(SYSTEM_QEMU, "system", "no selection recorded; using the system QEMU")


def record_selection(binary: Path, reason: str) -> None:
    """Remember the QEMU `make setup` chose, for every later command."""
    sel = selection_file()
    sel.parent.mkdir(parents=True, exist_ok=True)
    sel.write_text(json.dumps({"binary": str(binary), "reason": reason}, indent=2) + "\n")
    qemu_install.cache_clear()
