"""What TLS on the replication streams costs: the same protected pair in plain TCP and with TLS.

Issue 14 puts every stream between the two QEMUs (COLO migration, NBD, the proxy chardevs) under
TLS by default. This section runs `rounds` rounds of A (`lab up --insecure`: plain TCP) and B (the
default, TLS), alternating which goes first, each a fresh lab with the cost section's workload
(cost.protected_run: fsync'ed appends, then a latency probe) at one checkpoint period, and
compares, in one run on one machine: appends per second (the throughput ratio), append and probe
latency, the guest's pause per checkpoint, bytes per checkpoint, and the time `lab up` took to have
the pair protected (boot, sync over NBD, the first migration: all over TLS in B).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Callable

from coserver.bench.cost import phase_summary, protected_run
from coserver.bench.stats import median, ratio
from coserver.errors import CoserverError
from coserver.lab.lab import Lab

MODES = {"plaintext": True, "tls": False}   # mode: insecure


def run(base: Path, prefix: str, rounds: int, period_ms: int, append_s: float, probe_s: float,
        say: Callable[[str], None]) -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    problems: list[str] = []
    try:
        for r in range(rounds):
            order = list(MODES) if r % 2 == 0 else list(reversed(MODES))
            for mode in order:
                try:
                    one = protected_run(base, prefix, period_ms, append_s, probe_s, f"tls-{r}-{mode}",
                                        insecure=MODES[mode])
                except CoserverError as exc:
                    problems.append(f"round {r + 1} {mode}: {exc}")
                    say(f"tls: {problems[-1]}")
                    continue
                one.update(transport=mode, round=r + 1)
                runs.append(one)
                ap = one["phases"]["appends"]
                say(f"tls round {r + 1} {mode}: {ap['ops_per_s']:.0f} appends/s, lab up {one['lab_up_s']:.1f} s")
    finally:
        Lab(prefix, base / prefix).down()
        shutil.rmtree(base / prefix, ignore_errors=True)
    out: dict[str, Any] = {"rounds": rounds, "checkpoint_ms": period_ms, "append_s": append_s, "probe_s": probe_s,
                           "runs": runs, "problems": problems}
    for mode in MODES:
        mine = [r for r in runs if r["transport"] == mode]
        if mine:
            out[mode] = {**phase_summary(mine), "lab_up_s": median(r["lab_up_s"] for r in mine)}
    if "plaintext" in out and "tls" in out:
        a, b = out["plaintext"], out["tls"]
        out["throughput_ratio"] = ratio(b["appends_per_s"], a["appends_per_s"])
        out["append_p50_ratio"] = ratio(b["append_latency_ms"]["p50"], a["append_latency_ms"]["p50"])
        out["pause_p50_ratio"] = ratio(b["appends"]["pause_ms"]["p50"], a["appends"]["pause_ms"]["p50"])
        out["lab_up_ratio"] = ratio(b["lab_up_s"], a["lab_up_s"])
    return out
