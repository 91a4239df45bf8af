"""The hardware layer's errors: one line each, naming the file, the key and the reason.

Every message has the shape ``<origin>: key <key>: <reason>``, for example::

    spec /etc/coserver/journal.toml: key cpu.sockets: must be a positive integer, got 0

where ``<origin>`` is ``spec <path>`` or ``profile <path>`` and ``<key>`` is the dotted TOML path
(array elements as ``disks[0]``). An error about a whole file has no ``key`` part.
"""

from __future__ import annotations

from coserver.errors import CoserverError


class HardwareError(CoserverError):
    """Any error of the hardware layer."""


class ProfileNotFound(HardwareError):
    """A profile name that no shipped profile file defines."""


class SpecError(HardwareError):
    """A problem in a spec or profile file, located by origin and key."""

    def __init__(self, origin: str, key: str | None, reason: str) -> None:
        self.origin = origin
        self.key = key
        self.reason = reason
        super().__init__(f"{origin}: key {key}: {reason}" if key else f"{origin}: {reason}")


class SchemaError(SpecError):
    """Not valid TOML, an unknown key, a wrong type or a value out of its range."""


class TopologyError(SpecError):
    """A CPU/memory shape that cannot exist (vCPUs that do not fit, more than the real box had)."""


class ColoIncompatibleError(SpecError):
    """A device or option that COLO cannot keep in lock-step on both CoServers."""


class CapacityError(SpecError):
    """More vCPUs or memory than the host can give."""


class FileDigestError(SpecError):
    """A host-local ISO, kernel or initrd is missing, unreadable or not the declared one."""


class ConfigMismatchError(SpecError):
    """The two CoServers' effective configurations differ in something the guest can see."""
