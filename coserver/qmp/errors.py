"""The qmp layer's part of coserver's exception tree.

Callers decide what to do from the class alone, so each class is one
situation a controller reacts to differently:

    CoserverError
     +-- QmpError
     |    +-- QmpConnectError    socket never appeared / kept refusing: QEMU did not come up
     |    +-- QmpTimeout         a command missed its deadline: treat QEMU as hung
     |    +-- QmpEventTimeout    an awaited event did not come: QEMU answered, the guest
     |    |                      or the operation did not do what we expected
     |    +-- QmpCommandError    QEMU answered with an error: QEMU is fine, the request was not
     |    +-- QmpDisconnected    the connection is gone (QEMU died or closed it)

(QEMU's process has its own: machine.errors.LaunchError.)

Every message is one line naming the socket (or the workdir/name) first.
"""

from __future__ import annotations

from coserver.errors import CoserverError


class QmpError(CoserverError):
    """Any failure talking QMP to one QEMU; `path` is the monitor socket."""

    def __init__(self, path: str, message: str) -> None:
        self.path = str(path)
        super().__init__(f"qmp {self.path}: {message}")


class QmpConnectError(QmpError):
    """The monitor socket never appeared or kept refusing within the connect timeout."""

    def __init__(self, path: str, timeout: float, reason: str) -> None:
        self.timeout = float(timeout)
        self.reason = reason
        super().__init__(path, f"cannot connect within {self.timeout} s: {reason}")


class QmpTimeout(QmpError):
    """A command got no answer before its deadline; the caller should assume QEMU hung.

    The command may still run later (QEMU queues it), so its effect is unknown.
    """

    def __init__(self, path: str, command: str, deadline: float) -> None:
        self.command = command
        self.deadline = float(deadline)
        super().__init__(path, f"{command} missed its {self.deadline} s deadline (QEMU hung?)")


class QmpEventTimeout(QmpError):
    """An awaited event did not arrive in time (not a hang: QEMU may be fine)."""

    def __init__(self, path: str, event: str, deadline: float) -> None:
        self.event = event
        self.deadline = float(deadline)
        super().__init__(path, f"event {event} did not arrive within {self.deadline} s")


class QmpCommandError(QmpError):
    """QEMU rejected a command; `error_class` is QMP's class (e.g. CommandNotFound)."""

    def __init__(self, path: str, command: str, error_class: str, desc: str) -> None:
        self.command = command
        self.error_class = error_class
        self.desc = desc
        super().__init__(path, f"{command} failed: {error_class}: {desc}")


class QmpDisconnected(QmpError):
    """The connection is gone (QEMU died, closed it, or the session was closed)."""

    def __init__(self, path: str, command: str | None, reason: str) -> None:
        self.command = command
        self.reason = reason
        during = f" during {command}" if command else ""
        super().__init__(path, f"connection lost{during} ({reason})")

