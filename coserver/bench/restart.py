"""Restart-failover baseline: what a cluster that replicates the disk but not the running guest gives.

The alternative users would pick instead of lock-stepping ("clustering":
DRBD/Pacemaker-style): the disk is replicated synchronously, the guest runs on
one host only, and when that host fails the guest is booted again on the other
from its replica. Built from the same lab parts:
  * cs2 exports its copy of the disk over NBD (qemu-nbd, on cs2's replication
    address, over the same sync link COLO uses);
  * cs1 runs the lab guest alone; its disk is a quorum of its own copy and that
    NBD export (vote-threshold 1): every write and every flush goes to both
    before the guest sees it complete, so an fsync'ed append is on cs2 when the
    client gets its OK (synchronous replication, as DRBD protocol C);
  * a client appends every 10 ms (1 s timeout, reconnects as often as it can);
  * kill -9 cs1's QEMU; the "cluster manager" (this module) notices the QEMU is
    gone by polling its pid every 100 ms, as coserver's controller does (a real
    cluster manager adds its own monitor interval or token timeout and fencing),
    stops the NBD export, boots the guest on cs2 from its copy and announces
    its MAC on the LAN (QEMU's announce-self: what a cluster's gratuitous ARP does);
  * outage = the last OK before the kill to the first OK after; lost = acked
    appends not readable on the restarted guest.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import time
from pathlib import Path
from typing import Any, Callable

from coserver.bench.failover import gaps
from coserver.bench.site import Site, fresh_dir
from coserver.bench.stats import summary
from coserver.colo.argv import LOCAL_DISK_NODE, QUORUM_NODE, common_args
from coserver.errors import CoserverError
from coserver.images.guestclient import Writer, connect_journal, missing_acks
from coserver.machine.launcher import QemuProcess
from coserver.paths import qemu_install
from coserver.qmp.session import QmpSession
from coserver.sys import proc as sysproc

NBD_PORT = 10809
NBD_EXPORT = "disk"
NBD_NODE = "replica0"
INTERVAL_S = 0.01
CLIENT_TIMEOUT_S = 1.0
POLL_S = 0.1
ANNOUNCE_ROUNDS = 30  # 50 ms, 150 ms, ... then every 550 ms: about 15 s


def _qemu_nbd() -> str:
    beside = qemu_install().img.parent / "qemu-nbd"
    found = shutil.which("qemu-nbd")
    if beside.is_file():
        return str(beside)
    if found:
        return found
    raise CoserverError("qemu-nbd not found (apt-get install qemu-utils)")


def _blockdev(spec: dict) -> list[str]:
    return ["-blockdev", json.dumps(spec, separators=(",", ":"))]


def replicated_args(site: Site, host: str, peer_addr: str) -> list[str]:
    """The lab guest on `host` with its disk a quorum of its own copy and the peer's NBD export."""
    node = site.node(host)
    args = common_args(node, site.hardware(host), site.accel)
    args += _blockdev({"driver": "qcow2", "node-name": LOCAL_DISK_NODE,
                       "file": {"driver": "file", "filename": str(node.disk)}})
    args += _blockdev({"driver": "nbd", "node-name": NBD_NODE, "export": NBD_EXPORT,
                       "server": {"type": "inet", "host": peer_addr, "port": str(NBD_PORT)}})
    args += _blockdev({"driver": "quorum", "node-name": QUORUM_NODE, "read-pattern": "fifo",
                       "vote-threshold": 1, "children": [LOCAL_DISK_NODE, NBD_NODE]})
    args += site.hardware(host).disk_device_args(QUORUM_NODE)
    return args


def trial(base: Path, prefix: str, *, before_s: float = 2.0, after_s: float = 1.0,
          boot_timeout_s: float = 120.0) -> dict[str, Any]:
    site = Site(prefix, fresh_dir(base, prefix))
    try:
        site.create()
        assert site.guest is not None
        site.guest.new_data_disk(site.disk("cs1"))
        shutil.copyfile(site.disk("cs1"), site.disk("cs2"))  # in step before the guest first runs
        nbd_argv = [_qemu_nbd(), "--format=qcow2", "--persistent", f"--export-name={NBD_EXPORT}",
                    f"--bind={site.net.repl_address('cs2')}", f"--port={NBD_PORT}", str(site.disk("cs2"))]
        sysproc.start("qemu-nbd", nbd_argv, site.host_dir("cs2"), netns=site.net.ns("cs2"))
        _wait_port(site, "cs1", site.net.repl_address("cs2"), NBD_PORT)
        first = site.start_qemu("cs1", replicated_args(site, "cs1", site.net.repl_address("cs2")))
        boot1 = site.wait_guest(first)
        writer = Writer(site.client_ns, site.address, site.port, interval=INTERVAL_S, tag="restart",
                        timeout=CLIENT_TIMEOUT_S).start()
        time.sleep(before_s)
        t0 = time.monotonic()
        first.kill(signal.SIGKILL)
        while first.alive():
            time.sleep(POLL_S)
        detected = time.monotonic() - t0
        sysproc.stop(site.host_dir("cs2"), "qemu-nbd")  # SIGTERM: qemu-nbd flushes and lets go of the disk
        t_start = time.monotonic()
        second = site.start_simplex("cs2")
        qemu_up = time.monotonic() - t_start
        asyncio.run(_announce(second))
        try:
            site.wait_guest(second, timeout=boot_timeout_s)
        except CoserverError:
            pass  # judged below from the client's own acks
        booted = time.monotonic() - t0
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not any(a.acked >= t0 for a in writer.result.acks):
            time.sleep(0.05)
        time.sleep(after_s)
        res = writer.stop()
        before = [a.acked for a in res.acks if a.acked < t0]
        after = [a.acked for a in res.acks if a.acked >= t0]
        gap, outage = gaps(before, after)
        out: dict[str, Any] = {
            "outage_s": outage, "gap_s": gap, "detection_s": round(detected, 3),
            "restart_started_s": round(t_start - t0, 3),
            "qemu_start_s": round(qemu_up, 3), "guest_answers_s": round(booted, 3),
            "first_boot_s": round(boot1, 2), "acked": len(res.acks), "acked_after": len(after),
            "reconnects": res.reconnects, "client_errors": len(res.errors), "problems": []}
        try:
            with connect_journal(site.client_ns, site.address, site.port) as client:
                out["lost"] = len(missing_acks(client, res.acked))
        except CoserverError as exc:
            out["lost"] = None
            out["problems"].append(f"cannot read back on the restarted guest: {exc}")
        if outage is None:
            out["problems"].append("the client got no OK after the restart")
        return out
    finally:
        site.down()


async def _announce(proc: QemuProcess) -> None:
    """Tell the LAN's switches the guest's MAC is behind cs2 now (RARP from QEMU, repeated while the
    guest boots), as a cluster agent's gratuitous ARP does; without it the switch keeps sending the
    guest's frames to cs1 until the client's ARP entry expires (~30 s, measured)."""
    async with await QmpSession.connect(proc.qmp_path, name="bench-restart") as qmp:
        await qmp.execute("announce-self", {"initial": 50, "max": 550, "rounds": ANNOUNCE_ROUNDS, "step": 100},
                          deadline=5.0)


def _wait_port(site: Site, host: str, addr: str, port: int, timeout: float = 10.0) -> None:
    from coserver.sys import netns

    deadline = time.monotonic() + timeout
    while True:
        try:
            netns.socket_in(site.net.ns(host), addr, port, 1.0).close()
            return
        except OSError as exc:
            if time.monotonic() > deadline:
                raise CoserverError(f"qemu-nbd on {addr}:{port} did not start: "
                                    f"{sysproc.last_line(site.host_dir('cs2') / 'qemu-nbd.out')}") from exc
            time.sleep(0.1)


def run(base: Path, prefix: str, trials: int, say: Callable[[str], None]) -> dict[str, Any]:
    rows = []
    try:
        for i in range(trials):
            try:
                row = trial(base, prefix)
            except CoserverError as exc:
                row = {"lost": None, "problems": [f"trial could not run: {exc}"]}
            row["trial"] = i + 1
            rows.append(row)
            say(f"restart baseline {i + 1}/{trials}: outage {row.get('outage_s')} s (guest answers after "
                f"{row.get('guest_answers_s')} s), lost {row.get('lost')}"
                + (f"  [{'; '.join(row['problems'])}]" if row.get("problems") else ""))
    finally:
        shutil.rmtree(base / prefix, ignore_errors=True)
    return {"replication": "quorum(local qcow2, NBD to peer's qemu-nbd), vote-threshold 1: synchronous",
            "detection": f"pid poll every {POLL_S:g} s (no heartbeat timeout, no fencing delay)",
            "client_interval_s": INTERVAL_S, "client_timeout_s": CLIENT_TIMEOUT_S, "trials": rows,
            "outage_s": summary(r.get("outage_s") for r in rows),
            "guest_answers_s": summary(r.get("guest_answers_s") for r in rows),
            "lost": sum(r["lost"] for r in rows if r.get("lost") is not None),
            "unverified": sum(1 for r in rows if r.get("lost") is None)}
