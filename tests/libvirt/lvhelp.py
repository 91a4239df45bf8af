"""Helpers of the libvirt tests: libvirt-python's test driver (no libvirtd), specs, the real CLI in a process.

This directory has no __init__.py on purpose: tests/ is on sys.path (it has none either), so a
package tests/libvirt would shadow libvirt-python itself. Its modules are named test_lv_* (unique
basenames) and import this one as `lvhelp`; the fixtures are in conftest.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import coserver

libvirt = pytest.importorskip("libvirt")

ROOT = Path(coserver.__file__).resolve().parent.parent
EXAMPLE = ROOT / "coserver" / "hardware" / "examples" / "lab-journal.toml"


def env() -> dict[str, str]:
    """The environment a subprocess needs to run this checkout's coserver."""
    e = dict(os.environ)
    e["PYTHONPATH"] = str(ROOT) + (os.pathsep + e["PYTHONPATH"] if e.get("PYTHONPATH") else "")
    return e


def coserver_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The real CLI in its own process, as an operator runs it."""
    return subprocess.run([sys.executable, "-m", "coserver.cli.main", *args], capture_output=True, text=True,
                          env=env(), timeout=timeout)


def node_file(path: Path, *domains: str) -> str:
    """A test-driver node file holding `domains` (XML texts); returns its test:/// URI."""
    body = "".join(d if not d.startswith("<?xml") else d.split("?>", 1)[1] for d in domains)
    path.write_text(f"<node>\n{body}\n</node>\n")
    return f"test://{path.resolve()}"
