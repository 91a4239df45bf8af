"""The primary's COLO sequences: sync the disk, protect, fail over, report.

First protection and re-protection are one path. Two orders enter COLO:

live (the default; the order Lukas Straub's colod uses, with the disk switch
moved into the migration's own pause):
  1. mirror the guest's disk into the secondary's NBD export (sync=full)
     while the guest runs, until the job is ready (in step); it stays
     running, so every later write still reaches the secondary;
  2. open the replication child (NBD, primary mode), not yet attached, and
     add the network proxy with its filters switched off;
  3. migrate with x-colo and pause-before-switchover: the RAM is copied with
     the guest running (precopy);
  4. in the pre-switchover pause (the guest is stopped by the migration):
     finish the mirror, attach the replication child, switch the filters on,
     migrate-continue; QEMU resumes the guest after the first checkpoint.
  A write can never reach one disk only: until step 4 the mirror carries it,
  after it the replication child; and a replication child attached before
  COLO starts would drop writes (replication returns EIO to quorum, which
  counts the other child's success), so it is attached only while stopped.
  The guest stops for the final RAM pass and the few QMP commands of step 4,
  not for the RAM copy.

stopped (QEMU's "resume replication" procedure, docs/COLO-FT.txt; kept so the
bench can compare): mirror until ready, stop the guest, finish the mirror,
add the replication child and the proxy, migrate: the guest stays stopped for
the whole RAM copy.

A failure anywhere undoes what was added and resumes the guest: the primary
is left simplex, never half a pair.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Callable

from coserver import log
from coserver.colo.argv import NBD_EXPORT, QUORUM_NODE, REPLICATION_NBD_NODE, REPLICATION_NODE_PRIMARY, Node
from coserver.colo.errors import ColoStepError
from coserver.colo.proxy import SECONDARY_REWRITER, PrimaryProxy, peer_streams_connected
from coserver.colo.settings import ColoSettings, SyncPorts
from coserver.colo.steps import StepRunner
from coserver.colo.tls import ColoTls
from coserver.qmp.session import QmpSession, event_data

#: the secondary's proxy streams reconnect every second: a few tries, then a clear failure
PEER_STREAMS_TIMEOUT_S = 15.0
_log = log.get("colo.primary")

SYNC_JOB = "colo-sync"
#: max-bandwidth when the live RAM copy is not capped: QEMU's default (128 MiB/s) would
#: make a 1 GiB guest take 8 s and never converge under a modest dirty rate.
UNCAPPED_MIB_S = 100_000
SYNC_TARGET_NODE = "colo-sync-target"
#: The NBD client under the replication child: named, so failover can yank it. With the
#: secondary unreachable (links cut, peer frozen) its requests never complete, and deleting
#: the node would drain them forever, freezing QEMU's main loop with it.


@dataclass(frozen=True)
class SyncProgress:
    """Initial-sync progress, as QEMU's mirror job reports it."""

    done: int
    total: int
    ready: bool

    @property
    def percent(self) -> float:
        return 100.0 * self.done / self.total if self.total else 100.0


ProgressCallback = Callable[[SyncProgress], None]


def _nbd(addr: str, ports: SyncPorts, tls: ColoTls | None) -> dict[str, Any]:
    return {"driver": "nbd", "server": {"type": "inet", "host": addr, "port": str(ports.nbd)},
            "export": NBD_EXPORT, **(tls.dialer(addr) if tls else {})}


def _ram_left(info: dict[str, Any]) -> str:
    """What a stuck live RAM copy has left, from query-migrate: for the one-line error."""
    ram = info.get("ram") or {}
    rate = ram.get("dirty-pages-rate", 0) * ram.get("page-size", 4096) / 2**20
    return (f"{ram.get('remaining', 0) / 2**20:.0f} MiB left, guest dirtying {rate:.0f} MiB/s, "
            f"copying {ram.get('mbps', 0) / 8:.0f} MB/s")


class Primary:
    """COLO operations on the primary QEMU of one node."""

    def __init__(self, qmp: QmpSession, node: Node, settings: ColoSettings) -> None:
        self.qmp, self.node, self.settings = qmp, node, settings
        self.steps = StepRunner(qmp, "primary", node.name, settings.qmp_deadline_s)

    # ---- initial synchronisation -------------------------------------------------
    async def _job(self) -> dict[str, Any] | None:
        jobs = await self.steps.run("query-block-jobs", step="sync: query-block-jobs")
        return next((j for j in jobs if j.get("device") == SYNC_JOB), None)

    async def sync_disk(self, secondary_addr: str, ports: SyncPorts,
                        progress: ProgressCallback | None = None) -> None:
        """Mirror the whole disk to the secondary's export and leave the job ready (in step)."""
        await self.steps.run("blockdev-add", {**_nbd(secondary_addr, ports, self.node.tls),
                                              "node-name": SYNC_TARGET_NODE},
                             step="sync: connect to the secondary's NBD export")
        mirror: dict[str, Any] = {"job-id": SYNC_JOB, "device": QUORUM_NODE, "target": SYNC_TARGET_NODE,
                                  "sync": "full"}
        if self.settings.sync_speed_mib_s:
            mirror["speed"] = self.settings.sync_speed_mib_s * 2**20
        await self.steps.run("blockdev-mirror", mirror, step="sync: start mirror")

        async def ready() -> bool:
            job = await self._job()
            if job is None:
                raise self.steps.fail("sync: mirror", "the mirror job ended before it was ready "
                                      "(see the QEMU log for the I/O error)")
            state = SyncProgress(int(job.get("offset", 0)), int(job.get("len", 0)), bool(job.get("ready")))
            if progress:
                progress(state)
            return state.ready

        await self.steps.poll("sync: mirror", ready, timeout=self.settings.sync_timeout_s, interval=0.25)

    async def finish_sync(self) -> None:
        """With the guest stopped: complete the ready mirror without pivoting, drop its target."""
        with self.qmp.listen("BLOCK_JOB_COMPLETED", "BLOCK_JOB_CANCELLED") as events:
            await self.steps.run("block-job-cancel", {"device": SYNC_JOB}, step="sync: finish mirror")
            try:
                ev = await events.wait(deadline=self.settings.qmp_deadline_s * 6)
            except Exception as exc:  # QmpTimeout and friends: one line, named step
                raise self.steps.fail("sync: finish mirror", exc) from exc
        data = event_data(ev)
        if ev.get("event") != "BLOCK_JOB_COMPLETED" or data.get("error"):
            raise self.steps.fail("sync: finish mirror", data.get("error") or ev.get("event"))
        await self.steps.run("blockdev-del", {"node-name": SYNC_TARGET_NODE}, step="sync: drop mirror target")

    # ---- protection --------------------------------------------------------------
    async def protect(self, secondary_addr: str, ports: SyncPorts,
                      progress: ProgressCallback | None = None) -> None:
        """Sync, then enter COLO with the secondary at secondary_addr; undo on failure."""
        objects = await self.steps.run("qom-list", {"path": "/objects"}, step="list QOM objects")
        rewriter = SECONDARY_REWRITER if any(o.get("name") == SECONDARY_REWRITER for o in objects) else None
        live = self.settings.protect_order == "live"
        proxy = PrimaryProxy(self.node.sync_addr, ports, self.node.workdir, self.settings, insert_before=rewriter,
                             tls=self.node.tls.listener() if self.node.tls else None, start_off=live,
                             netdev_id=self.node.netdev_id)
        stopped = False
        st = await self.steps.run("query-status", step="check the guest runs")
        was_running = bool(st.get("running"))
        try:
            await self.sync_disk(secondary_addr, ports, progress)
            if live:
                await self._enter_colo_live(secondary_addr, ports, proxy)
            else:
                await self.steps.run("stop", step="stop the guest for the switch into COLO")
                stopped = True
                await self.finish_sync()
                await self._open_replication_child(secondary_addr, ports)
                await self._attach_replication_child()
                await self.steps.run_all(proxy.add_commands(), step="add the network proxy")
                await self._start_migration(secondary_addr, ports, pause_before_switchover=False)
            await self.wait_colo()
        except BaseException as exc:
            _log.warning("colo.protect.failed", node=self.node.name, reason=str(exc))
            # stopped: we stopped it; live: the migration may have (pre-switchover, or a QEMU that
            # finished a plain migration and left its guest in postmigrate)
            await self._undo_protect(proxy, resume=stopped or (live and was_running))
            raise

    async def _enter_colo_live(self, secondary_addr: str, ports: SyncPorts, proxy: PrimaryProxy) -> None:
        """Steps 2-4 of the live order: the guest stops only in the migration's pre-switchover pause."""
        await self._open_replication_child(secondary_addr, ports)
        await self.steps.run_all(proxy.add_commands(), step="add the network proxy (filters off)")
        await self._wait_peer_streams()
        with self.qmp.listen("MIGRATION") as migration:
            await self._start_migration(secondary_addr, ports, pause_before_switchover=True)

            def pre_switchover(ev: Any) -> bool:
                return event_data(ev).get("status") in ("pre-switchover", "failed", "cancelled", "completed")

            try:
                ev = await migration.wait(deadline=self.settings.migrate_timeout_s, predicate=pre_switchover)
            except Exception as exc:  # QmpEventTimeout and friends: one line, named step
                info = await self.steps.run("query-migrate", step="copy the RAM (live)")
                raise self.steps.fail("copy the RAM (live)",
                                      f"{exc}; migration {info.get('status')}, "
                                      f"{_ram_left(info)}") from exc
        status = event_data(ev).get("status")
        if status != "pre-switchover":
            info = await self.steps.run("query-migrate", step="copy the RAM (live)")
            raise self.steps.fail("copy the RAM (live)", f"migration {status}: "
                                  f"{info.get('error-desc', 'no reason given')}")
        # The guest is stopped now; every command below adds to its pause.
        await self.steps.run_all(proxy.mirror_on_commands(), step="switch the mirror to the secondary on")
        await self.finish_sync()
        await self._attach_replication_child()
        await self.steps.run_all(proxy.switch_on_commands(), step="switch the network proxy on")
        await self.steps.run("migrate-continue", {"state": "pre-switchover"}, step="switch over into COLO")

    async def _wait_peer_streams(self) -> None:
        """Wait until the secondary's two proxy streams have connected (it retries every second)
        before the RAM copy starts. Once the copy runs, the secondary's main loop is busy loading it,
        and its connection (a TLS handshake included) can complete only at the switchover (seen in a
        packet capture), after the client's first packets: the mirror drops what it cannot send, so
        the secondary never answers them and colo-compare holds the primary's replies until the
        client retransmits."""

        async def connected() -> bool:
            return peer_streams_connected(await self.steps.run("query-chardev",
                                                               step="wait for the secondary's proxy streams"))

        await self.steps.poll("wait for the secondary's proxy streams (mirror and compare ports)", connected,
                              timeout=PEER_STREAMS_TIMEOUT_S, interval=0.05)

    async def _open_replication_child(self, secondary_addr: str, ports: SyncPorts) -> None:
        await self.steps.run("blockdev-add", {"driver": "replication", "node-name": REPLICATION_NODE_PRIMARY,
                                              "mode": "primary",
                                              "file": {**_nbd(secondary_addr, ports, self.node.tls),
                                                       "detect-zeroes": "on",
                                                       "node-name": REPLICATION_NBD_NODE}},
                             step="add the replication child")

    async def _attach_replication_child(self) -> None:
        await self.steps.run("x-blockdev-change", {"parent": QUORUM_NODE, "node": REPLICATION_NODE_PRIMARY},
                             step="attach the replication child to the quorum")

    async def _start_migration(self, secondary_addr: str, ports: SyncPorts, *, pause_before_switchover: bool) -> None:
        s = self.settings
        await self.steps.run("migrate-set-capabilities",
                             {"capabilities": [{"capability": "x-colo", "state": True},
                                               {"capability": "events", "state": True},
                                               {"capability": "pause-before-switchover",
                                                "state": pause_before_switchover}]},
                             step="enable x-colo and migration events")
        params: dict[str, Any] = {"x-checkpoint-delay": s.checkpoint_ms,
                                  **(self.node.tls.dialer(secondary_addr) if self.node.tls else {})}
        if pause_before_switchover:
            params["downtime-limit"] = s.switchover_downtime_ms
            params["max-bandwidth"] = (s.migrate_speed_mib_s or UNCAPPED_MIB_S) * 2**20
        await self.steps.run("migrate-set-parameters", params,
                             step="set the checkpoint period" + (" and TLS" if self.node.tls else ""))
        await self.steps.run("migrate", {"uri": f"tcp:{secondary_addr}:{ports.migration}"},
                             step="start the COLO migration")

    async def wait_colo(self) -> None:
        """Wait until the migration reaches the COLO state (or fails)."""

        async def in_colo() -> bool:
            info = await self.steps.run("query-migrate", step="wait for COLO")
            status = info.get("status")
            if status == "completed" and self.settings.protect_order == "live":
                raise self.steps.fail("wait for COLO", "QEMU finished a plain migration instead of entering COLO "
                                      "after pause-before-switchover (a QEMU without 'migration: Fix transition to "
                                      "COLO state from precopy', in 10.2.0 and 10.0.7, cannot enter COLO live)")
            if status in ("failed", "cancelled", "completed"):
                raise self.steps.fail("wait for COLO", f"migration {status}: {info.get('error-desc', 'no reason given')}")
            return bool(status == "colo")

        await self.steps.poll("wait for COLO", in_colo, timeout=self.settings.migrate_timeout_s)
        _log.info("colo.primary.colo.entered", node=self.node.name)

    async def _undo_protect(self, proxy: PrimaryProxy, *, resume: bool) -> None:
        """Take back whatever protect() added; resume the guest if we stopped it."""
        try:
            await self.steps.best_effort("migrate_cancel")
            await self.steps.best_effort("block-job-cancel", {"device": SYNC_JOB, "force": True})
            await asyncio.sleep(0.2)
            for cmd, args in proxy.remove_commands():
                await self.steps.best_effort(cmd, args)
            await self.steps.best_effort("x-blockdev-change", {"parent": QUORUM_NODE, "child": "children.1"})
            await self.steps.best_effort("blockdev-del", {"node-name": REPLICATION_NODE_PRIMARY})
            await self.steps.best_effort("blockdev-del", {"node-name": SYNC_TARGET_NODE})
            if resume:
                await self.steps.best_effort("cont")
        except ColoStepError as exc:  # QEMU hung during the undo: the caller's error says the rest
            _log.error("colo.undo.failed", node=self.node.name, reason=str(exc))

    # ---- failover ----------------------------------------------------------------
    async def failover(self) -> None:
        """The secondary is lost: leave COLO and keep serving alone (QEMU's documented order)."""
        s = self.steps
        # Cut every connection to the lost secondary first, so nothing below waits on it.
        await s.best_effort("yank", {"instances": [{"type": "migration"}]})
        await s.best_effort("yank", {"instances": [{"type": "block-node", "node-name": REPLICATION_NBD_NODE}]})
        for chardev in ("mirror0", "compare1"):
            await s.best_effort("yank", {"instances": [{"type": "chardev", "id": chardev}]})
        await s.best_effort("x-blockdev-change", {"parent": QUORUM_NODE, "child": "children.1"})
        await s.best_effort("blockdev-del", {"node-name": REPLICATION_NODE_PRIMARY})
        for cmd, args in PrimaryProxy.remove_commands():
            await s.best_effort(cmd, args)
        await s.best_effort("x-colo-lost-heartbeat")
        await self.ensure_running()

    async def ensure_running(self) -> None:
        """After failover the guest must run; resume it if a checkpoint left it stopped."""

        async def running() -> bool:
            st = await self.steps.run("query-status", step="check the guest runs")
            if st.get("status") in ("paused", "colo", "postmigrate", "finish-migrate"):
                await self.steps.best_effort("cont")
            return bool(st.get("running"))

        await self.steps.poll("check the guest runs", running, timeout=10.0, interval=0.05)
