"""What one controller manages: ControllerConfig, written as JSON by the lab (or the installer).

It is validated when it is made or loaded, so a bad file stops the controller at
start with one line naming the field, not later in the middle of a failover.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NotRequired, TypedDict

from coserver.colo.argv import NETDEV_ID, Node
from coserver.colo.settings import PROTECT_ORDERS, SyncPorts
from coserver.colo.tls import ColoTls
from coserver.controller.errors import ConfigError
from coserver.controller.policy import (
    DEFAULT_FENCE_AFTER,
    DEFAULT_KILL_HUNG_AFTER,
    DEFAULT_LEASE_PATIENCE,
    DEFAULT_PROMOTE_MARGIN,
    DEFAULT_REPLICATION_STALL,
    Thresholds,
)
from coserver.errors import CoserverError
from coserver.libvirt.guestprocess import NETDEV_ID as LIBVIRT_NETDEV_ID
from coserver.site.model import BACKENDS

REPROTECT_POLICIES = ("auto", "manual")
#: The health probe's deadline is this share of the QMP deadline (0.25 s of the default 1 s: a healthy
#: QEMU answers in about a millisecond; what a miss means is then decided by the daemon's _classify_miss).
PROBE_SHARE = 0.25
#: The site file's timing keys, named as ControllerConfig's fields (site.load's schema says what each does).
TIMING_KEYS = ("heartbeat_interval_s", "heartbeat_timeout_s", "qmp_deadline_s", "kill_hung_after_s",
               "lease_patience_s", "fence_after_s", "promote_margin_s")
_LINK_KEYS = ("name", "local_ip", "peer_ip", "port")
_NODE_KEYS = ("sync_addr", "tap", "disk", "mac")


class LinkConfig(TypedDict):
    """One sync link the heartbeats run on."""

    name: str
    local_ip: str
    peer_ip: str
    port: int
    device: NotRequired[str | None]   # bind to this interface (SO_BINDTODEVICE)


class WitnessConfig(TypedDict):
    """Where the etcd witness answers, the site its keys belong to, the lease's TTL, and how we
    authenticate: TLS files (ca, cert, key: this host's own, {host} already replaced) or, only when
    the site file says so, insecure (plain http, no authentication)."""

    host: str
    port: int
    site: str
    ttl: NotRequired[int]
    ca: NotRequired[str]
    cert: NotRequired[str]
    key: NotRequired[str]
    insecure: NotRequired[bool]


class NodeConfig(TypedDict):
    """This host's side of the FT server (colo.argv.Node's fields)."""

    sync_addr: str
    tap: str
    disk: str
    mac: str
    overlay_dir: NotRequired[str | None]
    bridge: NotRequired[str | None]     # the client-LAN bridge the controller puts the tap on (site mode)


@dataclass(frozen=True)
class ControllerConfig:
    """What one controller manages; written by the lab (or the installer) as JSON."""

    host: str
    peer: str
    ftserver: str
    qemu_workdir: str
    qemu_name: str
    control_socket: str
    log_file: str
    journal_file: str
    key_file: str
    links: list[LinkConfig]
    witness: WitnessConfig
    node: NodeConfig
    checkpoint_ms: int = 2000
    qmp_deadline_s: float = 1.0
    kill_hung_after_s: float = DEFAULT_KILL_HUNG_AFTER  # policy.py says why 1.5 s
    heartbeat_interval_s: float = 0.2
    heartbeat_timeout_s: float = 1.0
    # never two primaries (policy.Thresholds proves promote wait > fence bound; checked below)
    lease_patience_s: float = DEFAULT_LEASE_PATIENCE   # a denied promotion retries this long (>= lease TTL)
    fence_after_s: float = DEFAULT_FENCE_AFTER         # a primary that lost its lease re-claims this long
    promote_margin_s: float = DEFAULT_PROMOTE_MARGIN   # W = the losing primary's fence bound + this
    # re-protection: what a rejoining secondary needs to start its QEMU, and the policy
    spec: str = ""                     # the FT server spec (the single source of the guest's hardware)
    accel: str = "tcg"
    peer_repl_addr: str = ""           # the peer's replication address (COLO and NBD run between these)
    ports: dict[str, int] = field(default_factory=dict)   # SyncPorts fields; default ports if empty
    reprotect: str = "auto"            # "auto" | "manual"
    sync_speed_mib_s: int = 0
    protect_order: str = "live"        # colo.settings.PROTECT_ORDERS
    # the FT server's life (lifecycle.py): who starts it first, how it stops
    preferred: bool = False            # this host is the site's preferred CoServer (a first start runs here)
    stop_timeout_s: float = 60.0       # ACPI power button, then this long for the guest to power off, then quit
    boot_grace_s: float = 20.0         # a freshly started guest boots this long before the pair protects it
    # the operator channel from the peer (controller.remote); empty: off (the lab's --config JSON)
    remote_control: dict[str, Any] = field(default_factory=dict)   # {"address", "port"}
    # the peer check (peercheck.py): both hosts must run from the same site file
    site_digest: str = ""              # peercheck.site_digest of the site file ("" for the lab's --config JSON)
    # operators see it (issue 18): the Prometheus endpoint (controller.metrics; empty: off) and the
    # alert hook's argv, run on each FT state change (controller.alerthook; empty: none)
    metrics: dict[str, Any] = field(default_factory=dict)          # {"address", "port"}
    alert_command: list[str] = field(default_factory=list)
    # issue 14: this host's certificate directory (QEMU's tls-creds-x509 layout); "": plain TCP between
    # the QEMUs (an insecure site, the lab's --insecure)
    tls_dir: str = ""
    # issue 16: who runs this copy's QEMU: "qemu" (this controller) | "libvirt" (the local libvirtd, a
    # domain named as the FT server); the libvirtd's URI
    backend: str = "qemu"
    libvirt_uri: str = "qemu:///system"

    def __post_init__(self) -> None:
        for name in ("host", "peer", "ftserver", "qemu_workdir", "qemu_name", "control_socket", "log_file",
                     "journal_file", "key_file"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ConfigError(f"controller config: {name} must be a non-empty string")
        if self.host == self.peer:
            raise ConfigError(f"controller config: host and peer are both {self.host!r}")
        if not self.links:
            raise ConfigError("controller config: no sync links")
        for i, link in enumerate(self.links):
            missing = [k for k in _LINK_KEYS if k not in link]
            if missing:
                raise ConfigError(f"controller config: links[{i}] lacks {', '.join(missing)}")
        if "host" not in self.witness or "port" not in self.witness or not self.witness.get("site"):
            raise ConfigError("controller config: witness needs host, port and site")
        tls = [k for k in ("ca", "cert", "key") if self.witness.get(k)]
        if tls and len(tls) != 3:
            raise ConfigError("controller config: witness ca, cert and key go together")
        if not tls and self.witness.get("insecure") is not True:
            raise ConfigError("controller config: witness needs TLS (ca, cert, key) or, explicitly, insecure: true")
        if tls and self.witness.get("insecure"):
            raise ConfigError("controller config: witness TLS files and insecure: true exclude each other")
        missing = [k for k in _NODE_KEYS if k not in self.node]
        if missing:
            raise ConfigError(f"controller config: node lacks {', '.join(missing)}")
        for name in ("checkpoint_ms", "qmp_deadline_s", "kill_hung_after_s", "heartbeat_interval_s",
                     "heartbeat_timeout_s", "stop_timeout_s", "lease_patience_s", "fence_after_s",
                     "promote_margin_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ConfigError(f"controller config: {name} must be a positive number, not {value!r}")
        problem = timing_problem(self.timing())
        if problem:
            raise ConfigError(f"controller config: {problem}")
        if self.reprotect not in REPROTECT_POLICIES:
            raise ConfigError(f"controller config: reprotect must be one of {REPROTECT_POLICIES}, "
                              f"not {self.reprotect!r}")
        if self.backend not in BACKENDS:
            raise ConfigError(f"controller config: backend must be one of {', '.join(BACKENDS)}, "
                              f"not {self.backend!r}")
        if self.protect_order not in PROTECT_ORDERS:
            raise ConfigError(f"controller config: protect_order must be one of {PROTECT_ORDERS}, "
                              f"not {self.protect_order!r}")
        if self.sync_speed_mib_s < 0:
            raise ConfigError("controller config: sync_speed_mib_s must not be negative")
        for key in ("remote_control", "metrics"):
            where: dict[str, Any] = getattr(self, key)
            if not where:
                continue
            address, port = where.get("address"), where.get("port")
            if not isinstance(address, str) or not address:
                raise ConfigError(f"controller config: {key}.address must be a non-empty string")
            if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
                raise ConfigError(f"controller config: {key}.port must be a port number, not {port!r}")
        if not isinstance(self.alert_command, list) or not all(isinstance(a, str) and a for a in self.alert_command):
            raise ConfigError("controller config: alert_command must be a list of non-empty strings (an argv)")
        try:
            SyncPorts(**self.ports)
        except (TypeError, ValueError, CoserverError) as exc:
            raise ConfigError(f"controller config: ports: {exc}") from exc

    @property
    def sync_ports(self) -> SyncPorts:
        return SyncPorts(**self.ports)

    @property
    def desired_file(self) -> Path:
        """What the operator asked of this FT server on this host (lifecycle.Desired)."""
        return Path(self.qemu_workdir) / "desired.json"

    @property
    def maintenance_flag(self) -> Path:
        return Path(self.qemu_workdir) / "maintenance"

    @classmethod
    def load(cls, path: Path) -> ControllerConfig:
        try:
            return cls(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError) as exc:
            raise ConfigError(f"controller config {path}: {exc}") from exc
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from exc

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")
        path.chmod(0o600)

    def timing(self) -> dict[str, float]:
        """The timing keys' values (TIMING_KEYS) and the witness's lease TTL."""
        return {**{k: getattr(self, k) for k in TIMING_KEYS}, "lease_ttl_s": float(self.witness.get("ttl", 2))}

    def thresholds(self) -> Thresholds:
        """The policy's numbers from this configuration (the witness's TTL included)."""
        return thresholds_of(self.timing())

    @property
    def probe_deadline_s(self) -> float:
        return self.qmp_deadline_s * PROBE_SHARE

    def colo_node(self) -> Node:
        n = self.node
        overlay_dir = n.get("overlay_dir")
        return Node(name=self.host, workdir=Path(self.qemu_workdir), sync_addr=n["sync_addr"], tap=n["tap"],
                    disk=Path(n["disk"]), mac=n["mac"], overlay_dir=Path(overlay_dir) if overlay_dir else None,
                    tls=ColoTls(Path(self.tls_dir), self.peer) if self.tls_dir else None,
                    netdev_id=LIBVIRT_NETDEV_ID if self.backend == "libvirt" else NETDEV_ID)


def timing_defaults() -> dict[str, float]:
    """The controller's value of each timing key a site file leaves out."""
    fields = ControllerConfig.__dataclass_fields__
    return {k: float(fields[k].default) for k in TIMING_KEYS}   # type: ignore[arg-type]


def thresholds_of(timing: dict[str, float]) -> Thresholds:
    """The policy's numbers from timing keys (TIMING_KEYS plus lease_ttl_s); ValueError if they conflict.

    A stalled replication stream is judged no sooner than a silent peer: a host whose heartbeats may
    be late by heartbeat_timeout_s (nested TCG: 5 s) also checkpoints that late now and then, and the
    Vagrant lab's primary dropped a healthy secondary at the 1 s default."""
    return Thresholds(kill_hung_after=timing["kill_hung_after_s"], lease_patience=timing["lease_patience_s"],
                      lease_ttl=timing["lease_ttl_s"], fence_after=timing["fence_after_s"],
                      heartbeat_timeout=timing["heartbeat_timeout_s"], promote_margin=timing["promote_margin_s"],
                      replication_stall=max(DEFAULT_REPLICATION_STALL, timing["heartbeat_timeout_s"]))


def timing_problem(timing: dict[str, float]) -> str | None:
    """What is wrong with these timing values together (None: nothing), naming the key to change.

    Never two primaries holds for any positive values (policy.Thresholds: the promotion waits the
    losing primary's fence bound, which grows with the heartbeat timeout, plus a margin); what can be
    wrong is a relation that makes the controller call a healthy peer or QEMU dead. Each value is
    already known positive (ControllerConfig checks its fields first, the site file's keys are in (0, 60])."""
    if timing["heartbeat_interval_s"] >= timing["heartbeat_timeout_s"]:
        return (f"heartbeat_interval_s ({timing['heartbeat_interval_s']:g} s) must be shorter than "
                f"heartbeat_timeout_s ({timing['heartbeat_timeout_s']:g} s): the peer would be lost between two "
                "heartbeats")
    probe = timing["qmp_deadline_s"] * PROBE_SHARE
    if timing["kill_hung_after_s"] <= probe:
        return (f"kill_hung_after_s ({timing['kill_hung_after_s']:g} s) must be longer than the health probe's "
                f"deadline ({probe:g} s, a quarter of qmp_deadline_s): a QEMU would be called hung before one "
                "probe could answer")
    try:
        thresholds_of(timing)
    except ValueError as exc:
        return str(exc)
    return None
