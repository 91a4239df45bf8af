"""Errors of the images layer: disks and overlays, the lab guest build, the journal client.

Each message is one line naming the thing (an image path, a package, a host:port) and the
reason, e.g. "image /x/a.qcow2: backing file /x/base.qcow2 does not exist".
"""

from __future__ import annotations

from coserver.errors import CoserverError


class ImageError(CoserverError):
    """A disk image operation was refused or qemu-img failed."""


class GuestBuildError(ImageError):
    """The lab guest (kernel, initramfs, data disk template) could not be built."""


class JournalError(CoserverError):
    """The lab guest's journal service refused a request or could not be reached."""

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        #: the text after `ERR ` when the service answered one, else None
        self.reason = reason
