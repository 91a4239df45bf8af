"""Fixtures of the libvirt tests (helpers: lvhelp.py, which says why this directory is no package)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lvhelp import libvirt


@pytest.fixture(scope="session", autouse=True)
def _quiet_libvirt() -> None:
    """libvirt prints every error to stderr unless a handler takes it."""
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


@pytest.fixture
def conn() -> Iterator[Any]:
    """A fresh in-memory test driver (test:///default is private to each connection)."""
    c = libvirt.open("test:///default")
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def run_dir() -> Iterator[Path]:
    """A short private directory (a unix socket path must stay under 108 bytes)."""
    d = Path(tempfile.mkdtemp(prefix="cs-lv-", dir="/tmp"))
    os.chmod(d, 0o700)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)
