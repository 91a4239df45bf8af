"""The QMP protocol: async sessions (on qemu.qmp) with deadlines and events; nothing of COLO or of the QEMU process."""

from coserver.qmp.errors import (
    QmpCommandError,
    QmpConnectError,
    QmpDisconnected,
    QmpError,
    QmpEventTimeout,
    QmpTimeout,
)
from coserver.qmp.session import QmpListener, QmpSession

__all__ = [
    "QmpCommandError",
    "QmpConnectError",
    "QmpDisconnected",
    "QmpError",
    "QmpEventTimeout",
    "QmpListener",
    "QmpSession",
    "QmpTimeout",
]
