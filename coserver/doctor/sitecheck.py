"""`coserver site check`: the site file against this host, with no peer needed.

Each check asks the real thing on this machine: the link devices in /sys/class/net, the
addresses `ip -j addr` reports, the key file's mode and owner, a TCP connect to each witness
endpoint, the cached COLO self-test verdicts of the selected QEMU (never a new self-test: that
is `coserver doctor`'s job and boots guests), this host's witness TLS files, tried with one read of
the site's witness keys (the handshake and the etcd role the controllers need). Checks against the
peer come from what this host's running controllers hear in the peer's heartbeats (peer_checks):
both sync links heard, the same site file and QEMU version, the same pair key. Before any
controller runs they are reported as not checked, never as passed.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coserver.controller import control
from coserver.controller.config import thresholds_of, timing_defaults, timing_problem
from coserver.controller.siteconfig import WITNESS_TTL, site_timing
from coserver.doctor import qemuselect
from coserver.doctor.libvirtcheck import libvirt_line
from coserver.doctor.selftest import profile_machines
from coserver.errors import CoserverError
from coserver.paths import qemu_install
from coserver.site import keygen
from coserver.site.local import SYS_NET, interface_addresses, this_host
from coserver.site.model import Site
from coserver.site.servers import load_server_ports, spec_names

CONNECT_TIMEOUT_S = 1.0
#: The witness TLS read's deadline: TCP, the TLS handshake and one read. A handshake took ~2 s on the
#: Vagrant lab's machines (TCG inside TCG), where a 1 s read failed a witness the controllers reached.
TLS_READ_DEADLINE_S = 6.0
ACCELS = ("tcg", "kvm")


@dataclass(frozen=True)
class SiteCheck:
    """One line of `site check`: ok|FAIL name detail."""

    name: str
    ok: bool
    detail: str
    skipped: bool = False   # could not be checked yet (ok stays True: nothing is known to be wrong)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail, "skipped": self.skipped}

    def line(self) -> str:
        mark = "skip" if self.skipped else "ok  " if self.ok else "FAIL"
        return f"{mark} {self.name:<22} {self.detail}"


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


def witness_tls_check(site: Site, me: str | None, answering: list[tuple[str, int]],
                      timeout: float = CONNECT_TIMEOUT_S) -> SiteCheck:
    """This host's witness TLS files (readable, the key ours alone and the certificate's), then one
    read of the site's witness keys over them from the first endpoint that answers: the handshake and
    the etcd role, as the controller will use them. Without TLS: FAIL unless insecure = true."""
    name = "witness tls"
    if site.witness.insecure:
        return SiteCheck(name, True, "insecure = true: plain http, no authentication: anyone who reaches etcd "
                                     "can change the witness keys (a lab or test only)")
    try:
        files = site.witness_tls(me or site.preferred)
    except CoserverError as exc:
        return SiteCheck(name, False, str(exc))
    if me is None or files is None:
        return SiteCheck(name, True, "not checked: this host is not known", skipped=True)
    from coserver.controller.witness import Witness, WitnessTls, read_tls  # aetcd, gRPC only when checking

    if not answering:
        try:
            read_tls(WitnessTls(*files), site.witness.endpoints[0])
        except CoserverError as exc:
            return SiteCheck(name, False, str(exc))
        return SiteCheck(name, False, f"{files[1]}: the files are usable; no witness endpoint answers to try them")
    host, port = answering[0]

    async def probe() -> str:
        async with Witness("site-check", site=site.name, host=host, port=port, tls=WitnessTls(*files),
                           ttl=int(TLS_READ_DEADLINE_S) + 1,   # a read takes no lease: only > deadline
                           deadline=TLS_READ_DEADLINE_S) as w:
            await w.current()
            return f"etcd user {w.user} reads {w.prefix} at {w.endpoint} over TLS ({files[1]})"
    try:
        return SiteCheck(name, True, asyncio.run(probe()))
    except CoserverError as exc:
        return SiteCheck(name, False, str(exc))


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


def timing_check(site: Site) -> SiteCheck:
    """The site's timing keys over the controller's defaults, and what they make of a fault: when the
    peer counts as lost, a QEMU as hung, how long a promotion waits (policy.Thresholds: never two
    primaries holds for any values; a relation that would call a healthy peer or QEMU dead fails)."""
    given = site_timing(site)
    timing = {**timing_defaults(), **given, "lease_ttl_s": float(WITNESS_TTL)}
    problem = timing_problem(timing)
    if problem:
        return SiteCheck("timing", False, f"{site.file}: {problem}")
    th = thresholds_of(timing)
    return SiteCheck("timing", True, f"peer lost after {timing['heartbeat_timeout_s']:g} s unheard (a heartbeat "
                                     f"every {timing['heartbeat_interval_s']:g} s), a QEMU hung after "
                                     f"{timing['kill_hung_after_s']:g} s without a QMP answer; a promotion waits "
                                     f"{th.promote_wait:g} s ({'site keys ' + ', '.join(given) if given else 'defaults'})")


def servers_check(site: Site) -> SiteCheck:
    try:
        servers, ports = load_server_ports(site)
    except CoserverError as exc:
        return SiteCheck("servers", False, str(exc))
    if not servers:
        return SiteCheck("servers", True, f"no FT server specs in {site.servers_dir} yet")
    detail = ", ".join(f"{n} (slot {p.slot}: ports {p.mirror}-{p.control}, metrics {p.metrics})" for n, p in sorted(ports.items()))
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


def peer_checks(site: Site, me: str, timeout: float = 2.0) -> list[SiteCheck]:
    """The peer as this host's running controllers hear it (the first server whose controller answers):
    each sync link carries its heartbeats, it runs from the same site file and QEMU, its key is ours."""
    peer = site.peer_of(me).name
    for name in sorted(spec_names(site)) if site.servers_dir.is_dir() else []:
        sock = site.run_dir / f"{name}.sock"
        if not sock.exists():
            continue
        try:
            st = control.ask(sock, {"cmd": control.Command.STATUS}, timeout)["status"]
        except CoserverError:
            continue
        ident, heard = st.get("identity") or {}, st.get("peer") or {}
        out = []
        if ident.get("auth_failing"):
            out.append(SiteCheck("peer key", False, f"{peer}'s heartbeats fail authentication on "
                                                    f"{', '.join(ident['auth_failing'])}: the pair key differs"))
        for link, alive in sorted((st.get("links") or {}).items()):
            out.append(SiteCheck(f"peer {link}", bool(alive), f"{peer}'s heartbeats arrive ({name})" if alive else
                                 f"no heartbeat from {peer} on {link} ({name}'s controller)"))
        if not heard:
            out.append(SiteCheck("peer", False, f"{peer} not heard yet by {name}'s controller"))
            return out
        for key, what in (("site", "site file"), ("qemu_version", "QEMU")):
            mine, theirs = ident.get(key) or "-", heard.get(key) or "-"
            out.append(SiteCheck(f"peer {what}", mine == theirs,
                                 f"same on both ({mine})" if mine == theirs else
                                 f"differs: {me} {mine}, {peer} {theirs}: the pair refuses to protect"))
        return out
    return [SiteCheck("peer", True, f"not checked: no controller runs on {me} yet (the peer is compared through "
                                    "the controllers' heartbeats: start them, then check again)", skipped=True)]


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
        checks += peer_checks(site, me)
    except CoserverError as exc:
        me = None
        checks.append(SiteCheck("host", False, str(exc)))
    checks.append(qemu_check())
    checks.append(key_check(site))
    checks.append(timing_check(site))
    reach = witness_checks(site, timeout)
    checks += reach
    answering = [ep for ep, c in zip(site.witness.hosts(), reach, strict=True) if c.ok]
    checks.append(witness_tls_check(site, me, answering, timeout))
    checks.append(servers_check(site))
    if site.backend == "libvirt":
        ok, detail = libvirt_line(site.libvirt_uri)
        checks.append(SiteCheck("libvirt", ok, detail))
    return me, checks
