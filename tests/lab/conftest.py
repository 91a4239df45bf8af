"""When a lab test fails, say what the machine and the labs looked like at that moment.

Some lab failures have shown only in CI's whole-suite runs, never alone (a pair whose client replies
came out only at each periodic checkpoint; a guest unreachable after failover): the lab is gone by
the time anyone looks. This report, attached to the failed test's output, is what is left to read:
the load, every QEMU of every lab namespace (state, CPU seconds), their TCP connections (the COLO
proxy's mirror/compare streams, NBD, migration) and the tails of their logs.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from coserver.errors import CoserverError
from coserver.lab.lab import Lab
from coserver.lab.net import HOSTS
from coserver.sys import netns
from coserver.sys.proc import ProcessError, ProcessRecord
from coserver.sys.tcpstats import counter, ss_connections

#: Lines kept from the end of each log (CI shows only part of a long failure report: keep it short).
_TAIL = 4
_CONTROLLER_TAIL = 8
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
    logs = sorted(t for t in targets if t.endswith(".log"))
    for target in logs:
        try:
            lines = Path(f"/proc/{pid}/root{target}").read_text(errors="replace").splitlines()[-_TAIL:]
        except OSError:
            continue
        out.append(f"  {target} (last {len(lines)} lines):")
        out.extend(f"    {line[:160]}" for line in lines)
    # the host's controller of this server keeps its log beside the QEMU's: what it decided last
    for ctl in sorted({str(Path(t).parent / "controller.log.jsonl") for t in logs}):
        try:
            lines = Path(f"/proc/{pid}/root{ctl}").read_text(errors="replace").splitlines()
            events = [ln for ln in lines if '"event": "qmp.' not in ln][-_CONTROLLER_TAIL:]   # decisions, not QMP
        except OSError:
            continue
        out.append(f"  {ctl} (last {len(events)} events):")
        out.extend(f"    {_event(line)}" for line in events)
    return out


def _event(line: str) -> str:
    """A controller log line (JSON) as 'time event key=value ...', short."""
    try:
        ev = json.loads(line)
    except ValueError:
        return line[:200]
    head = f"{str(ev.pop('timestamp', ''))[11:23]} {ev.pop('event', '?')}"
    for k in ("level", "component", "logger", "server"):
        ev.pop(k, None)
    return (head + " " + " ".join(f"{k}={v}" for k, v in ev.items()))[:220]


def _tcp(ns: str) -> list[str]:
    """One short line per TCP connection of the namespace: ends, queues, bytes each way, ms since the
    last send/receive (`ss -tnpiH` prints each connection as two long, padded lines)."""
    out = []
    for cols, info in ss_connections(_run(["ip", "netns", "exec", ns, "ss", "-tnpiH"])):
        pid = next((w.split("=")[1].rstrip(",)") for w in " ".join(cols[5:]).split(",") if w.startswith("pid=")), "-")
        out.append(f"  {cols[0][:5]} {cols[3]} > {cols[4]} q={cols[1]}/{cols[2]} pid={pid} "
                   + " ".join(f"{k}={counter(info, k)}" for k in _TCP_FIELDS))
    return out


def _taps(ns: str) -> list[str]:
    """Packets each guest NIC's tap carried: RX is what the guest sent out (past the COLO proxy),
    TX what reached it; a guest whose replies never leave shows RX standing still."""
    out = []
    for link in json.loads(_run(["ip", "-n", ns, "-s", "-j", "link", "show"]) or "[]"):
        name = link.get("ifname", "")
        if name.startswith(("tap", "vnet")):
            st = link.get("stats64") or {}
            out.append(f"  {name}: from the guest {st.get('rx', {}).get('packets')} packets, "
                       f"to it {st.get('tx', {}).get('packets')}")
    return out


def lab_snapshot() -> str:
    """The load, and each lab namespace's QEMUs: state, CPU, TCP connections, log tails."""
    lines = [f"loadavg {Path('/proc/loadavg').read_text().strip()}", "busiest processes (%CPU over their life):"]
    # a process left running by an earlier test would starve a lab's secondaries on 2 cores
    top = _run(["ps", "-eo", "pid,pcpu,etimes,args", "--sort=-pcpu", "--no-headers"]).splitlines()[:6]
    lines.extend(f"  {ln.strip()[:150]}" for ln in top)
    for ns in netns.list_namespaces():
        pids = [int(p) for p in _run(["ip", "netns", "pids", ns]).split()]
        qemus = [p for p in pids if "qemu" in _comm(p)]
        lines.append(f"netns {ns}: {len(pids)} processes, QEMU {qemus}")
        for pid in qemus:
            lines.append("  " + _proc(pid))
        if qemus:
            lines.extend(_tcp(ns)[:30])
            lines.extend(_taps(ns))
        for pid in qemus:
            lines.extend(_logs(pid))
        if qemus and any(_comm(p) == "libvirtd" for p in pids):
            lines.extend(_libvirt_qmp(ns))
    return "\n".join(lines)


#: What each QEMU says through libvirt's monitor: its runstate, COLO mode, and the proxy filters
#: (which exist, and whether each is on): a pair that checkpoints while its client gets no reply.
_QMP_VIEW = ({"execute": "query-status"}, {"execute": "query-colo-status"},
             {"execute": "qom-list", "arguments": {"path": "/objects"}})
_FILTERS = ("m0", "redire0", "redire1", "rew0", "f1", "f2", "comp0")


def _virsh(ns: str, *argv: str) -> str:
    """virsh on the lab host of namespace `ns` (the lab's own HostLibvirtd: that host's /run/libvirt)."""
    prefix, host = ns.rsplit("-", 1)
    try:
        return Lab(prefix).libvirtd(host).virsh(*argv, timeout=10).stdout.strip()
    except CoserverError as exc:
        return f"({exc})"


def _libvirt_qmp(ns: str) -> list[str]:
    if ns.rsplit("-", 1)[-1] not in HOSTS:   # a libvirtd not of a lab host (the Vagrant lab's own)
        return []
    listed = _virsh(ns, "list", "--name")
    if listed.startswith("("):
        return [f"  libvirt: {listed}"]
    out = []
    for dom in listed.split():
        seen = []
        for cmd in _QMP_VIEW:
            reply = _virsh(ns, "qemu-monitor-command", dom, json.dumps(cmd))
            try:
                ret = json.loads(reply)["return"]
            except (ValueError, KeyError, TypeError):
                seen.append(f"{cmd['execute']}: {reply[:80]}")
                continue
            if cmd["execute"] == "qom-list":
                names = {o["name"] for o in ret}
                seen.append("filters " + ",".join(f for f in _FILTERS if f in names))
            else:
                seen.append(f"{cmd['execute']}: {json.dumps(ret, separators=(',', ':'))[:80]}")
        for f in _FILTERS[:6]:
            get = {"execute": "qom-get", "arguments": {"path": f"/objects/{f}", "property": "status"}}
            reply = _virsh(ns, "qemu-monitor-command", dom, json.dumps(get))
            if '"return"' in reply:
                seen.append(f"{f}={json.loads(reply)['return']}")
        out.append(f"  domain {dom} (libvirt monitor): " + "; ".join(seen))
    return out


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
