"""Helpers for tests that run the lab through its CLI, as a user or an outside script would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def coserver(*args: str, timeout: float = 300, check: bool = True,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "coserver.cli.main", *args], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "COSERVER_ACCEL": "tcg", **(env or {})})
    assert "Traceback" not in proc.stderr, proc.stderr
    if check:
        assert proc.returncode == 0, f"coserver {' '.join(args)}: {proc.stderr.strip()}"
    return proc


def status(prefix: str) -> dict:
    return json.loads(coserver("lab", "status", "--prefix", prefix, "--json").stdout)


def lab_processes(prefix: str) -> list[str]:
    """Processes whose command line names this lab's namespaces or workdir."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and (f"{prefix}-cs" in cmd or f"lab-{prefix}" in cmd):
            found.append(f"{proc.name}: {cmd[:120]}")
    return found
