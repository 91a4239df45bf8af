"""Per-server ports that never clash and never move: one slot of STRIDE ports per FT server.

Several FT servers share one pair of hosts, and each one's controllers and QEMUs listen on the
same replication and link addresses, so each server needs its own ports. A server's ports are

    base_port + slot * STRIDE + k      (k: mirror 0, compare 1, migration 2, nbd 3, heartbeat 4,
                                        control 5: the controller's authenticated operator channel
                                        on the management address, coserver.controller.remote;
                                        metrics 6: its Prometheus endpoint, coserver.controller.metrics)

where the slot is the site file's ``[slots]`` entry for it, else a stable hash of its name.
Both hosts compute the same ports from the same site file and names, with no shared state,
and adding a server never moves another's ports (a running pair keeps its ports). Two servers
on one slot are refused with a line naming both: the operator pins one in ``[slots]``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import asdict, dataclass

from coserver.colo.settings import SyncPorts
from coserver.site.errors import SiteError
from coserver.site.model import Site

#: Ports per slot: the seven in use and one spare for what the security issue may add.
STRIDE = 8
#: Slots a name hashes into: base_port 7400 -> ports 7400..8999.
HASH_SLOTS = 200
_OFFSETS = {"mirror": 0, "compare": 1, "migration": 2, "nbd": 3, "heartbeat": 4, "control": 5,
            "metrics": 6}


@dataclass(frozen=True)
class ServerPorts:
    """One FT server's ports on both hosts (the same numbers on each)."""

    server: str
    slot: int
    pinned: bool          # from the site's [slots], not the name's hash
    mirror: int
    compare: int
    migration: int
    nbd: int
    heartbeat: int
    control: int          # TCP on the management address: the peer's operator commands (controller.remote)
    metrics: int          # HTTP on the management address: Prometheus scrapes (site key metrics_port)

    def sync_ports(self) -> SyncPorts:
        """The COLO ports (colo.settings.SyncPorts) of this server."""
        return SyncPorts(mirror=self.mirror, compare=self.compare, migration=self.migration, nbd=self.nbd)

    def as_dict(self) -> dict[str, int | str | bool]:
        return asdict(self)


def hashed_slot(name: str) -> int:
    """The slot a name gets when [slots] does not pin it: stable across hosts, Pythons and runs."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") % HASH_SLOTS


def server_ports(site: Site, name: str) -> ServerPorts:
    """The ports of the server called `name` (no clash check: see allocate)."""
    pinned = name in site.slots
    slot = site.slots[name] if pinned else hashed_slot(name)
    first = site.base_port + slot * STRIDE
    if first + STRIDE - 1 > 65535:
        raise SiteError(f"site {site.file}: key slots.{name}: slot {slot} puts ports past 65535 "
                        f"(base_port {site.base_port})")
    return ServerPorts(server=name, slot=slot, pinned=pinned,
                       **{k: first + off for k, off in _OFFSETS.items()})


def allocate(site: Site, names: Iterable[str]) -> dict[str, ServerPorts]:
    """Every named server's ports; two on one slot is one SiteError line naming both."""
    out: dict[str, ServerPorts] = {}
    by_slot: dict[int, str] = {}
    for name in sorted(set(names)):
        ports = server_ports(site, name)
        other = by_slot.get(ports.slot)
        if other is not None:
            def how(n: str) -> str:
                return "pinned in [slots]" if n in site.slots else "by name hash"

            raise SiteError(f"site {site.file}: key slots: FT servers {other!r} ({how(other)}) and "
                            f"{name!r} ({how(name)}) both get port slot {ports.slot}: set "
                            f"[slots] {name} = <a free slot> in the site file (on both hosts)")
        by_slot[ports.slot] = name
        out[name] = ports
    return out
