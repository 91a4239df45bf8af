"""Bytes the replication moved, per stream, read from the kernel's TCP counters (`ss -ti`).

Why the kernel and not QEMU: in COLO, `query-migrate` reports no figures at all (QEMU leaves
them out while the migration is in the COLO state), and counting bytes ourselves would put the
controller on the data path. The kernel keeps tcpi_bytes_acked / tcpi_bytes_received for every
TCP connection; the COLO checkpoint stream (the secondary's migration port) and the disk
replication (its NBD port) are two connections to the peer's replication address. Divided by
the checkpoints in the same window (a recording rule does), that is the bytes per checkpoint.

Read at scrape time only (every 15 s or so, ~3 ms), never on the controller's loop. A new
connection (a re-protection) starts again from 0: a counter reset, which Prometheus's rate()
handles.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass

from coserver.colo.settings import SyncPorts

#: What each replication stream is called in the metrics, and which of the secondary's ports it uses.
STREAMS = {"checkpoint": "migration", "disk": "nbd"}
SS_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class StreamBytes:
    """One stream's totals over its live connections, as this host sees them."""

    sent: int = 0        # acknowledged by the peer (tcpi_bytes_acked)
    received: int = 0    # tcpi_bytes_received


def _host(endpoint: str) -> tuple[str, int]:
    """'10.0.0.1:9998' / '[fe80::1]:9998' / '::ffff:10.0.0.1:9998' → (address, port)."""
    addr, _, port = endpoint.rpartition(":")
    addr = addr.strip("[]")
    if addr.startswith("::ffff:"):
        addr = addr[len("::ffff:"):]
    addr = addr.split("%", 1)[0]
    return addr, int(port) if port.isdigit() else -1


def _counter(info: str, name: str) -> int:
    for word in info.split():
        if word.startswith(name + ":"):
            value = word[len(name) + 1:]
            return int(value) if value.isdigit() else 0
    return 0


def parse_ss(text: str, peer: str, ports: SyncPorts) -> dict[str, StreamBytes]:
    """Sum `ss -tinH` output per stream: connections between here and `peer` on the stream's port
    (ours when we are the secondary, the peer's when we are the primary)."""
    wanted = {getattr(ports, port): stream for stream, port in STREAMS.items()}
    totals = {stream: [0, 0] for stream in STREAMS}
    current: str | None = None
    for line in text.splitlines():
        if not line.strip():
            continue
        if not line[0].isspace():   # a connection: State Recv-Q Send-Q Local Peer
            cols = line.split()
            current = None
            if len(cols) >= 5:
                (_, lport), (raddr, rport) = _host(cols[3]), _host(cols[4])
                if raddr == peer:
                    current = wanted.get(rport) or wanted.get(lport)
            continue
        if current is not None:
            totals[current][0] += _counter(line, "bytes_acked")
            totals[current][1] += _counter(line, "bytes_received")
            current = None
    return {stream: StreamBytes(sent, received) for stream, (sent, received) in totals.items()}


def replication_bytes(peer: str, ports: SyncPorts) -> dict[str, StreamBytes] | None:
    """This host's replication streams with `peer` now; None if `ss` cannot be run (then the
    metrics simply leave these series out)."""
    try:
        res = subprocess.run(["ss", "-tinH"], capture_output=True, text=True, timeout=SS_TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    if res.returncode != 0:
        return None
    return parse_ss(res.stdout, peer, ports)
