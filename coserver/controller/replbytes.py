"""Bytes the replication moved, per stream, from the kernel's TCP counters (coserver.sys.tcpstats).

In COLO, `query-migrate` reports no figures at all (QEMU leaves them out while the migration is in
the COLO state), and counting bytes ourselves would put the controller on the data path. The COLO
checkpoint stream (the secondary's migration port) and the disk replication (its NBD port) are two
connections to the peer's replication address; divided by the checkpoints in the same window (a
recording rule does), the first is the bytes per checkpoint.

Read at scrape time only (every 15 s or so, ~3 ms in the `ss` child), never on the controller's
loop. A new connection (a re-protection) starts again from 0: a counter reset, which Prometheus's
rate() handles.
"""

from __future__ import annotations

from coserver.colo.settings import SyncPorts
from coserver.sys.tcpstats import StreamBytes, stream_bytes

__all__ = ["StreamBytes", "replication_bytes"]


def replication_bytes(peer: str, ports: SyncPorts) -> dict[str, StreamBytes] | None:
    """This host's replication streams with `peer` now (checkpoint: COLO's, disk: NBD's); None if
    `ss` cannot be run (the metrics then leave these series out)."""
    return stream_bytes({"checkpoint": ports.migration, "disk": ports.nbd}, peer=peer)
