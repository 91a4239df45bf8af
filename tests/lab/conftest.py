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

#: Lines kept from the end of each log.
_TAIL = 12


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
        out.extend(f"    {line[:300]}" for line in lines)
    return out


def lab_snapshot() -> str:
    """The load, and each lab namespace's QEMUs: state, CPU, TCP connections, log tails."""
    lines = [f"loadavg {Path('/proc/loadavg').read_text().strip()}"]
    for ns in netns.list_namespaces():
        pids = [int(p) for p in _run(["ip", "netns", "pids", ns]).split()]
        qemus = [p for p in pids if "qemu" in _comm(p)]
        lines.append(f"netns {ns}: {len(pids)} processes, QEMU {qemus}")
        for pid in qemus:
            lines.append("  " + _proc(pid))
            lines.extend(_logs(pid))
        if qemus:
            lines.extend("  " + ln for ln in _run(["ip", "netns", "exec", ns, "ss", "-tnpi"]).splitlines()[:40])
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
