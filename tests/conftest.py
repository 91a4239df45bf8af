"""Shared test fixtures: a minimal QEMU to talk to, and a bounded asyncio runner."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

from coserver.machine.launcher import QemuProcess
from coserver.paths import QemuInstall, QemuNotFound, qemu_install

#: A machine that boots into firmware and sits there: enough for QMP.
#: TCG always: /dev/kvm on the CI machines hangs guests.
MINIMAL_QEMU_ARGS = ["-accel", "tcg", "-M", "pc", "-nodefaults", "-display", "none", "-m", "64"]


@pytest.fixture(scope="session")
def qemu() -> QemuInstall:
    """The QEMU coserver would use; skips QEMU tests if there is none."""
    try:
        return qemu_install()
    except QemuNotFound as exc:
        pytest.skip(str(exc))


@pytest.fixture
def qemu_args(qemu: QemuInstall) -> list[str]:
    """Options for a minimal, disk-less TCG guest (a fresh list per test)."""
    return list(MINIMAL_QEMU_ARGS)


@pytest.fixture
def qemu_proc(qemu_args: list[str], tmp_path: Path) -> Iterator[QemuProcess]:
    """A running minimal QEMU named 'vm' in tmp_path, stopped after the test."""
    proc = QemuProcess("vm", qemu_args, tmp_path).start()
    try:
        yield proc
    finally:
        proc.stop(timeout=4.0)


@pytest.fixture
def arun() -> Callable[..., Any]:
    """Run a coroutine to completion, failing the test if it takes over `timeout` s."""
    def run(coro: Coroutine[Any, Any, Any], timeout: float = 30.0) -> Any:
        return asyncio.run(asyncio.wait_for(coro, timeout))
    return run


@pytest.fixture(scope="session", autouse=True)
def _quiet_logs() -> None:
    """coserver's structlog lines at warning and above only, so test output stays readable."""
    from coserver import log

    log.configure("WARNING")
