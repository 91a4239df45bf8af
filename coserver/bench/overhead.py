"""Controller overhead: CPU seconds per minute of each host's controller, idle guest, protected pair.

A fresh protected lab, no client; after a short settle the CPU time
(user + system, all threads, /proc/<pid>/stat) of each process the lab runs is
read at the start and at the end of the window: the two controllers (the
headline), their supervisors, both QEMUs and the witness, for scale.

Then a second window of the same length while the pair is *watched* as an operator's tools watch
it: both controllers' /metrics scraped every second (Prometheus' usual interval is 15 s; 1 s is
the worst case) and both asked for their status every second (what `coserver web` and
`coserver status` do). The difference is what monitoring costs the controllers (issue 18's bound:
<= 0.1 CPU s per minute).
"""

from __future__ import annotations

import http.client
import shutil
import threading
import time
from pathlib import Path
from typing import Any, Callable

from coserver.bench.failover import lab_options
from coserver.bench.site import fresh_dir
from coserver.bench.workload import cpu_seconds
from coserver.errors import CoserverError
from coserver.lab.lab import Lab
from coserver.lab.net import HOSTS
from coserver.site import load_site
from coserver.site.ports import server_ports
from coserver.sys import netns
from coserver.sys import proc as sysproc

SETTLE_S = 3.0


def _pids(lab: Lab) -> dict[str, int | None]:
    st = lab.status()
    out: dict[str, int | None] = {}
    for h in HOSTS:
        e = st["hosts"].get(h, {})
        sup = sysproc.load(lab.host_dir(h), lab.supervisor_name(st["ftserver"]))
        out[f"controller {h}"] = e.get("controller_pid")
        out[f"supervisor {h}"] = sup.pid if sup else None
        out[f"qemu {h} ({e.get('role')})"] = e.get("qemu_pid")
    etcd = sysproc.load(lab.witness_dir, "etcd")
    out["witness etcd"] = etcd.pid if etcd else None
    return out


def _window(pids: dict[str, int | None], window_s: float) -> tuple[dict[str, float], float]:
    c0 = {k: cpu_seconds(p) for k, p in pids.items()}
    t0 = time.monotonic()
    time.sleep(window_s)
    took = time.monotonic() - t0
    c1 = {k: cpu_seconds(p) for k, p in pids.items()}
    return {k: round((b - a) * 60 / took, 3) for k in pids
            if (a := c0.get(k)) is not None and (b := c1.get(k)) is not None}, took


def _scrape(ns: str, address: str, port: int) -> None:
    conn = http.client.HTTPConnection(address, port, timeout=2.0)
    conn.sock = netns.socket_in(ns, address, port, 2.0)
    try:
        conn.request("GET", "/metrics")
        conn.getresponse().read()
    finally:
        conn.close()


def _watch(lab: Lab, stop: threading.Event, counts: dict[str, int]) -> None:
    """Every second: scrape both controllers' metrics (from the witness's namespace, where a
    Prometheus would be) and ask both for their status, as the operator's tools do."""
    st = lab.status()
    site = load_site(lab.etc_dir(HOSTS[0]) / "site.toml")
    port = server_ports(site, st["ftserver"]).metrics
    ns = lab.net.ns("witness")
    while not stop.wait(1.0):
        for h in HOSTS:
            try:
                _scrape(ns, site.coservers[h].management, port)
                counts["scrapes"] += 1
            except (OSError, http.client.HTTPException, CoserverError):
                counts["failed"] += 1
        lab.status()
        counts["status"] += 1


def run(base: Path, prefix: str, window_s: float, checkpoint_ms: int, say: Callable[[str], None]) -> dict[str, Any]:
    workdir = fresh_dir(base, prefix)
    lab = Lab(prefix, workdir)
    counts = {"scrapes": 0, "failed": 0, "status": 0}
    try:
        lab.up(lab_options(prefix, workdir, checkpoint_ms))
        time.sleep(SETTLE_S)
        pids = _pids(lab)
        per_min, took = _window(pids, window_s)
        stop = threading.Event()
        watcher = threading.Thread(target=_watch, args=(lab, stop, counts), name="bench-watch", daemon=True)
        watcher.start()
        try:
            watched, _ = _window(pids, window_s)
        finally:
            stop.set()
            watcher.join(timeout=10)
        state = lab.status()["state"]
    finally:
        lab.down()
        shutil.rmtree(workdir, ignore_errors=True)
    ctl = [v for k, v in per_min.items() if k.startswith("controller")]
    ctl_watched = [v for k, v in watched.items() if k.startswith("controller")]
    extra = [round(b - a, 3) for a, b in zip(ctl, ctl_watched, strict=False)]
    say(f"overhead: controllers {', '.join(f'{v:.2f}' for v in ctl)} CPU s/min over {took:.0f} s, idle guest; "
        f"watched (metrics + status every 1 s): {', '.join(f'{v:+.3f}' for v in extra)} CPU s/min")
    return {"window_s": round(took, 1), "checkpoint_ms": checkpoint_ms, "state": state, "pids": pids,
            "cpu_s_per_min": per_min, "controller_cpu_s_per_min": ctl,
            "controller_cpu_percent": [round(v / 60 * 100, 2) for v in ctl],
            "watched_cpu_s_per_min": watched, "controller_watched_cpu_s_per_min": ctl_watched,
            "monitoring_extra_cpu_s_per_min": extra, "watch_counts": counts}
