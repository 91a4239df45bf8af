"""When a lab test fails, say what the machine and the labs looked like at that moment.

Some lab failures have shown only in CI's whole-suite runs, never alone (a pair whose client replies
came out only at each periodic checkpoint; a guest unreachable after failover): the lab is gone by
the time anyone looks. This report, attached to the failed test's output, is what is left to read:
the load, every QEMU of every lab namespace (state, CPU seconds), their TCP connections (the COLO
proxy's mirror/compare streams, NBD, migration) and the tails of their logs.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from coserver.sys import netns
from coserver.sys.proc import ProcessError, ProcessRecord
from coserver.sys.tcpstats import ss_connections

#: Lines kept from the end of each log (CI shows only part of a long failure report: keep it short).
_TAIL = 4
#: The per-connection counters worth reading: which way bytes stopped, and since when.
_TCP_FIELDS = ("bytes_acked", "bytes_received", "lastsnd", "lastrcv")


def _run(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"({' '.join(argv[:4])}: {exc})\n"


def _proc(pid: int) -> str:
    """State and CPU seconds of one process (coserver.sys.proc's own /proc reading)."""
    try:
        rec = ProcessRecord.of(pid)
    except ProcessError:
        return f"pid {pid}: gone"
    ticks = rec.cpu_ticks()
    cpu = f"{ticks / os.sysconf('SC_CLK_TCK'):.1f}s" if ticks is not None else "?"
    return f"pid {pid}: state {rec.state()} CPU {cpu}"


def _logs(pid: int) -> list[str]:
    """The .log files the process has open, seen through its own root (the lab hosts' bind mounts)."""
    out = []
    fd_dir = Path(f"/proc/{pid}/fd")
    try:
        targets = {os.readlink(fd_dir / fd) for fd in os.listdir(fd_dir)}
    except OSError:
        return out
    for target in sorted(t for t in targets if t.endswith(".log")):
        try:
            lines = Path(f"/proc/{pid}/root{target}").read_text(errors="replace").splitlines()[-_TAIL:]
        except OSError:
            continue
        out.append(f"  {target} (last {len(lines)} lines):")
        out.extend(f"    {line[:160]}" for line in lines)
    return out


def _tcp(ns: str) -> list[str]:
    """One short line per TCP connection of the namespace: ends, queues, bytes each way, ms since the
    last send/receive (`ss -tnpiH` prints each connection as two long, padded lines)."""
    out = []
    for cols, info in ss_connections(_run(["ip", "netns", "exec", ns, "ss", "-tnpiH"])):
        pid = next((w.split("=")[1].rstrip(",)") for w in " ".join(cols[5:]).split(",") if w.startswith("pid=")), "-")
        counters = dict(w.split(":", 1) for w in info.split() if ":" in w and w.split(":", 1)[0] in _TCP_FIELDS)
        out.append(f"  {cols[0][:5]} {cols[3]} > {cols[4]} q={cols[1]}/{cols[2]} pid={pid} "
                   + " ".join(f"{k}={counters.get(k, '-')}" for k in _TCP_FIELDS))
    return out


def lab_snapshot() -> str:
    """The load, and each lab namespace's QEMUs: state, CPU, TCP connections, log tails."""
    lines = [f"loadavg {Path('/proc/loadavg').read_text().strip()}", "busiest processes (%CPU over their life):"]
    # a process left running by an earlier test would starve a lab's secondaries on 2 cores
    top = _run(["ps", "-eo", "pid,pcpu,etimes,comm", "--sort=-pcpu", "--no-headers"]).splitlines()[:6]
    lines.extend(f"  {ln.strip()}" for ln in top)
    for ns in netns.list_namespaces():
        pids = [int(p) for p in _run(["ip", "netns", "pids", ns]).split()]
        qemus = [p for p in pids if "qemu" in _comm(p)]
        lines.append(f"netns {ns}: {len(pids)} processes, QEMU {qemus}")
        for pid in qemus:
            lines.append("  " + _proc(pid))
        if qemus:
            lines.extend(_tcp(ns)[:30])
        for pid in qemus:
            lines.extend(_logs(pid))
    return "\n".join(lines)


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed:
        try:
            report.sections.append(("lab snapshot at the failure", lab_snapshot()))
        except Exception as exc:   # a report helper must never hide the failure it reports on
            report.sections.append(("lab snapshot at the failure", f"(could not take it: {exc!r})"))
