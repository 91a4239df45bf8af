"""What a site is: two CoServers, their sync links, the witness and where things live.

Frozen dataclasses, made only by coserver.site.load (which checks every value and relation), so
code holding a Site may rely on it: exactly two CoServers, links mirrored between them, the
preferred CoServer one of the two.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from coserver.site.errors import SiteError

DEFAULT_SITE = Path("/etc/coserver/site.toml")
DEFAULT_SERVERS_DIR = Path("/etc/coserver/servers")
DEFAULT_STATE_DIR = Path("/var/lib/coserver")
DEFAULT_RUN_DIR = Path("/run/coserver")
DEFAULT_KEY_FILE = Path("/etc/coserver/pair.key")
DEFAULT_PKI_DIR = Path("/etc/coserver/pki")
#: What the names of the sites `coserver lab up` writes start with: only these may be insecure.
LAB_SITE_PREFIX = "lab-"
DEFAULT_BASE_PORT = 7400
DEFAULT_BRIDGE = "br-lan"
REPROTECT_POLICIES = ("auto", "manual")
PROTECT_ORDERS = ("live", "stopped")   # colo.settings.PROTECT_ORDERS: how a pair enters COLO
ACCELS = ("kvm", "tcg")
BACKENDS = ("qemu", "libvirt")   # who runs each copy's QEMU: the controller itself, or libvirtd


@dataclass(frozen=True)
class SyncLink:
    """One dedicated link between the two CoServers, as one host sees it.

    device: this host's interface; local: this host's address on it (prefix: its subnet);
    peer: the other host's address on the same link."""

    device: str
    local: str
    peer: str
    prefix: int = 24


@dataclass(frozen=True)
class CoServer:
    """One of the two hosts: how it is reached (management), where COLO runs (replication),
    its two sync links (heartbeats on both; replication routed over them) and the client LAN bridge."""

    name: str
    management: str
    replication: str
    links: tuple[SyncLink, SyncLink]
    bridge: str = DEFAULT_BRIDGE

    def addresses(self) -> list[str]:
        """Every address this host owns in the site: how `site check` recognises it."""
        return [self.management, self.replication, *(ln.local for ln in self.links)]


#: In a witness TLS path, this CoServer's name: one site file on both hosts, each its own files.
HOST_PLACEHOLDER = "{host}"
#: The witness TLS files as `coserver site certs` lays them out, copied to each host (README).
DEFAULT_WITNESS_TLS = {"ca": "/etc/coserver/pki/{host}/ca-cert.pem",
                       "cert": "/etc/coserver/pki/{host}/client-cert.pem",
                       "key": "/etc/coserver/pki/{host}/client-key.pem"}


@dataclass(frozen=True)
class WitnessSite:
    """The etcd witness: its endpoints (host:port; real sites run 3) and its TLS files, or insecure.

    ca/cert/key are all given or none; each may name {host} (HOST_PLACEHOLDER), this CoServer's
    name, so that the same site file points each host to its own certificate (tls_files()).
    insecure: plain http, no authentication: only when the file says so (the lab's --insecure)."""

    endpoints: tuple[str, ...]
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    insecure: bool = False

    def hosts(self) -> list[tuple[str, int]]:
        """(host, port) of each endpoint; IPv6 literals lose their brackets."""
        out = []
        for ep in self.endpoints:
            host, _, port = ep.rpartition(":")
            out.append((host.strip("[]"), int(port)))
        return out

    def tls_files(self, host: str) -> tuple[Path, Path, Path] | None:
        """(ca, cert, key) of CoServer `host` ({host} replaced), or None without TLS."""
        if self.ca is None or self.cert is None or self.key is None:
            return None
        ca, cert, key = (Path(str(p).replace(HOST_PLACEHOLDER, host)) for p in (self.ca, self.cert, self.key))
        return ca, cert, key


@dataclass(frozen=True)
class Site:
    """One pair of CoServers and everything shared by the FT servers they protect."""

    file: Path
    name: str
    preferred: str
    coservers: dict[str, CoServer]
    witness: WitnessSite
    servers_dir: Path = DEFAULT_SERVERS_DIR
    state_dir: Path = DEFAULT_STATE_DIR
    run_dir: Path = DEFAULT_RUN_DIR
    key_file: Path = DEFAULT_KEY_FILE
    base_port: int = DEFAULT_BASE_PORT
    slots: dict[str, int] = field(default_factory=dict)
    checkpoint_ms: int = 2000
    reprotect: str = "auto"
    accel: str = "kvm"
    boot_grace_s: int = 20
    stop_timeout_s: int = 60
    sync_speed_mib_s: int = 0
    protect: str = "live"            # how the pair enters COLO (colo.primary): "live" | "stopped"
    backend: str = "qemu"            # who runs each copy's QEMU: "qemu" (the controller) | "libvirt" (libvirtd)
    libvirt_uri: str = "qemu:///system"   # the local libvirtd the libvirt backend talks to
    # the never-two-primaries numbers (controller.policy.Thresholds); None: the controller's defaults
    lease_patience_s: float | None = None
    fence_after_s: float | None = None
    promote_margin_s: float | None = None
    # how soon a silent peer or a silent QEMU counts as a fault (slow hosts, e.g. TCG inside TCG, raise
    # them; the promotion's wait grows with the heartbeat timeout, so the bound above still holds);
    # None: the controller's defaults
    heartbeat_interval_s: float | None = None
    heartbeat_timeout_s: float | None = None
    qmp_deadline_s: float | None = None
    kill_hung_after_s: float | None = None
    # operators see it (issue 18): None: each server's slot port (site.ports), 0: no metrics endpoint,
    # else this one port (a site with one FT server); the alert hook's argv (empty: none)
    metrics_port: int | None = None
    alert_command: tuple[str, ...] = ()
    # issue 14: each host's certificates under <pki_dir>/<host>/ (`coserver site certs`): TLS on every
    # stream between the two QEMUs; insecure: plain TCP instead (the lab's --insecure, never by default)
    pki_dir: Path = DEFAULT_PKI_DIR
    insecure: bool = False

    def tls_dir(self, host: str) -> Path | None:
        """Where `host`'s QEMU finds its certificates; None on an insecure site."""
        return None if self.insecure else self.pki_dir / host

    @property
    def hosts(self) -> tuple[str, str]:
        a, b = self.coservers
        return (a, b)

    def coserver(self, host: str) -> CoServer:
        """The CoServer called `host`; a name that is not one of the two is a one-line error."""
        try:
            return self.coservers[host]
        except KeyError:
            shown = repr(host) if len(host) <= 40 else repr(host[:40]) + f"... ({len(host)} characters)"
            raise SiteError(f"site {self.file}: {shown} is not one of its CoServers "
                            f"({', '.join(self.coservers)})") from None

    def witness_tls(self, host: str) -> tuple[Path, Path, Path] | None:
        """The witness TLS files of CoServer `host` (ca, cert, key); None only if the site file says
        insecure = true. A site with neither is refused: one line saying how to fix it."""
        files = self.witness.tls_files(host)
        if files is None and not self.witness.insecure:
            example = ", ".join(f'{k} = "{v}"' for k, v in DEFAULT_WITNESS_TLS.items())
            raise SiteError(f"site {self.file}: key witness: no TLS: anyone who reaches etcd could take the FT "
                            f"servers over; run `coserver site certs`, copy each host's directory to it, and add "
                            f"{example} to [witness] (README \"The witness over TLS\"); only a lab site "
                            f"({LAB_SITE_PREFIX}*) may say insecure = true instead")
        return files

    def peer_of(self, host: str) -> CoServer:
        """The other CoServer of the pair."""
        self.coserver(host)
        (other,) = (cs for name, cs in self.coservers.items() if name != host)
        return other
