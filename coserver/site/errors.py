"""The site layer's errors: one line each, naming the file, the key and the reason.

Messages read ``site /etc/coserver/site.toml: key coservers.cs1.links[0].device: <reason>``,
the same shape as the hardware layer's spec errors, so an operator reads both alike.
"""

from __future__ import annotations

from coserver.errors import CoserverError


class SiteError(CoserverError):
    """The site file, a server spec in servers_dir, the port plan or the pair key is unusable."""


class KeyFileError(SiteError):
    """The pair's key file is missing, unsafe (mode, owner) or malformed."""
