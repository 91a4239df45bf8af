"""The per-CoServer controller process: watches its QEMU, its peer and the witness, and decides.

One runs on each CoServer (lab: inside the host's namespace, under
coserver.lab.supervise; real hosts: the systemd unit). It is the only
client of its QEMU's QMP socket once the pair is up. Every `TICK_S` it builds
an Observation (local QEMU alive / hung / dead, COLO events, checkpoints
flowing, heartbeats per sync link, the peer's own report, the witness),
asks the pure policy (coserver.controller.policy) what to do, claims at the
witness when the policy says so, acts (coserver.colo: promote, go simplex;
or kill / fence the local side), moves the state machine and journals the
decision, so a restarted controller re-attaches without touching the guest.

Status and operator requests arrive on a unix control socket (mode 0600),
one JSON object per line each way.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import signal
import sys
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from coserver import log
from coserver.colo.argv import Node, secondary_args
from coserver.colo.primary import Primary, SyncProgress
from coserver.colo.secondary import Secondary
from coserver.colo.settings import ColoSettings, SyncPorts
from coserver.colo.status import read_state
from coserver.controller.heartbeat import Heartbeats, LinkSpec, load_or_create_key
from coserver.controller.journal import Journal, JournalEntry
from coserver.controller.policy import (
    Action, ClaimOutcome, Decision, Observation, Thresholds, WitnessView, after_claim, decide)
from coserver.controller.roles import QemuHealth, Role
from coserver.controller.rejoin import Move, RejoinView, ReprotectPolicy, next_move
from coserver.controller.statemachine import FtState, FtStateMachine
from coserver.controller.witness import Witness, WitnessError, WitnessUnreachable
from coserver.errors import CoserverError
from coserver.hardware.argv import ConfigGuestHardware
from coserver.hardware.config import resolve
from coserver.hardware.spec import load_spec
from coserver.paths import qemu_install, version_tuple
from coserver.qmp.errors import QmpError
from coserver.machine.launcher import QemuProcess
from coserver.qmp.session import QmpListener, QmpSession

_log = log.get("controller")

TICK_S = 0.1
HEALTH_INTERVAL_S = 0.25
WITNESS_POLL_S = 0.5
JOURNAL_EVERY_S = 5.0
WATCHED_EVENTS = ("COLO_EXIT", "MIGRATION_PASS", "RESUME", "STOP", "QUORUM_REPORT_BAD", "BLOCK_IO_ERROR",
                  "MIGRATION")


@dataclass(frozen=True)
class ControllerConfig:
    """What one controller manages; written by the lab (or the installer) as JSON."""

    host: str
    peer: str
    ftserver: str
    qemu_workdir: str
    qemu_name: str
    control_socket: str
    log_file: str
    journal_file: str
    key_file: str
    links: list[dict[str, Any]]        # [{name, local_ip, peer_ip, port, device}]
    witness: dict[str, Any]            # {host, port, ttl}
    node: dict[str, Any]               # colo Node fields: sync_addr, tap, disk, mac, overlay_dir
    checkpoint_ms: int = 2000
    qmp_deadline_s: float = 1.0
    #: A healthy QEMU here answers QMP within ~2 ms even at a checkpoint (guest pause ~45-90 ms,
    #: measured in the lab); 1.5 s of silence is a hung QEMU, with a 15x margin.
    kill_hung_after_s: float = 1.5
    heartbeat_interval_s: float = 0.1
    heartbeat_timeout_s: float = 1.0
    # re-protection: what a rejoining secondary needs to start its QEMU, and the policy
    spec: str = ""                     # the FT server spec (the single source of the guest's hardware)
    accel: str = "tcg"
    peer_repl_addr: str = ""           # the peer's replication address (COLO and NBD run between these)
    ports: dict[str, int] = field(default_factory=dict)   # SyncPorts fields; default ports if empty
    reprotect: str = "auto"            # "auto" | "manual"
    sync_speed_mib_s: int = 0

    @property
    def sync_ports(self) -> SyncPorts:
        return SyncPorts(**self.ports)

    @property
    def maintenance_flag(self) -> Path:
        return Path(self.qemu_workdir) / "maintenance"

    @classmethod
    def load(cls, path: Path) -> ControllerConfig:
        try:
            return cls(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError) as exc:
            raise CoserverError(f"controller config {path}: {exc}") from exc

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")
        path.chmod(0o600)

    def colo_node(self) -> Node:
        n = self.node
        return Node(name=self.host, workdir=Path(self.qemu_workdir), sync_addr=n["sync_addr"], tap=n["tap"],
                    disk=Path(n["disk"]), mac=n["mac"], overlay_dir=Path(n["overlay_dir"]) if n.get("overlay_dir")
                    else None)


@dataclass
class QmpHealth:
    """QMP responsiveness since this controller started (the health loop's findings)."""

    polls: int = 0
    missed: int = 0
    max_latency_ms: float = 0.0
    last_latency_ms: float | None = None
    hung_since: float | None = None  # monotonic time of the first missed deadline in a row


@dataclass
class ColoEvents:
    """What QEMU's events told us."""

    checkpoints: int = 0
    last_checkpoint: float | None = None     # monotonic
    pauses: deque = field(default_factory=lambda: deque(maxlen=256))
    colo_exit: dict | None = None
    quorum_bad: int = 0
    io_errors: int = 0
    _stopped_at: float | None = None


class HostController:
    """One CoServer's controller for one FT server."""

    def __init__(self, cfg: ControllerConfig) -> None:
        self.cfg = cfg
        self.journal = Journal(Path(cfg.journal_file))
        entry = self.journal.load()
        self.epoch = entry.epoch if entry else 0
        self.events = ColoEvents(checkpoints=entry.checkpoints if entry else 0)
        self.sm = FtStateMachine.resume(cfg.ftserver, entry.state if entry else FtState.STARTING)
        self.role = entry.role if entry else Role.NONE
        self.qemu: QemuProcess | None = None
        self.qmp: QmpSession | None = None
        self.listener: QmpListener | None = None
        self.health = QmpHealth()
        self.settings = ColoSettings(checkpoint_ms=cfg.checkpoint_ms, qmp_deadline_s=cfg.qmp_deadline_s,
                                     sync_speed_mib_s=cfg.sync_speed_mib_s)
        self.busy: asyncio.Task | None = None          # a rejoin or protect under way
        self.last_attempt = -math.inf                   # monotonic time of the last rejoin/protect
        self.rejoin_requested = False
        self.rejoin_note = ""
        self.sync: dict[str, Any] | None = None          # progress of a running (re)sync
        self.thresholds = Thresholds(kill_hung_after=cfg.kill_hung_after_s)
        self.witness = Witness(cfg.ftserver, host=cfg.witness["host"], port=int(cfg.witness["port"]),
                               ttl=int(cfg.witness.get("ttl", 2)))
        self.witness_view = WitnessView(reachable=False)
        self._witness_generation = 0
        self.heartbeats: Heartbeats | None = None
        self.decisions: deque[dict[str, Any]] = deque(maxlen=32)
        self.started_at = time.time()
        self._last_decision: tuple[str, str] | None = None
        self._last_journal = 0.0
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._acting = asyncio.Lock()

    # ---- start-up: re-attach to what runs ---------------------------------------------
    async def _attach(self) -> None:
        try:
            self.qemu = QemuProcess.attach(self.cfg.qemu_workdir, self.cfg.qemu_name)
        except CoserverError as exc:
            _log.warning("controller.no_qemu", host=self.cfg.host, reason=str(exc))
            self.qemu = None
            self.role = Role.NONE
            return
        await self._connect_qmp()
        assert self.qmp is not None
        st = await read_state(self.qmp, self.cfg.qmp_deadline_s)
        role = {"primary": Role.PRIMARY, "secondary": Role.SECONDARY}.get(st.mode)
        if role is None:
            role = Role.SIMPLEX if st.running or self.role == Role.SIMPLEX else Role.NONE
        self.role = role
        if self.sm.state == FtState.STARTING:  # a first start: take over the pair as it runs
            if role in (Role.PRIMARY, Role.SECONDARY):
                self._to(FtState.SYNCING, f"attached to a running {role} QEMU")
                self._to(FtState.PROTECTED, "COLO running: the replica is in step")
            elif role == Role.SIMPLEX:
                self._to(FtState.SIMPLEX, "attached to a guest running alone")
        if role == Role.PRIMARY and self.events.last_checkpoint is None:
            self.events.last_checkpoint = time.monotonic()

    async def _connect_qmp(self) -> None:
        assert self.qemu is not None
        self.qmp = await QmpSession.connect(self.qemu.qmp_path, name=f"{self.cfg.host}-controller",
                                            default_deadline=self.cfg.qmp_deadline_s)
        self.listener = self.qmp.listen(*WATCHED_EVENTS)
        self._spawn(self._event_loop(self.listener), "events")

    async def _claim_initial(self) -> None:
        """A primary (or simplex) side owns the witness key; a secondary learns the epoch."""
        try:
            if self.role in (Role.PRIMARY, Role.SIMPLEX):
                epoch = max(self.epoch, 1)
                res = await self.witness.claim(self.cfg.host, epoch)
                if res.granted:
                    self.epoch = epoch
                else:
                    _log.warning("controller.initial_claim_denied", host=self.cfg.host, reason=res.reason)
            elif self.role == Role.SECONDARY and self.epoch == 0:
                owner = await self.witness.current()
                if owner is not None:
                    self.epoch = owner.epoch
        except WitnessError as exc:
            _log.warning("controller.witness_at_start", host=self.cfg.host, reason=str(exc))

    async def run(self) -> None:
        await self._attach()
        links = [LinkSpec(name=ln["name"], local=(ln["local_ip"], int(ln["port"])),
                          peer=(ln["peer_ip"], int(ln["port"])), device=ln.get("device"))
                 for ln in self.cfg.links]
        self.heartbeats = Heartbeats(pair=self.cfg.ftserver, node=self.cfg.host,
                                     key=load_or_create_key(Path(self.cfg.key_file)), links=links,
                                     interval=self.cfg.heartbeat_interval_s, timeout=self.cfg.heartbeat_timeout_s)
        await self.heartbeats.open()
        await self._claim_initial()
        self._publish()
        await self.heartbeats.start()
        server = await asyncio.start_unix_server(self._serve, path=self.cfg.control_socket)
        os.chmod(self.cfg.control_socket, 0o600)
        self._save_journal("controller started")
        _log.info("controller.started", host=self.cfg.host, role=self.role, state=self.sm.state, epoch=self.epoch,
                  qemu_pid=self.qemu.pid if self.qemu else None)
        self._spawn(self._health_loop(), "health")
        self._spawn(self._witness_loop(), "witness")
        self._spawn(self._decide_loop(), "decide")
        try:
            await self._stop.wait()
        finally:
            for task in self._tasks:
                task.cancel()
            server.close()
            self._save_journal("controller stopped")
            await self.heartbeats.close()
            await self.witness.close()  # keeps the lease: a restarted controller re-claims it
            if self.qmp is not None:
                await self.qmp.close()
            Path(self.cfg.control_socket).unlink(missing_ok=True)
            _log.info("controller.stopped", host=self.cfg.host)

    def stop(self) -> None:
        self._stop.set()

    def _spawn(self, coro, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.append(task)

    # ---- watching -----------------------------------------------------------------------
    async def _event_loop(self, listener: QmpListener) -> None:
        ev_state = self.events
        try:
            async for ev in listener:
                name, now = ev.get("event"), time.monotonic()
                data = ev.get("data", {})
                if name == "MIGRATION_PASS" and self.role == Role.PRIMARY:
                    ev_state.checkpoints += 1
                    ev_state.last_checkpoint = now
                elif name == "STOP":
                    ev_state._stopped_at = now
                elif name == "RESUME":
                    if ev_state._stopped_at is not None:
                        ev_state.pauses.append(now - ev_state._stopped_at)
                        ev_state._stopped_at = None
                    if self.role == Role.SECONDARY:  # each checkpoint loaded resumes the secondary
                        ev_state.checkpoints += 1
                        ev_state.last_checkpoint = now
                elif name == "COLO_EXIT":
                    ev_state.colo_exit = {"mode": data.get("mode"), "reason": data.get("reason"), "at": time.time()}
                    _log.warning("controller.colo_exit", host=self.cfg.host, **data)
                elif name == "QUORUM_REPORT_BAD":
                    ev_state.quorum_bad += 1
                    _log.warning("controller.quorum_report_bad", host=self.cfg.host, **data)
                elif name == "BLOCK_IO_ERROR":
                    ev_state.io_errors += 1
                    _log.warning("controller.block_io_error", host=self.cfg.host, **data)
        except (QmpError, asyncio.CancelledError):
            return

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(HEALTH_INTERVAL_S)
            if self.qemu is None or self.qmp is None or self.role == Role.NONE:
                continue
            if not self.qemu.alive():
                continue  # observe() reports DEAD
            t0 = time.monotonic()
            self.health.polls += 1
            try:
                if not self.qmp.healthy:
                    await self._reconnect()
                await self.qmp.execute("query-status", deadline=self.cfg.qmp_deadline_s)
                ms = 1000 * (time.monotonic() - t0)
                self.health.last_latency_ms = round(ms, 1)
                self.health.max_latency_ms = round(max(self.health.max_latency_ms, ms), 1)
                self.health.hung_since = None
            except QmpError as exc:
                self.health.missed += 1
                if self.health.hung_since is None:
                    self.health.hung_since = t0
                    _log.warning("controller.qmp_missed", host=self.cfg.host, reason=str(exc))

    async def _reconnect(self) -> None:
        """After a missed deadline the session is suspect: a fresh one, bounded."""
        old, old_listener = self.qmp, self.listener
        assert self.qemu is not None
        self.qmp = await QmpSession.connect(self.qemu.qmp_path, name=f"{self.cfg.host}-controller",
                                            connect_timeout=self.cfg.qmp_deadline_s,
                                            default_deadline=self.cfg.qmp_deadline_s)
        self.listener = self.qmp.listen(*WATCHED_EVENTS)
        self._spawn(self._event_loop(self.listener), "events")
        if old_listener is not None:
            old_listener.close()
        if old is not None:
            await old.close(timeout=0.2)

    async def _witness_loop(self) -> None:
        while True:
            generation = self._witness_generation
            try:
                owner = await self.witness.current()
                view = WitnessView(reachable=True, owner=owner.node if owner else None,
                                   epoch=owner.epoch if owner else None, alive=bool(owner and owner.alive))
            except WitnessError:
                view = WitnessView(reachable=False)
            if generation == self._witness_generation:  # no claim or release happened meanwhile
                self.witness_view = view
            await asyncio.sleep(WITNESS_POLL_S)

    def _witness_changed(self, view: WitnessView) -> None:
        """Our own claim or release: what we know now beats any poll already under way."""
        self._witness_generation += 1
        self.witness_view = view

    def qemu_health(self) -> tuple[QemuHealth, float]:
        if self.qemu is None:
            return QemuHealth.NONE, 0.0
        if not self.qemu.alive():  # killed, crashed or fenced: the peer must hear "dead"
            return QemuHealth.DEAD, 0.0
        if self.role == Role.NONE:
            return QemuHealth.NONE, 0.0
        if self.health.hung_since is not None:
            return QemuHealth.HUNG, time.monotonic() - self.health.hung_since
        return QemuHealth.ALIVE, 0.0

    def colo_alive(self) -> bool:
        """Checkpoints flowed recently: the peer's QEMU is alive whatever its controller says."""
        last = self.events.last_checkpoint
        period = self.cfg.checkpoint_ms / 1000
        window = 1.5 * period + 0.5  # a checkpoint late by half a period plus 0.5 s is a stalled stream
        return last is not None and time.monotonic() - last < window

    def observe(self) -> Observation:
        assert self.heartbeats is not None
        qemu, hung_for = self.qemu_health()
        peer = self.heartbeats.peer_state()
        heard = [t for t in (self.heartbeats.last_heard(ln["name"]) for ln in self.cfg.links) if t is not None]
        silent_for = time.monotonic() - max(heard) if heard else float("inf")
        exit_ = self.events.colo_exit
        return Observation(
            node=self.cfg.host, role=self.role, epoch=self.epoch, qemu=qemu,
            links=self.heartbeats.links_alive(), witness=self._witness_for_policy(),
            state=self.sm.state.value, qemu_hung_for=hung_for,
            colo_exit_error=bool(exit_ and exit_.get("reason") == "error"),
            peer_qemu=QemuHealth(peer.qemu) if peer is not None else None,
            peer_silent_for=silent_for, colo_alive=self.colo_alive())

    def _witness_for_policy(self) -> WitnessView:
        held = self.witness.held
        if held is not None:  # we own it: our keep-alive is the freshest evidence
            return WitnessView(reachable=self.witness.reachable, owner=held.node, epoch=held.epoch, alive=True)
        return self.witness_view

    # ---- deciding and acting ------------------------------------------------------------
    async def _decide_loop(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            try:
                await self.tick()
            except CoserverError as exc:
                _log.error("controller.tick_failed", host=self.cfg.host, reason=str(exc))

    async def tick(self) -> None:
        async with self._acting:
            obs = self.observe()
            if self._in_grace(obs):
                return
            decision = decide(obs, self.thresholds)
            if decision.claim_epoch is not None:
                decision = await self._claim(obs, decision)
            self._note(decision)
            await self.act(decision)
            if decision.action in (Action.NONE, Action.ALERT, Action.DEGRADED_ALERT):
                await self._rejoin_step()
            self._publish()
            if time.monotonic() - self._last_journal > JOURNAL_EVERY_S:
                self._save_journal("periodic")

    def _in_grace(self, obs: Observation) -> bool:
        """Just (re)started and no heartbeat yet: silence means 'not heard yet', not 'lost'.

        Lasts one heartbeat timeout; a dead or hung local QEMU is acted on at once anyway."""
        assert self.heartbeats is not None
        young = time.time() - self.started_at < self.cfg.heartbeat_timeout_s * 1.5
        never_heard = all(self.heartbeats.last_heard(ln["name"]) is None for ln in self.cfg.links)
        return young and never_heard and obs.qemu in (QemuHealth.ALIVE, QemuHealth.NONE)

    async def _claim(self, obs: Observation, decision: Decision) -> Decision:
        assert decision.claim_epoch is not None
        owner_view = None
        try:
            res = await self.witness.claim(self.cfg.host, decision.claim_epoch)
            outcome = ClaimOutcome.GRANTED if res.granted else ClaimOutcome.DENIED
            if res.owner is not None:
                owner_view = WitnessView(True, res.owner.node, res.owner.epoch, res.owner.alive)
        except WitnessUnreachable:
            outcome = ClaimOutcome.UNREACHABLE
        except WitnessError as exc:
            _log.error("controller.claim_error", host=self.cfg.host, reason=str(exc))
            outcome = ClaimOutcome.UNREACHABLE
        final = after_claim(obs, decision, outcome, owner_view, self.thresholds)
        if outcome == ClaimOutcome.GRANTED:
            self.epoch = decision.claim_epoch
            self._witness_changed(WitnessView(True, self.cfg.host, self.epoch, True))
        elif owner_view is not None:
            self._witness_changed(owner_view)
        return final

    def _note(self, d: Decision) -> None:
        key = (d.action.value, d.reason)
        if key == self._last_decision:
            return
        self._last_decision = key
        self.decisions.append({"at": time.time(), "action": d.action.value, "reason": d.reason})
        level = _log.info if d.action in (Action.NONE,) else _log.warning
        level("controller.decision", host=self.cfg.host, action=d.action.value, reason=d.reason,
              role=self.role.value, epoch=self.epoch)

    async def act(self, d: Decision) -> None:
        a = d.action
        if a == Action.PROMOTE:
            await self._take_over(Secondary, d.reason)
        elif a == Action.CONTINUE_SIMPLEX:
            await self._take_over(Primary, d.reason)
        elif a == Action.KILL_LOCAL_QEMU:
            await self._stop_local(d.reason, release=True, to=FtState.STOPPED)
        elif a in (Action.FENCE_SELF, Action.STAND_DOWN):
            await self._stop_local(d.reason, release=False, to=FtState.FENCED)
        elif a == Action.DEGRADED_ALERT:
            if self.sm.state == FtState.PROTECTED:
                self._to(FtState.DEGRADED, d.reason)
        elif a == Action.NONE and self.sm.state == FtState.DEGRADED:
            assert self.heartbeats is not None
            if all(self.heartbeats.links_alive().values()):
                self._to(FtState.PROTECTED, "all sync links heard again")

    async def _take_over(self, side: type[Primary] | type[Secondary], reason: str) -> None:
        """Fail over on this host: the secondary promotes, or the primary drops its replica."""
        assert self.qmp is not None
        self._to(FtState.FAILING_OVER, reason)
        t0 = time.monotonic()
        await side(self.qmp, self.cfg.colo_node(), self.settings).failover()
        self.role = Role.SIMPLEX
        self.events.colo_exit = None
        self._to(FtState.SIMPLEX, f"failover done in {1000 * (time.monotonic() - t0):.0f} ms: {reason}")

    async def _stop_local(self, reason: str, *, release: bool, to: FtState) -> None:
        """End the local guest side (kill -9: a fenced side must stop now, not cleanly later)."""
        if self.qemu is not None and self.qemu.alive():
            self.qemu.kill()
        self.role = Role.NONE
        if release and self.witness.held:
            try:
                await self.witness.release()
                self._witness_changed(WitnessView(True, None, None, False))
            except WitnessError as exc:
                _log.warning("controller.release_failed", host=self.cfg.host, reason=str(exc))
        if self.sm.state != to:
            if not self.sm.can(to):
                to = FtState.FENCED if self.sm.can(FtState.FENCED) else FtState.STOPPED
            self._to(to, reason)

    def _to(self, state: FtState, reason: str) -> None:
        if self.sm.state == state:
            return
        self.sm.to(state, reason)
        self._save_journal(reason)
        self._publish()

    def _publish(self) -> None:
        if self.heartbeats is None:
            return
        qemu, _ = self.qemu_health()
        state = "maintenance" if self.role == Role.NONE and self.cfg.maintenance_flag.exists() else self.sm.state.value
        self.heartbeats.update_local(epoch=self.epoch, role=self.role.value, state=state,
                                     qemu=qemu.value, checkpoints=self.events.checkpoints)

    def _save_journal(self, reason: str) -> None:
        self._last_journal = time.monotonic()
        self.journal.save(JournalEntry(ftserver=self.cfg.ftserver, node=self.cfg.host, role=self.role,
                                       epoch=self.epoch, state=self.sm.state, checkpoints=self.events.checkpoints,
                                       qemu_name=self.cfg.qemu_name, qemu_workdir=self.cfg.qemu_workdir,
                                       reason=reason[:200]))

    # ---- re-protection --------------------------------------------------------------------
    def _rejoin_view(self) -> RejoinView:
        assert self.heartbeats is not None
        peer = self.heartbeats.peer_state() if self.heartbeats.peer_alive() else None
        return RejoinView(
            role=self.role, state=self.sm.state, epoch=self.epoch, policy=ReprotectPolicy(self.cfg.reprotect),
            maintenance=self.cfg.maintenance_flag.exists(), requested=self.rejoin_requested,
            since_last_attempt_s=time.monotonic() - self.last_attempt, peer_heard=peer is not None,
            peer_role=peer.role if peer else None, peer_state=peer.state if peer else None,
            peer_epoch=peer.epoch if peer else None, peer_maintenance=bool(peer and peer.state == "maintenance"),
            busy=self.busy is not None and not self.busy.done())

    async def _rejoin_step(self) -> None:
        if self.role == Role.SECONDARY and self.sm.state == FtState.SYNCING and self.qmp is not None:
            st = await read_state(self.qmp, self.cfg.qmp_deadline_s)
            if st.mode == "secondary":  # the primary's migration arrived: we are its replica now
                self.events.last_checkpoint = time.monotonic()
                self._to(FtState.PROTECTED, "COLO entered: this side is the secondary again")
            return
        move, why = next_move(self._rejoin_view())
        self.rejoin_note = why
        if move == Move.START_SECONDARY:
            self.busy = asyncio.get_running_loop().create_task(self._start_secondary(why), name="rejoin")
        elif move == Move.PROTECT:
            self.busy = asyncio.get_running_loop().create_task(self._protect(why), name="protect")

    def _secondary_argv(self) -> list[str]:
        """A fresh secondary of the spec's guest on this host (stale disk, new empty overlays)."""
        config = resolve(load_spec(self.cfg.spec), self.cfg.host)
        node = self.cfg.colo_node()
        if not node.disk.exists():
            raise CoserverError(f"rejoin {self.cfg.host}: disk {node.disk} does not exist")
        node.active_overlay.parent.mkdir(parents=True, exist_ok=True)
        node.create_overlays(overwrite=True)
        version = version_tuple(qemu_install().version)
        return secondary_args(node, ConfigGuestHardware(config), self.cfg.accel,
                              primary_sync_addr=self.cfg.peer_repl_addr, ports=self.cfg.sync_ports,
                              qemu_version=version)

    async def _start_secondary(self, why: str) -> None:
        """Rejoin: start a new secondary QEMU here and wait for the survivor to sync it."""
        self.last_attempt = time.monotonic()
        self.rejoin_requested = False
        assert self.heartbeats is not None
        peer = self.heartbeats.peer_state()
        try:
            if self.sm.state == FtState.FENCED:
                self._to(FtState.STOPPED, "fence cleared to rejoin as a secondary (never as a primary)")
            self._to(FtState.STARTING, why)
            if self.qemu is not None and self.qemu.alive():
                self.qemu.kill()
            args = await asyncio.to_thread(self._secondary_argv)
            proc = QemuProcess(self.cfg.qemu_name, args, self.cfg.qemu_workdir)
            await asyncio.to_thread(proc.start)
            self.qemu = proc
            await self._switch_qmp()
            assert self.qmp is not None
            await Secondary(self.qmp, self.cfg.colo_node(), self.settings).prepare(self.cfg.sync_ports)
            self.role = Role.SECONDARY
            self.epoch = max(self.epoch, peer.epoch if peer else 0)
            self.health = QmpHealth()
            self.events.colo_exit = None
            self.events.last_checkpoint = None
            self._to(FtState.SYNCING, "secondary ready: waiting for the survivor's sync")
        except (CoserverError, OSError) as exc:
            _log.error("controller.rejoin_failed", host=self.cfg.host, reason=str(exc))
            if self.qemu is not None and self.qemu.alive():
                self.qemu.kill()
            self.role = Role.NONE
            if self.sm.state != FtState.STOPPED and self.sm.can(FtState.STOPPED):
                self._to(FtState.STOPPED, f"rejoin failed, will retry: {exc}")

    async def _switch_qmp(self) -> None:
        """Drop the session to a QEMU that is gone; open one to the new QEMU."""
        old, old_listener = self.qmp, self.listener
        self.qmp = self.listener = None
        if old_listener is not None:
            old_listener.close()
        if old is not None:
            await old.close(timeout=0.2)
        await self._connect_qmp()

    def _on_sync(self, p: SyncProgress) -> None:
        now = time.monotonic()
        started = self.sync["started"] if self.sync else now
        elapsed = now - started
        rate = p.done / elapsed if elapsed >= 0.5 else None  # too early for a meaningful rate
        self.sync = {"started": started, "percent": round(p.percent, 1), "done_bytes": p.done,
                     "total_bytes": p.total, "rate_mib_s": round(rate / 2**20, 1) if rate else None,
                     "eta_s": round((p.total - p.done) / rate, 1) if rate and not p.ready else None,
                     "in_step": p.ready}

    async def _protect(self, why: str) -> None:
        """The survivor: sync the peer's new secondary and enter COLO; stay simplex if it fails."""
        self.last_attempt = time.monotonic()
        self.sync = None
        self._to(FtState.SYNCING, why)
        assert self.qmp is not None
        try:
            await Primary(self.qmp, self.cfg.colo_node(), self.settings).protect(
                self.cfg.peer_repl_addr, self.cfg.sync_ports, self._on_sync)
            self.role = Role.PRIMARY
            self.events.colo_exit = None
            self.events.last_checkpoint = time.monotonic()
            self._to(FtState.PROTECTED, f"protected again with {self.cfg.peer} as the secondary")
        except (CoserverError, OSError) as exc:
            _log.error("controller.protect_failed", host=self.cfg.host, reason=str(exc))
            self.role = Role.SIMPLEX
            self._to(FtState.SIMPLEX, f"re-protection failed, still simplex (retrying later): {exc}")
        finally:
            if self.sync is not None:
                self.sync["finished"] = True

    # ---- control socket -----------------------------------------------------------------
    async def status(self) -> dict[str, Any]:
        qemu, hung_for = self.qemu_health()
        hb = self.heartbeats
        peer = hb.peer_state() if hb else None
        last = self.events.last_checkpoint
        out: dict[str, Any] = {
            "host": self.cfg.host, "ftserver": self.cfg.ftserver, "role": self.role.value,
            "state": self.sm.state.value, "epoch": self.epoch,
            "qemu_pid": self.qemu.pid if self.qemu else None, "qemu_alive": bool(self.qemu and self.qemu.alive()),
            "qemu_health": qemu.value, "controller_pid": os.getpid(), "since": self.started_at,
            "checkpoints": self.events.checkpoints,
            "last_checkpoint_age_s": round(time.monotonic() - last, 2) if last else None,
            "checkpoint_pause_ms": _median_ms(list(self.events.pauses)),
            "colo_exit": self.events.colo_exit, "quorum_bad": self.events.quorum_bad,
            "io_errors": self.events.io_errors, "qmp": asdict(self.health),
            "links": hb.links_alive() if hb else {},
            "peer": {"role": peer.role, "state": peer.state, "qemu": peer.qemu, "epoch": peer.epoch}
            if peer else None,
            "witness": asdict(self.witness_view) | {"held": self.witness.held is not None},
            "history": [asdict(t) if hasattr(t, "__dataclass_fields__") else t for t in self.sm.history],
            "decisions": list(self.decisions),
            "reprotect": {"policy": self.cfg.reprotect, "maintenance": self.cfg.maintenance_flag.exists(),
                          "busy": bool(self.busy and not self.busy.done()), "note": self.rejoin_note},
            "sync": self.sync,
        }
        if self.qmp is not None and qemu == QemuHealth.ALIVE:
            try:
                st = await read_state(self.qmp, self.cfg.qmp_deadline_s)
                out["colo"] = {"mode": st.mode, "last_mode": st.last_mode, "reason": st.reason,
                               "migration": st.migration}
                out["guest_running"] = st.running
                out["qmp_ok"] = True
            except QmpError as exc:
                out["qmp_ok"], out["qmp_error"] = False, str(exc)
        else:
            out["qmp_ok"] = False
        return json.loads(json.dumps(out, default=str))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                try:
                    reply = await self.handle(json.loads(line))
                except (ValueError, CoserverError) as exc:
                    reply = {"ok": False, "error": str(exc)}
                writer.write(json.dumps(reply, default=str).encode() + b"\n")
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        cmd = request.get("cmd")
        if cmd == "status":
            return {"ok": True, "status": await self.status()}
        if cmd == "relinquish":
            return await self._relinquish(str(request.get("reason", "operator request")))
        if cmd == "rejoin":
            self.rejoin_requested = True
            self.last_attempt = -math.inf
            return {"ok": True, "host": self.cfg.host, "role": self.role.value}
        if cmd == "maintenance":
            return await self._maintenance(bool(request.get("on")))
        return {"ok": False, "error": f"unknown command {cmd!r}"}

    async def _maintenance(self, on: bool) -> dict[str, Any]:
        """Take this CoServer out on purpose (its secondary stops quietly), or bring it back."""
        async with self._acting:
            if not on:
                self.cfg.maintenance_flag.unlink(missing_ok=True)
                self.rejoin_requested = True
                self.last_attempt = -math.inf
                return {"ok": True, "host": self.cfg.host, "maintenance": False}
            if self.role == Role.SIMPLEX:
                return {"ok": False, "error": f"{self.cfg.host} runs the only copy of the guest (simplex): "
                                              "maintenance now would stop the FT server"}
            if self.role == Role.PRIMARY:
                refusal = self._handover_refusal()
                if refusal:
                    return {"ok": False, "error": refusal}
            self.cfg.maintenance_flag.write_text(f"{time.time()}\n")  # before stopping: no rejoin after
            if self.busy is not None and not self.busy.done():
                self.busy.cancel()
            if self.role == Role.PRIMARY:  # hand the guest to the secondary first, as a manual failover
                await self._stop_local("maintenance: handing the guest to the secondary", release=True,
                                       to=FtState.STOPPED)
            elif self.qemu is not None and self.qemu.alive():
                await asyncio.to_thread(self.qemu.stop, 5.0)
            self.role = Role.NONE
            if self.sm.state != FtState.STOPPED and self.sm.can(FtState.STOPPED):
                self._to(FtState.STOPPED, "maintenance: this CoServer is out of the pair on purpose")
            self._publish()
            return {"ok": True, "host": self.cfg.host, "maintenance": True}

    def _handover_refusal(self) -> str | None:
        """Why the guest cannot be handed to the peer now (None: it can)."""
        assert self.heartbeats is not None
        peer = self.heartbeats.peer_state() if self.heartbeats.peer_alive() else None
        if peer is None or peer.role != Role.SECONDARY.value or peer.state != FtState.PROTECTED.value \
                or self.sm.state not in (FtState.PROTECTED, FtState.DEGRADED):
            return (f"{self.cfg.peer} is not a protected, healthy secondary: handing over now would stop "
                    "the only copy")
        return None

    async def _relinquish(self, reason: str) -> dict[str, Any]:
        """Operator's manual failover: stop serving here so the secondary takes over at once."""
        async with self._acting:
            if self.role not in (Role.PRIMARY,):
                return {"ok": False, "error": f"{self.cfg.host} is {self.role.value}, not the primary of a "
                                              "protected pair: nothing to hand over"}
            refusal = self._handover_refusal()
            if refusal:
                return {"ok": False, "error": refusal}
            await self._stop_local(f"manual failover: {reason}", release=True, to=FtState.STOPPED)
            self._publish()
            return {"ok": True, "stopped": self.cfg.host}


def _median_ms(values: list[float]) -> float | None:
    if not values:
        return None
    return round(1000 * sorted(values)[len(values) // 2], 1)


async def _main(cfg: ControllerConfig) -> None:
    controller = HostController(cfg)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, controller.stop)
    await controller.run()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="coserver-controller", description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        cfg = ControllerConfig.load(args.config)
        log.configure("INFO", Path(cfg.log_file))
        asyncio.run(_main(cfg))
    except CoserverError as exc:
        print(f"coserver-controller: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
