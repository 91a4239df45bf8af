"""The guest workload of the bench, and the counters read around it.

Two phases on one TCP connection to the lab guest's journal service, as a
user's application would use it:
  appends  closed loop: APPEND, wait for `OK <seq>` (sent only after fsync), next;
           throughput and per-append latency;
  probe    a request/response latency probe: COUNT (no disk) every `interval` s.
Around a phase the bench reads the kernel's TCP byte counters of the
replication connections (`ss -ti` in a CoServer's namespace: the COLO
migration stream, NBD, the packet mirror) and the CPU time of processes
(/proc/<pid>/stat).
"""

from __future__ import annotations

import os
import time
from typing import Any

from coserver.colo.settings import SyncPorts
from coserver.errors import CoserverError
from coserver.images.guestclient import connect_journal
from coserver.sys.tcpstats import StreamBytes, stream_bytes

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def append_phase(ns: str, address: str, port: int, seconds: float, tag: str) -> dict[str, Any]:
    """Back-to-back fsync'ed appends for `seconds`: ops/s and every latency (ms)."""
    lat: list[float] = []
    errors: list[str] = []
    with connect_journal(ns, address, port, 10.0) as client:
        t0 = time.monotonic()
        i = 0
        while (now := time.monotonic()) - t0 < seconds:
            try:
                client.append(f"{tag}-{i}")
                lat.append(_ms(time.monotonic() - now))
            except CoserverError as exc:
                errors.append(str(exc))
                break
            i += 1
        took = time.monotonic() - t0
    return {"seconds": round(took, 3), "ops": len(lat), "ops_per_s": round(len(lat) / took, 2),
            "latency_ms": lat, "errors": errors}


def probe_phase(ns: str, address: str, port: int, seconds: float, interval: float = 0.01) -> dict[str, Any]:
    """COUNT every `interval` s for `seconds`: request/response latency (ms) without the disk."""
    lat: list[float] = []
    errors: list[str] = []
    with connect_journal(ns, address, port, 10.0) as client:
        t0 = time.monotonic()
        while (now := time.monotonic()) - t0 < seconds:
            try:
                client.count()
                lat.append(_ms(time.monotonic() - now))
            except CoserverError as exc:
                errors.append(str(exc))
                break
            time.sleep(interval)
        took = time.monotonic() - t0
    return {"seconds": round(took, 3), "ops": len(lat), "interval_s": interval, "latency_ms": lat, "errors": errors}


# ---- TCP byte counters of the replication connections --------------------------------------
def tcp_bytes(ns: str, ports: SyncPorts) -> dict[str, StreamBytes]:
    """From the primary's namespace: the bytes on the COLO migration, NBD and packet-mirror
    connections so far (coserver.sys.tcpstats)."""
    counts = stream_bytes({"migration": ports.migration, "nbd": ports.nbd, "mirror": ports.mirror}, ns=ns)
    if counts is None:
        raise CoserverError(f"cannot read the replication connections' byte counters in {ns} (`ss -ti` failed)")
    return counts


def bytes_delta(before: dict[str, StreamBytes], after: dict[str, StreamBytes]) -> dict[str, int]:
    """Bytes sent by the primary on each stream between two samples (acked, so delivered)."""
    return {name: max(0, after[name].sent - before[name].sent if name in before else after[name].sent)
            for name in after}


# ---- CPU time ----------------------------------------------------------------------------
def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds of a process (all its threads) and of the children it has reaped
    (a controller's `ss` at each scrape, its alert hooks) so far; None if it is gone. A child still
    running (the QEMU a controller started) is not in it until it has exited and been reaped."""
    if not pid:
        return None
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return sum(int(f) for f in fields[11:15]) / _CLK_TCK   # utime, stime, cutime, cstime
