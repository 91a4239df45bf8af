"""Controller overhead: CPU seconds per minute of each host's controller, idle guest, protected pair.

A fresh protected lab, no client; after a short settle the CPU time
(user + system, all threads, /proc/<pid>/stat) of each process the lab runs is
read at the start and at the end of the window: the two controllers (the
headline), their supervisors, both QEMUs and the witness, for scale.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any, Callable

from coserver.bench.failover import lab_options
from coserver.bench.site import fresh_dir
from coserver.bench.workload import cpu_seconds
from coserver.lab.lab import Lab
from coserver.lab.net import HOSTS
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


def run(base: Path, prefix: str, window_s: float, checkpoint_ms: int, say: Callable[[str], None]) -> dict[str, Any]:
    workdir = fresh_dir(base, prefix)
    lab = Lab(prefix, workdir)
    try:
        lab.up(lab_options(prefix, workdir, checkpoint_ms))
        time.sleep(SETTLE_S)
        pids = _pids(lab)
        c0 = {k: cpu_seconds(p) for k, p in pids.items()}
        t0 = time.monotonic()
        time.sleep(window_s)
        took = time.monotonic() - t0
        c1 = {k: cpu_seconds(p) for k, p in pids.items()}
        state = lab.status()["state"]
    finally:
        lab.down()
        shutil.rmtree(workdir, ignore_errors=True)
    per_min = {k: round((b - a) * 60 / took, 3) for k in pids
               if (a := c0.get(k)) is not None and (b := c1.get(k)) is not None}
    ctl = [v for k, v in per_min.items() if k.startswith("controller")]
    say(f"overhead: controllers {', '.join(f'{v:.2f}' for v in ctl)} CPU s/min over {took:.0f} s, idle guest")
    return {"window_s": round(took, 1), "checkpoint_ms": checkpoint_ms, "state": state, "pids": pids,
            "cpu_s_per_min": per_min, "controller_cpu_s_per_min": ctl,
            "controller_cpu_percent": [round(v / 60 * 100, 2) for v in ctl]}
