"""`coserver site check`: the site file against this host, with no peer needed.

Each check asks the real thing on this machine: the link devices in /sys/class/net, the
addresses `ip -j addr` reports, the key file's mode and owner, a TCP connect to each witness
endpoint, the cached COLO self-test verdicts of the selected QEMU (never a new self-test: that
is `coserver doctor`'s job and boots guests). Checks against the peer (same site file, same
QEMU, both links answering) need the heartbeat and come with the next step of issue 12.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coserver.doctor import qemuselect
from coserver.doctor.selftest import profile_machines
from coserver.errors import CoserverError
from coserver.paths import qemu_install
from coserver.site import keygen
from coserver.site.local import SYS_NET, interface_addresses, this_host
from coserver.site.model import Site
from coserver.site.servers import load_server_ports

CONNECT_TIMEOUT_S = 1.0
ACCELS = ("tcg", "kvm")


@dataclass(frozen=True)
class SiteCheck:
    """One line of `site check`: ok|FAIL name detail."""

    name: str
    ok: bool
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}

    def line(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL'} {self.name:<22} {self.detail}"


def _tcp(endpoint: tuple[str, int], timeout: float) -> str | None:
    """None if host:port accepts a TCP connection within timeout, else why not."""
    try:
        with socket.create_connection(endpoint, timeout=timeout):
            return None
    except TimeoutError:
        return f"no answer within {timeout:g} s"
    except OSError as exc:
        return exc.strerror or str(exc)


def witness_checks(site: Site, timeout: float = CONNECT_TIMEOUT_S) -> list[SiteCheck]:
    """Each endpoint answers a TCP connect within `timeout` (all tried at once)."""
    hosts = site.witness.hosts()
    with ThreadPoolExecutor(max_workers=len(hosts)) as pool:
        results = list(pool.map(lambda ep: _tcp(ep, timeout), hosts))
    return [SiteCheck(f"witness {ep}", why is None, "answers" if why is None else why)
            for ep, why in zip(site.witness.endpoints, results, strict=True)]


def qemu_check() -> SiteCheck:
    """The selected QEMU has a cached PASS of the COLO self-test on every machine type the profiles use."""
    try:
        qemu = qemu_install()
    except CoserverError as exc:
        return SiteCheck("qemu", False, str(exc))
    forced = os.environ.get("COSERVER_ACCEL")
    accels = (forced,) if forced in ACCELS else ACCELS
    passed: list[str] = []
    for machine in profile_machines():
        verdicts = [v for a in accels if (v := qemuselect.cached_verdict(qemu, a, machine)) is not None]
        good = [v for v in verdicts if v.get("passed")]
        if not good:
            why = (qemuselect.summarize(verdicts[0]) if verdicts
                   else f"no COLO self-test verdict for {machine} cached: run `coserver doctor`")
            return SiteCheck("qemu", False, f"QEMU {qemu.version} ({qemu.system}) is not certified: {why}")
        passed.append(f"{machine} ({good[0].get('accel', '?')})")
    return SiteCheck("qemu", True, f"QEMU {qemu.version} ({qemu.system}) passed the COLO self-test on "
                                   f"{', '.join(passed)}")


def key_check(site: Site) -> SiteCheck:
    try:
        keygen.check_key(site.key_file)
    except CoserverError as exc:
        return SiteCheck("key", False, str(exc))
    return SiteCheck("key", True, f"{site.key_file}: present, 0600, ours, 32 bytes")


def servers_check(site: Site) -> SiteCheck:
    try:
        servers, ports = load_server_ports(site)
    except CoserverError as exc:
        return SiteCheck("servers", False, str(exc))
    if not servers:
        return SiteCheck("servers", True, f"no FT server specs in {site.servers_dir} yet")
    detail = ", ".join(f"{n} (slot {p.slot}: ports {p.mirror}-{p.heartbeat})" for n, p in sorted(ports.items()))
    return SiteCheck("servers", True, f"{len(servers)} in {site.servers_dir}: {detail}")


def host_checks(site: Site, host: str, addresses: dict[str, set[str]], sys_net: Path) -> list[SiteCheck]:
    """This host's links, devices and addresses."""
    cs = site.coserver(host)
    everywhere = set().union(*addresses.values()) if addresses else set()
    out = []
    for i, link in enumerate(cs.links, 1):
        name = f"link{i} {link.device}"
        if not (sys_net / link.device).exists():
            out.append(SiteCheck(name, False, f"no interface {link.device} on this machine"))
        elif link.local not in addresses.get(link.device, set()):
            have = ", ".join(sorted(addresses.get(link.device, set()))) or "no address"
            out.append(SiteCheck(name, False, f"{link.device} does not carry {link.local}/{link.prefix} "
                                              f"(it has {have})"))
        else:
            out.append(SiteCheck(name, True, f"{link.device} carries {link.local}/{link.prefix}, "
                                             f"peer {link.peer}"))
    for what, addr in (("replication", cs.replication), ("management", cs.management)):
        ok = addr in everywhere
        out.append(SiteCheck(what, ok, f"{addr} is configured" if ok else f"{addr} is not configured "
                                                                          "on this machine"))
    return out


def run_checks(site: Site, host: str | None = None, *, sys_net: Path = SYS_NET,
               addresses: Callable[[], dict[str, set[str]]] = interface_addresses,
               timeout: float = CONNECT_TIMEOUT_S) -> tuple[str | None, list[SiteCheck]]:
    """(this host's name or None, every check). The site file was already loaded (its own check)."""
    checks = [SiteCheck("site", True, f"{site.file}: site {site.name}, CoServers "
                                      f"{', '.join(site.hosts)}, preferred {site.preferred}")]
    try:
        addrs = addresses()
        addr_error = None
    except CoserverError as exc:
        addrs, addr_error = {}, str(exc)
    me: str | None
    try:
        me = this_host(site, host, addrs) if host is not None or addr_error is None else None
        if me is None:
            raise CoserverError(addr_error or "this host is not found")
        checks.append(SiteCheck("host", True, f"this is {me}" + (" (--host)" if host else
                                                                  " (found by its addresses)")))
        checks += host_checks(site, me, addrs, sys_net)
    except CoserverError as exc:
        me = None
        checks.append(SiteCheck("host", False, str(exc)))
    checks.append(qemu_check())
    checks.append(key_check(site))
    checks += witness_checks(site, timeout)
    checks.append(servers_check(site))
    return me, checks
