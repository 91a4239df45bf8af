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
import re
import subprocess
import time
from dataclasses import dataclass
from typing import Any

from coserver.colo.settings import SyncPorts
from coserver.errors import CoserverError
from coserver.images.guestclient import connect_journal
from coserver.sys.netns import exec_argv

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
_BYTES = re.compile(r"\bbytes_(sent|acked|received):(\d+)")


@dataclass(frozen=True)
class Stream:
    """One replication connection seen from the primary: which side listens on `port`."""

    name: str
    port: int
    remote: bool  # True: the peer listens on port (we dialled); False: we listen on it


def replication_streams(ports: SyncPorts | None = None) -> list[Stream]:
    p = ports or SyncPorts()
    return [Stream("migration", p.migration, True), Stream("nbd", p.nbd, True), Stream("mirror", p.mirror, False)]


def tcp_bytes(ns: str, streams: list[Stream]) -> dict[str, dict[str, int]]:
    """{stream: {sent, acked, received}} summed over its connections, from `ss -ti` in ns."""
    out: dict[str, dict[str, int]] = {}
    for s in streams:
        flt = f"( {'dport' if s.remote else 'sport'} = :{s.port} )"
        proc = subprocess.run(exec_argv(ns, ["ss", "-tinH", flt]), capture_output=True, text=True,
                              timeout=10)
        tot = {"sent": 0, "acked": 0, "received": 0}
        for kind, value in _BYTES.findall(proc.stdout):
            tot[kind] += int(value)
        out[s.name] = tot
    return out


def bytes_delta(before: dict[str, dict[str, int]], after: dict[str, dict[str, int]]) -> dict[str, int]:
    """Bytes sent by the primary on each stream between two samples (acked, so delivered)."""
    return {name: max(0, after[name]["acked"] - before.get(name, {}).get("acked", 0)) for name in after}


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
