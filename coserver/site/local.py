"""Which CoServer this machine is: the site's addresses found on this machine's interfaces.

The same site file sits on both hosts, so a host finds itself by its addresses (`ip -j addr`)
rather than by a per-host setting that could be copied wrongly. Run inside a network namespace
(the lab's hosts), it sees that namespace's addresses, as a real host sees its own.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from coserver.site.errors import SiteError
from coserver.site.model import Site
from coserver.sys.run import run

SYS_NET = Path("/sys/class/net")


def interface_addresses() -> dict[str, set[str]]:
    """Each interface of this machine (or network namespace) -> its IP addresses."""
    res = run(["ip", "-j", "addr", "show"], "reading this machine's addresses", timeout=10, error=SiteError)
    try:
        data: Any = json.loads(res.stdout or "[]")
    except ValueError as exc:
        raise SiteError(f"ip -j addr: unreadable output: {exc}") from None
    out: dict[str, set[str]] = {}
    for iface in data if isinstance(data, list) else []:
        if not isinstance(iface, dict) or not isinstance(iface.get("ifname"), str):
            continue
        addrs = {str(a.get("local")) for a in iface.get("addr_info") or []
                 if isinstance(a, dict) and a.get("local")}
        out.setdefault(iface["ifname"], set()).update(addrs)
    return out


def find_host(site: Site, addresses: set[str]) -> str | None:
    """The CoServer owning any of `addresses`; None if neither does. Both is an error: a copy of
    the site file cannot tell which host this is."""
    found = [name for name, cs in site.coservers.items() if addresses & set(cs.addresses())]
    if len(found) > 1:
        raise SiteError(f"site {site.file}: this machine has addresses of both {found[0]} and {found[1]}: "
                        "pass --host NAME")
    return found[0] if found else None


def this_host(site: Site, explicit: str | None = None, addresses: dict[str, set[str]] | None = None) -> str:
    """--host NAME if given (checked), else the CoServer whose addresses this machine carries
    (`addresses`: interface -> addresses, read with `ip -j addr` if not given)."""
    if explicit is not None:
        return site.coserver(explicit).name
    found = interface_addresses() if addresses is None else addresses
    addrs: set[str] = set().union(*found.values())
    host = find_host(site, addrs)
    if host is None:
        raise SiteError(f"site {site.file}: none of the CoServers' addresses "
                        f"({'; '.join(f'{n}: ' + ', '.join(cs.addresses()) for n, cs in site.coservers.items())}) "
                        "is configured on this machine: pass --host NAME")
    return host
