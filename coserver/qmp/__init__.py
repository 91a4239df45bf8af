"""Transport layer: async QMP sessions (qemu.qmp) with deadlines and events, and the QEMU launcher."""

from coserver.qmp.errors import (
    LaunchError,
    QmpCommandError,
    QmpConnectError,
    QmpDisconnected,
    QmpError,
    QmpEventTimeout,
    QmpTimeout,
)
from coserver.qmp.launcher import ProcessRecord, QemuProcess, qmp_argv
from coserver.qmp.session import QmpListener, QmpSession

__all__ = [
    "LaunchError",
    "ProcessRecord",
    "QemuProcess",
    "QmpCommandError",
    "QmpConnectError",
    "QmpDisconnected",
    "QmpError",
    "QmpEventTimeout",
    "QmpListener",
    "QmpSession",
    "QmpTimeout",
    "qmp_argv",
]
