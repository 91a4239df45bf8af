"""Controller overhead: CPU seconds per minute of each host's controller, idle guest, protected pair.

A fresh protected lab, no client; after a short settle the CPU time
(user + system, all threads, /proc/<pid>/stat) of each process the lab runs is
read at the start and at the end of the window: the two controllers (the
headline), their supervisors, both QEMUs and the witness, for scale.

Then what watching costs the controllers (issue 18's bound: <= 0.1 CPU s per minute more): a
burst of /metrics scrapes of both controllers (from the witness's namespace, where a Prometheus
would be), then a burst of status requests (what `coserver status` and `coserver web` send), each
controller's CPU read around each burst. Per request, that is free of the idle noise a timed window
has; the cost per minute follows for the rates operators use: Prometheus scraping every 15 s, and
the status page (one status request every 2 s while it is open).
"""

from __future__ import annotations

import http.client
import shutil
import time
from pathlib import Path
from typing import Any, Callable

from coserver.bench.failover import lab_options
from coserver.bench.site import fresh_dir
from coserver.bench.workload import cpu_seconds
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


#: The rates the per-minute cost is stated for: a Prometheus scrape every 15 s (its common setting),
#: a status request every 2 s (the status page while it is open: coserver.pair.web's refresh).
SCRAPES_PER_MIN, STATUS_PER_MIN = 4, 30
BURST = 100


def _burst_cost(lab: Lab, pids: dict[str, int | None], one: Callable[[], object], n: int) -> list[float]:
    """CPU seconds per request each controller spent while `one` ran n times."""
    ctl = {k: p for k, p in pids.items() if k.startswith("controller")}
    c0 = {k: cpu_seconds(p) for k, p in ctl.items()}
    for _ in range(n):
        one()
    c1 = {k: cpu_seconds(p) for k, p in ctl.items()}
    return [round((b - a) / n, 6) for k in ctl if (a := c0[k]) is not None and (b := c1[k]) is not None]


def _watch_costs(lab: Lab, pids: dict[str, int | None]) -> dict[str, Any]:
    st = lab.status()
    site = load_site(lab.etc_dir(HOSTS[0]) / "site.toml")
    port = server_ports(site, st["ftserver"]).metrics
    ns = lab.net.ns("witness")

    def scrape_both() -> None:
        for h in HOSTS:
            _scrape(ns, site.coservers[h].management, port)

    scrape = _burst_cost(lab, pids, scrape_both, BURST)
    status = _burst_cost(lab, pids, lambda: lab.status(), BURST)
    per_min = [round(a * SCRAPES_PER_MIN + b * STATUS_PER_MIN, 4) for a, b in zip(scrape, status, strict=False)]
    return {"burst": BURST, "cpu_ms_per_scrape": [round(v * 1000, 3) for v in scrape],
            "cpu_ms_per_status": [round(v * 1000, 3) for v in status],
            "rates_per_min": {"scrapes": SCRAPES_PER_MIN, "status": STATUS_PER_MIN},
            "monitoring_extra_cpu_s_per_min": per_min}


def run(base: Path, prefix: str, window_s: float, checkpoint_ms: int, say: Callable[[str], None]) -> dict[str, Any]:
    workdir = fresh_dir(base, prefix)
    lab = Lab(prefix, workdir)
    try:
        lab.up(lab_options(prefix, workdir, checkpoint_ms))
        time.sleep(SETTLE_S)
        pids = _pids(lab)
        per_min, took = _window(pids, window_s)
        watch = _watch_costs(lab, pids)
        state = lab.status()["state"]
    finally:
        lab.down()
        shutil.rmtree(workdir, ignore_errors=True)
    ctl = [v for k, v in per_min.items() if k.startswith("controller")]
    say(f"overhead: controllers {', '.join(f'{v:.2f}' for v in ctl)} CPU s/min over {took:.0f} s, idle guest; "
        f"a scrape costs {', '.join(f'{v:.2f}' for v in watch['cpu_ms_per_scrape'])} ms, a status request "
        f"{', '.join(f'{v:.2f}' for v in watch['cpu_ms_per_status'])} ms: watched (scrape every 15 s, page open) "
        f"{', '.join(f'{v:+.3f}' for v in watch['monitoring_extra_cpu_s_per_min'])} CPU s/min")
    return {"window_s": round(took, 1), "checkpoint_ms": checkpoint_ms, "state": state, "pids": pids,
            "cpu_s_per_min": per_min, "controller_cpu_s_per_min": ctl,
            "controller_cpu_percent": [round(v / 60 * 100, 2) for v in ctl], **watch}
