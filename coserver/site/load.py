"""Reading the site file: strict TOML, every key typed and accounted for, every relation checked.

The site file is the same on both CoServers. Schema (``*`` = required; unknown keys are errors)::

    name = "dc1-pair1"               # * [a-z0-9-]: the site's name
    preferred = "cs1"                # * the tie-break CoServer (starts the guest, wins a split)
    servers_dir = "/etc/coserver/servers"   # FT server specs, one *.toml each
    state_dir = "/var/lib/coserver"  # journals, logs, QEMU workdirs
    run_dir = "/run/coserver"        # control sockets, COLO overlays
    key_file = "/etc/coserver/pair.key"     # the pair's heartbeat key (`coserver site keygen`)
    base_port = 7400                 # first port of the per-server port slots
    checkpoint_ms = 2000             # COLO checkpoint period
    reprotect = "auto"               # "auto" | "manual"
    accel = "kvm"                    # "kvm" | "tcg" (TCG only where `coserver doctor` finds no usable KVM)
    boot_grace_s = 20                # a freshly started guest boots this long before it is protected
    stop_timeout_s = 60              # `server stop`: power button, then this long before QEMU is quit
    sync_speed_mib_s = 0             # cap of the initial disk sync (0: as fast as the links go)
    protect = "live"                 # entering COLO: "live" (RAM copied with the guest running, a pause
                                     # of tens of ms) | "stopped" (QEMU's documented order: the guest
                                     # stopped for the whole RAM copy; for comparison)
    backend = "qemu"                 # "qemu": the controller runs each QEMU | "libvirt": libvirtd does (each
                                     # copy a libvirt domain named as its FT server; README "libvirt")
    libvirt_uri = "qemu:///system"   # the local libvirtd (backend = "libvirt")
    lease_patience_s = 3.5           # never two primaries (README "What the controllers do"): how long a
    fence_after_s = 1.0              # denied promotion retries; how long a primary without its lease
    promote_margin_s = 0.7           # keeps COLO before it fences; the promotion's wait beyond the fence bound
    heartbeat_interval_s = 0.2       # fault detection: a heartbeat on each sync link this often; the peer
    heartbeat_timeout_s = 1.0        # is lost after this long unheard on both (a promotion then waits
                                     # this + 1 s: never two primaries holds for any value)
    qmp_deadline_s = 1.0             # a QMP command's deadline; the health probe gets a quarter of it
    kill_hung_after_s = 1.5          # a QEMU silent on QMP this long (not in a checkpoint) is hung: killed
                                     # (nested TCG, the Vagrant lab: 0.5, 5, 4, 6 in this order)
    metrics_port = 0                 # Prometheus endpoint on the management address: omitted, each server's
                                     # slot port (base_port + slot*8 + 6); 0: off; else this port (one server)
    alert_command = ["/usr/local/bin/notify", "--to", "ops"]   # run on each FT state change, JSON on stdin
    pki_dir = "/etc/coserver/pki"    # TLS: each host's certificates in <pki_dir>/<host>/ (`coserver site certs`)
    insecure = false                 # true: no TLS between the QEMUs: only a site named lab-* (`lab up --insecure`)

    [witness]                        # * the etcd witness
    endpoints = ["10.0.3.21:2379", "10.0.3.22:2379", "10.0.3.23:2379"]   # * host:port
    ca = "/etc/coserver/pki/{host}/ca-cert.pem"       # TLS: all three or none; {host} is this
    cert = "/etc/coserver/pki/{host}/client-cert.pem" # CoServer's name (each host its own files,
    key = "/etc/coserver/pki/{host}/client-key.pem"   # checked where the host is known); a path
                                     # without {host} is checked to exist here
    insecure = false                 # true: plain http, no authentication (the lab's --insecure);
                                     # without TLS and without it, `site check` and the controllers refuse

    [slots]                          # optional: pin a server's port slot (see coserver.site.ports)
    journal = 3

    [coservers.cs1]                  # * exactly two CoServers
    management = "10.0.3.1"          # * how operators and the peer reach it
    replication = "10.0.9.1"         # * where COLO (migration, NBD, mirror) runs
    bridge = "br-lan"                # client-LAN bridge for the guests' NICs
    [[coservers.cs1.links]]          # * exactly two sync links, in the same order on both hosts
    device = "eno2"                  # * this host's interface
    local = "10.0.1.1/24"            # * this host's address on it (prefix defaults to /24)
    peer = "10.0.1.2"                # * the other host's address on the same link

Every problem is one :class:`SiteError` line naming the file, the key and the reason.
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Any

from coserver.hardware._toml import Origin, Table, read_toml, show
from coserver.hardware.errors import SpecError
from coserver.hardware.spec import HOST_NAME, NAME
from coserver.site.errors import SiteError
from coserver.site.model import (
    ACCELS,
    BACKENDS,
    DEFAULT_BASE_PORT,
    DEFAULT_BRIDGE,
    DEFAULT_KEY_FILE,
    DEFAULT_PKI_DIR,
    DEFAULT_RUN_DIR,
    DEFAULT_SERVERS_DIR,
    DEFAULT_SITE,
    DEFAULT_STATE_DIR,
    HOST_PLACEHOLDER,
    LAB_SITE_PREFIX,
    PROTECT_ORDERS,
    REPROTECT_POLICIES,
    CoServer,
    Site,
    SyncLink,
    WitnessSite,
)
from coserver.site.ports import STRIDE

ENV = "COSERVER_SITE"
#: A Linux interface name: 1-15 characters, no '/', ':' or whitespace (dev_valid_name()).
IFNAME = r"(?!\.\.?$)[A-Za-z0-9_.-]{1,15}"
IFNAME_WHAT = "a Linux interface name (1-15 of [A-Za-z0-9_.-])"
ENDPOINT = r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(?P<port>[0-9]{1,5})"
#: A local libvirtd's URI: the system or session QEMU driver, optionally with a socket path.
LIBVIRT_URI = r"qemu:///(system|session)(\?socket=/[A-Za-z0-9_./-]+)?"
#: Ports a slot may use reach at most this.
MAX_PORT = 65535


def site_path(explicit: Path | None = None) -> Path:
    """The site file to read: --site FILE, else $COSERVER_SITE, else /etc/coserver/site.toml."""
    if explicit is not None:
        return Path(explicit)
    env = os.environ.get(ENV)
    return Path(env) if env else DEFAULT_SITE


# -- value checkers (raise ValueError(reason); Table.custom locates them) ---------------------

def _address(value: Any) -> str:
    try:
        if not isinstance(value, str):
            raise ValueError
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValueError(f"must be an IP address like 10.0.1.1, got {show(value)}") from None


def _interface(value: Any) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
    try:
        if not isinstance(value, str):
            raise ValueError
        iface = ipaddress.ip_interface(value if "/" in value else
                                       f"{value}/{24 if ':' not in value else 64}")
    except ValueError:
        raise ValueError(f"must be an IP address with an optional prefix like 10.0.1.1/24, "
                         f"got {show(value)}") from None
    if iface.ip == iface.network.network_address and iface.network.prefixlen < iface.max_prefixlen - 1:
        raise ValueError(f"{iface.ip} is its subnet's network address, not a host's")
    return iface


def _endpoints(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise ValueError(f"must be a non-empty array of \"host:port\" strings, got {show(value)}")
    out: list[str] = []
    for i, ep in enumerate(value):
        m = re.fullmatch(ENDPOINT, ep) if isinstance(ep, str) else None
        if m is None or not 1 <= int(m["port"]) <= MAX_PORT:
            raise ValueError(f"element {i} must be \"host:port\" (e.g. \"10.0.3.21:2379\"), got {show(ep)}")
        if ep in out:
            raise ValueError(f"element {i} repeats {show(ep)}")
        out.append(ep)
    return tuple(out)


def _seconds(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 60:
        raise ValueError(f"must be a number of seconds in (0, 60], got {show(value)}")
    return float(value)


def _argv(value: Any) -> tuple[str, ...]:
    """A command as an argv list, never a shell string: its program an absolute path, so what runs
    does not depend on the controller's PATH."""
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"must be a non-empty array of non-empty strings (an argv, e.g. "
                         f"[\"/usr/local/bin/notify\", \"--to\", \"ops\"]), got {show(value)}")
    if not Path(value[0]).is_absolute():
        raise ValueError(f"its program must be an absolute path, got {show(value[0])}")
    return tuple(value)


def _path(t: Table, name: str, default: Path) -> Path:
    raw = t.string(name, None)
    if raw is None:
        return default
    p = Path(raw)
    if not p.is_absolute():
        raise t.error(name, f"must be an absolute path, got {show(raw)}")
    return p


# -- sections ---------------------------------------------------------------------------------

class _SiteReader:
    """Reads one site file; each method one section, then the relations between them."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.origin = Origin("site", path)
        self.top = Table(read_toml(self.origin), self.origin)

    def error(self, key: str | None, reason: str) -> SpecError:
        return self.origin.error(key, reason)

    def witness(self) -> WitnessSite:
        t = self.top.table("witness")
        endpoints = t.custom("endpoints", _endpoints)
        files: dict[str, Path | None] = {}
        for name in ("ca", "cert", "key"):
            p = _path(t, name, Path()) if t.has(name) else None
            if p is not None:
                rest = str(p).replace(HOST_PLACEHOLDER, "")
                if "{" in rest or "}" in rest:
                    raise t.error(name, f"only {HOST_PLACEHOLDER} (this CoServer's name) may be substituted, "
                                        f"got {show(str(p))}")
                # with {host} the file is each host's own: checked where the host is known (site check,
                # the controller's start), not here
                if HOST_PLACEHOLDER not in str(p) and not p.is_file():
                    raise t.error(name, f"no such file {show(str(p))}")
            files[name] = p
        given = [name for name, p in files.items() if p is not None]
        if given and len(given) != 3:
            missing = next(name for name, p in files.items() if p is None)
            raise t.error(missing, "ca, cert and key go together (the witness checks our certificate, we check "
                                   "its): give all three or none")
        insecure = t.boolean("insecure", False)
        if insecure and given:
            raise t.error("insecure", "insecure = true and TLS files (ca, cert, key) exclude each other: "
                                      "remove one or the other")
        t.finish()
        return WitnessSite(endpoints=endpoints, ca=files["ca"], cert=files["cert"], key=files["key"],
                           insecure=bool(insecure))

    def link(self, t: Table) -> tuple[SyncLink, ipaddress.IPv4Network | ipaddress.IPv6Network]:
        device = t.string("device", pattern=IFNAME, what=IFNAME_WHAT)
        local = t.custom("local", _interface)
        peer = t.custom("peer", _address)
        if ipaddress.ip_address(peer) not in local.network:
            raise t.error("peer", f"{peer} is not in the link's subnet {local.network} (from local)")
        if ipaddress.ip_address(peer) == local.ip:
            raise t.error("peer", f"is this host's own address {peer}")
        t.finish()
        return SyncLink(device=device, local=str(local.ip), peer=peer,
                        prefix=local.network.prefixlen), local.network

    def coserver(self, t: Table, name: str) -> CoServer:
        if not re.fullmatch(HOST_NAME, name):
            raise self.error(t.prefix, "a CoServer name must be 1 to 32 of [a-z0-9-], "
                                       "not starting or ending with -")
        management = t.custom("management", _address)
        replication = t.custom("replication", _address)
        bridge = t.string("bridge", DEFAULT_BRIDGE, pattern=IFNAME, what=IFNAME_WHAT)
        tables = t.tables("links")
        if len(tables) != 2:
            raise t.error("links", f"must be exactly two sync links ([[{t.key('links')}]]), "
                                   f"got {len(tables)}")
        (l1, n1), (l2, n2) = (self.link(lt) for lt in tables)
        if l1.device == l2.device:
            raise tables[1].error("device", f"both links use device {l1.device}: "
                                            "two links must be two interfaces")
        if n1.overlaps(n2):
            raise tables[1].error("local", f"subnet {n2} overlaps link 1's {n1}: each link needs "
                                           "its own subnet, or one interface would carry both")
        if replication == management:
            raise t.error("replication", f"{replication} is the management address: replication "
                                         "must run over the sync links, not the management network")
        if management in (l1.local, l2.local):
            raise t.error("management", f"{management} is a sync link's address: the management "
                                        "network must be separate")
        t.finish()
        return CoServer(name=name, management=management, replication=replication,
                        links=(l1, l2), bridge=bridge)

    def coservers(self) -> dict[str, CoServer]:
        t = self.top.table("coservers")
        names = list(t.data)
        if len(names) != 2:
            raise t.error(None, f"must define exactly two CoServers ([coservers.<name>]), "
                                f"got {len(names)}{': ' + ', '.join(names) if names else ''}")
        out = {name: self.coserver(t.table(name), name) for name in names}
        t.finish()
        self.mirrored(t, out)
        return out

    def mirrored(self, t: Table, cs: dict[str, CoServer]) -> None:
        """Link i of one host is link i of the other, seen from the other end; no shared address."""
        (a, b) = cs.values()
        for i in range(2):
            la, lb = a.links[i], b.links[i]
            if la.peer != lb.local:
                raise self.error(f"{t.key(a.name)}.links[{i}].peer",
                                 f"{la.peer} is not {b.name}'s local address of link {i + 1} ({lb.local})")
            if lb.peer != la.local:
                raise self.error(f"{t.key(b.name)}.links[{i}].peer",
                                 f"{lb.peer} is not {a.name}'s local address of link {i + 1} ({la.local})")
            if la.prefix != lb.prefix:
                raise self.error(f"{t.key(b.name)}.links[{i}].local",
                                 f"prefix /{lb.prefix} differs from {a.name}'s /{la.prefix} on the same link")
        for x, y in ((a, b), (b, a)):
            for key in ("management", "replication"):
                addr = getattr(x, key)
                if addr in y.addresses():
                    raise self.error(f"{t.key(x.name)}.{key}", f"{addr} is used by both {a.name} and {b.name}")

    def slots(self, base_port: int) -> dict[str, int]:
        t = self.top.table("slots", None)
        if t is None:
            return {}
        most = (MAX_PORT - base_port + 1) // STRIDE - 1
        out: dict[str, int] = {}
        for name in list(t.data):
            if not re.fullmatch(NAME, name):
                raise t.error(name, "must be an FT server's name ([a-z0-9-], at most 63)")
            out[name] = t.integer(name, minimum=0, maximum=most)
        t.finish()
        return out

    def metrics_port(self) -> int | None:
        """0 (off) or a port of 1024 and above; None when the key is absent (the slot's port)."""
        top = self.top
        if not top.has("metrics_port"):
            return None
        value = top.integer("metrics_port", minimum=0, maximum=MAX_PORT)
        if 0 < value < 1024:
            raise top.error("metrics_port", f"must be 0 (off) or a port from 1024 to {MAX_PORT}, got {value}")
        return int(value)

    def read(self) -> Site:
        top = self.top
        name = top.string("name", pattern=NAME, what="1 to 63 of [a-z0-9-], not starting or ending with -")
        witness = self.witness()
        coservers = self.coservers()
        preferred = top.string("preferred")
        if preferred not in coservers:
            raise top.error("preferred", f"must be one of the two CoServers "
                                         f"({', '.join(coservers)}), got {show(preferred)}")
        base_port = top.integer("base_port", DEFAULT_BASE_PORT, minimum=1024,
                                maximum=MAX_PORT - STRIDE + 1)
        site = Site(
            file=self.path, name=name, preferred=preferred, coservers=coservers, witness=witness,
            servers_dir=_path(top, "servers_dir", DEFAULT_SERVERS_DIR),
            state_dir=_path(top, "state_dir", DEFAULT_STATE_DIR),
            run_dir=_path(top, "run_dir", DEFAULT_RUN_DIR),
            key_file=_path(top, "key_file", DEFAULT_KEY_FILE),
            base_port=base_port, slots=self.slots(base_port),
            checkpoint_ms=top.integer("checkpoint_ms", 2000, minimum=100, maximum=600_000),
            reprotect=top.string("reprotect", "auto", choices=REPROTECT_POLICIES),
            accel=top.string("accel", "kvm", choices=ACCELS),
            boot_grace_s=top.integer("boot_grace_s", 20, minimum=0, maximum=3600),
            stop_timeout_s=top.integer("stop_timeout_s", 60, minimum=1, maximum=3600),
            sync_speed_mib_s=top.integer("sync_speed_mib_s", 0, minimum=0, maximum=100_000),
            protect=top.string("protect", "live", choices=PROTECT_ORDERS),
            backend=top.string("backend", "qemu", choices=BACKENDS),
            libvirt_uri=top.string("libvirt_uri", "qemu:///system", pattern=LIBVIRT_URI,
                                   what="a local libvirt URI (qemu:///system or qemu:///session)"),
            lease_patience_s=top.custom("lease_patience_s", _seconds, None),
            fence_after_s=top.custom("fence_after_s", _seconds, None),
            promote_margin_s=top.custom("promote_margin_s", _seconds, None),
            heartbeat_interval_s=top.custom("heartbeat_interval_s", _seconds, None),
            heartbeat_timeout_s=top.custom("heartbeat_timeout_s", _seconds, None),
            qmp_deadline_s=top.custom("qmp_deadline_s", _seconds, None),
            kill_hung_after_s=top.custom("kill_hung_after_s", _seconds, None),
            metrics_port=self.metrics_port(),
            alert_command=top.custom("alert_command", _argv, ()),
            pki_dir=_path(top, "pki_dir", DEFAULT_PKI_DIR),
            insecure=top.boolean("insecure", False),
        )
        top.finish()
        if site.witness.insecure and not site.name.startswith(LAB_SITE_PREFIX):
            raise top.error("witness.insecure", f"plain http to the witness is for the one-machine lab only (`coserver "
                                                f"lab up --insecure` writes a site named {LAB_SITE_PREFIX}*): a real "
                                                "site's witness runs TLS (README \"The witness over TLS\")")
        if site.insecure and not site.name.startswith(LAB_SITE_PREFIX):
            raise top.error("insecure", f"plain TCP between the QEMUs is for the one-machine lab only (`coserver "
                                        f"lab up --insecure` writes a site named {LAB_SITE_PREFIX}*): a real site "
                                        "runs TLS; make its certificates with `coserver site certs`")
        return site


def load_site(path: Path | None = None) -> Site:
    """Read and check the site file (site_path(path)); any problem is one SiteError line."""
    p = Path(os.path.abspath(site_path(path)))
    try:
        return _SiteReader(p).read()
    except SpecError as exc:
        raise SiteError(str(exc)) from None
