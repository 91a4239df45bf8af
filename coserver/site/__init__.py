"""The site: the two CoServers of one pair, their links, the witness, and the FT servers they protect.

A real pair of hosts is described once, in ``/etc/coserver/site.toml`` (the same file on both
hosts), plus one FT server spec per protected server in ``servers_dir``. Everything a controller
needs is derived from these two files (coserver.controller.siteconfig), so no hand-written
per-server JSON exists on a real host. This package only reads and checks; it never starts
anything, and it sits below the controller (it may not import it).
"""

from coserver.site.errors import SiteError
from coserver.site.load import load_site, site_path
from coserver.site.model import CoServer, Site, SyncLink, WitnessSite

__all__ = ["CoServer", "Site", "SiteError", "SyncLink", "WitnessSite", "load_site", "site_path"]
