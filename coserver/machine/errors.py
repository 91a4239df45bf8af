"""The machine layer's part of coserver's exception tree: the QEMU process, apart from QMP."""

from __future__ import annotations

from coserver.errors import CoserverError


class LaunchError(CoserverError):
    """QEMU could not be started, re-attached, signalled or stopped as asked."""
