"""Which machine, QEMU and accelerator produced a bench run (the report's first lines)."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from coserver import __version__
from coserver.errors import CoserverError
from coserver.images.accel import choose_accel
from coserver.paths import qemu_install


def _first(path: str, key: str) -> str | None:
    try:
        for line in Path(path).read_text(errors="replace").splitlines():
            k, _, v = line.partition(":" if ":" in line else "=")
            if k.strip() == key:
                return v.strip().strip('"')
    except OSError:
        pass
    return None


def _run(*argv: str, cwd: Path | None = None) -> str | None:
    try:
        out = subprocess.run(list(argv), capture_output=True, text=True, timeout=10, cwd=cwd)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _mem_gib() -> float | None:
    kb = _first("/proc/meminfo", "MemTotal")
    try:
        return round(int(kb.split()[0]) / 2**20, 1) if kb else None
    except ValueError:
        return None


def _git() -> dict[str, Any]:
    repo = Path(__file__).resolve().parents[2]
    if not (repo / ".git").exists():
        return {}
    commit = _run("git", "rev-parse", "--short", "HEAD", cwd=repo)
    dirty = _run("git", "status", "--porcelain", "--untracked-files=no", cwd=repo)
    return {"commit": commit, "dirty": bool(dirty)}


def busy() -> dict[str, Any]:
    """What else ran on the machine: load averages and QEMU processes (the bench's own included
    while it runs). The figures of a run are only as good as the machine was quiet."""
    qemus = 0
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                zombie = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
                qemus += (proc / "comm").read_text().startswith("qemu-system") and not zombie
            except (OSError, IndexError):
                pass
    return {"loadavg": [round(x, 2) for x in os.getloadavg()], "qemu_processes": qemus}


def describe() -> dict[str, Any]:
    """CPU, memory, kernel, OS, virtualisation, QEMU and accelerator of this run."""
    out: dict[str, Any] = {
        "cpu_model": _first("/proc/cpuinfo", "model name"),
        "cpus": os.cpu_count(),
        "memory_gib": _mem_gib(),
        "kernel": platform.release(),
        "os": _first("/etc/os-release", "PRETTY_NAME"),
        "virtualization": _run("systemd-detect-virt") if shutil.which("systemd-detect-virt") else None,
        "python": platform.python_version(),
        "coserver": __version__,
        "date_utc": time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime()),
        **{f"git_{k}": v for k, v in _git().items()},
        "at_start": busy(),
    }
    try:
        q = qemu_install()
        out.update(qemu_binary=str(q.system), qemu_version=q.version, qemu_source=q.source,
                   accel=choose_accel(q))
    except CoserverError as exc:
        out.update(qemu_binary=None, qemu_version=None, accel=None, qemu_error=str(exc))
    return out
