"""libvirt-side errors: each one line saying what and where (coserver.errors)."""

from __future__ import annotations

from coserver.errors import CoserverError


class LibvirtError(CoserverError):
    """Something about libvirt or a domain coserver cannot use (one line)."""


class MetadataError(LibvirtError):
    """A domain's coserver <metadata> element is malformed."""


class ImportRefused(LibvirtError):
    """A domain that cannot become an FT server: every reason found, one line each.

    str() is the reasons joined by newlines (one per line, as the CLI prints them); ``reasons``
    keeps them apart for callers and tests."""

    def __init__(self, domain: str, reasons: list[str]) -> None:
        self.domain = domain
        self.reasons = list(reasons)
        Exception.__init__(self, "\n".join(self.reasons))
