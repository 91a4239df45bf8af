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
one JSON object per line each way, and, on a site's CoServer, from the peer over
the management network (coserver.controller.remote, HMAC with the pair key).
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
from collections.abc import Coroutine, Mapping
from dataclasses import asdict
from enum import StrEnum
from pathlib import Path
from typing import Any

from coserver import log
from coserver.colo.primary import Primary, SyncProgress
from coserver.colo.secondary import Secondary
from coserver.colo.settings import ColoSettings
from coserver.colo.status import read_state
from coserver.controller import actions, control, peercheck, remote
from coserver.controller.alerthook import AlertHook
from coserver.controller.config import ControllerConfig
from coserver.controller.control import Command
from coserver.controller.errors import ConfigError, JournalError, WitnessError, WitnessUnreachable
from coserver.controller.heartbeat import Heartbeat, Heartbeats, LinkSpec, load_keys, load_or_create_key
from coserver.controller.journal import Journal, JournalEntry
from coserver.controller.lifecycle import Desired, StartMove, StartView, after_restart, start_move
from coserver.controller.metrics import ControllerMetrics, Snapshot
from coserver.controller.observe import (
    MAX_CHECKPOINT_GAP_S,
    WATCHED_EVENTS,
    ColoEvents,
    QmpHealth,
    checkpoint_every,
    colo_window,
)
from coserver.controller.outsidepause import OutsidePause
from coserver.controller.policy import (
    FENCE_POLL,
    Action,
    ClaimOutcome,
    Decision,
    Observation,
    Thresholds,
    WitnessView,
    after_claim,
    decide,
    must_self_fence,
)
from coserver.controller.rejoin import AttemptLog, Move, RejoinView, ReprotectPolicy, next_move
from coserver.controller.replbytes import replication_bytes
from coserver.controller.roles import QemuHealth, Role
from coserver.controller.siteconfig import controller_config_for
from coserver.controller.statemachine import RUNNING, FtState, FtStateMachine
from coserver.controller.witness import Witness, WitnessTls
from coserver.errors import CoserverBug, CoserverError, clip
from coserver.libvirt.guestprocess import LibvirtQemu, attach_qemu
from coserver.machine.launcher import QemuProcess, last_words
from coserver.qmp.errors import QmpError
from coserver.qmp.session import QmpListener, QmpSession
from coserver.site import load_site
from coserver.site.keygen import KeyRing
from coserver.site.local import this_host
from coserver.site.pki import check_pki_dir
from coserver.site.servers import find_server, spec_names
from coserver.sys import netns
from coserver.sys.aio import Wake, sleep_to_grid
from coserver.sys.clock import boottime
from coserver.sys.proc import boot_id
from coserver.sys.tcpstats import StreamBytes, stream_bytes_async

_log = log.get("controller")

#: The decide loop's idle cadence, on the heartbeats' grid (one wake-up for a round and a tick).
#: What must be acted on at once does not wait for it: the peer's new word or its silence (the
#: heartbeats' on_change), QEMU's exit (a pidfd), its COLO events, a stuck QEMU, a stalled checkpoint
#: all wake the loop. At 0.1 s the idle ticks were a fifth of an idle controller's CPU.
TICK_S = 0.2
#: Why a controller stopped its FT server when the guest powered itself off (the words `status` shows).
GUEST_OFF_WHY = "the guest powered itself off"
#: How long a primary whose guest powered itself off keeps its lease while its secondary is still heard
#: running: the peer follows within a heartbeat or two; past this, its controller is taken to be stuck.
GUEST_OFF_HOLD_S = 5.0
#: announce-self when a silent peer is heard again while we run alone: rounds over ~2 s, so a frame its
#: resuming QEMU sends before it is stopped cannot leave the LAN switch pointing at it.
ANNOUNCE_AGAIN = {"initial": 100, "max": 550, "rounds": 6, "step": 100}
#: The health loop's cadence: QEMU's state and CPU time are sampled on the decide loop's grid (one
#: wake-up for both: on this kind of VM a wake-up of the process costs ~0.2 ms of CPU by itself).
HEALTH_INTERVAL_S = TICK_S
#: A denied claim that the policy retries (a lost primary's lease not lapsed yet) is retried this soon.
CLAIM_RETRY_S = 0.1
#: A QMP probe (query-status) at least this often ...
PROBE_INTERVAL_S = 1.0
#: ... and at once when QEMU is stopped (SIGSTOP: its /proc state), or used no CPU at all since the
#: previous sample (what a deadlocked QEMU shows): a probe at most 0.4 s after it stops computing.
#: CPU time is read from QEMU's CPU-time clock in ns (sys.proc.cpu_clock_ns): a running guest's QEMU
#: always uses some in 0.1 s under TCG (an idle lab guest's: at least 0.5 ms, measured); an idle KVM
#: guest's may not, and is then probed every HEALTH_INTERVAL_S, which costs it nothing but a QMP
#: round trip. (Read in /proc's 10 ms ticks, an idle TCG guest's CPU time stood still for most
#: samples, and it was probed up to 10 times a second.)
_STOPPED = frozenset({"T", "t"})   # /proc states of a stopped (SIGSTOP) or traced process


#: A QEMU whose COLO stream moves while its QMP misses deadlines is in a long checkpoint (QEMU
#: saves and loads the RAM holding its main loop): busy, not hung, for at most this long.
CHECKPOINT_BUSY_LIMIT_S = 30.0
#: How long the COLO stream and QEMU's CPU time are watched once a QMP probe missed its deadline.
STREAM_SAMPLE_S = 0.05
#: How late a checkpoint may be (the guest held stopped in one this long, or the next one this long
#: past its period) before, with the peer silent on every link and no byte of the COLO stream moving
#: (acknowledged or received) in STREAM_SAMPLE_S, the stream counts as stalled: checkpoints no longer
#: flow, whatever the last MIGRATION_PASS said. A powered-off peer acknowledges nothing: the primary's
#: checkpoint request waits for a reply that never comes (the guest runs meanwhile, its output held),
#: or its RAM copy stops. Without it the last checkpoint vouched for a powered-off secondary for a whole
#: colo_window (2 s at a 1 s period). A healthy checkpoint here stops the guest for 15-60 ms; a large
#: one moves bytes.
CHECKPOINT_STALLED_AFTER_S = 0.3
#: A primary whose peer has been silent on every link for this share of the heartbeat timeout checks
#: whether the COLO streams still deliver (_watch_unresponsive_replica): 0.5 s at the default 1 s.
EARLY_SILENCE_FRACTION = 0.5


class Miss(StrEnum):
    """What a missed health probe means (_classify_miss)."""

    BUSY = "busy"     # the COLO stream moves: a long checkpoint holds QEMU's main loop
    SLOW = "slow"     # QEMU uses CPU but does not answer: killed after kill_hung_after
    STUCK = "stuck"   # neither: stopped or deadlocked, killed at once where the peer can take over

#: QEMU events the decide loop acts on at once (a COLO exit is a failover's first word).
WAKE_EVENTS = frozenset({"COLO_EXIT", "SHUTDOWN", "BLOCK_IO_ERROR", "QUORUM_REPORT_BAD"})
#: How long a tick that finds the local QEMU gone waits for its QMP connection to end (its last events read).
LAST_WORDS_S = 0.2
WITNESS_POLL_S = 0.5
#: How often a protected secondary that hears its peer asks the witness: it acts on the witness's
#: word only once the peer falls silent (WITNESS_HEARD_INTERVALS heartbeats missed), and from then
#: on it asks every WITNESS_POLL_S again; a poll costs ~0.15 CPU s/min per 1/s in gRPC (issue 15).
WITNESS_QUIET_POLL_S = 2.0
WITNESS_HEARD_INTERVALS = 2
JOURNAL_EVERY_S = 5.0
#: While the journal cannot be saved (a full disk): how often a tick tries again.
JOURNAL_RETRY_S = 1.0
#: Exit status after a bug (EX_SOFTWARE): the supervisor restarts the controller.
EXIT_BUG = 70


class TaskEnded(CoserverBug):
    """A controller loop returned: it must run until the controller stops."""


class HostController:
    """One CoServer's controller for one FT server."""

    def __init__(self, cfg: ControllerConfig, *, journal: Journal, witness: Witness,
                 heartbeats: Heartbeats, key: bytes | None = None) -> None:
        """Collaborators come in from outside (from_config builds the real ones), so a test can pass fakes.

        key: the pair's key, for the peer's operator channel (controller.remote, when cfg.remote_control)."""
        self.cfg = cfg
        self.key = key
        self.journal = journal
        entry = self.journal.load(ftserver=cfg.ftserver, node=cfg.host)  # another host's or server's: refused
        self.journal_error: str | None = None              # the last save failed: running from memory
        self.journal_unsaved_since: float | None = None    # wall clock of the first failed save of the run
        self.epoch = entry.epoch if entry else 0
        self.events = ColoEvents(checkpoints=entry.checkpoints if entry else 0)
        self.sm = FtStateMachine.resume(cfg.ftserver, entry.state if entry else FtState.STARTING)
        self.role = entry.role if entry else Role.NONE
        self._qemu: QemuProcess | None = None
        self._domain_tag: tuple[str, int] | None = None   # (role, epoch) the libvirt domain's metadata says
        self._exit_fd: int | None = None   # a pidfd of _qemu, watched by the loop (_watch_exit)
        self.qmp: QmpSession | None = None
        self.listener: QmpListener | None = None
        self.health = QmpHealth()
        self.settings = ColoSettings(checkpoint_ms=cfg.checkpoint_ms, qmp_deadline_s=cfg.qmp_deadline_s,
                                     sync_speed_mib_s=cfg.sync_speed_mib_s, protect_order=cfg.protect_order)
        self.guest_off_epoch = 0   # the epoch in which our guest powered itself off (heartbeats say it)
        self.guest_off_hold_since: float | None = None   # since when we keep the lease for the peer to follow
        self.peer_guest_off_since: float | None = None   # since when the secondary says its guest powered off
        self.replica_off_epoch = 0    # our copy (a secondary) saw the guest power itself off in this epoch
        self._peer_was_heard = True   # _announce_if_peer_returned: the peer's silence ended
        self._peer_hung_since: float | None = None   # when the peer began reporting its QEMU HUNG
        self._woken = Wake()   # set by a watcher: the decide loop ticks now, not at its next TICK_S
        self._peer_qemu_was_running = False   # _announce_if_peer_returned: the peer's QEMU stopped
        self._well_at: float | None = None   # last tick at which the pair was seen in COLO, both QEMUs alive
        self.guest_off_ignored = 0    # a peer's guest_off at or below this is history (the operator started since)
        self.busy: asyncio.Task[None] | None = None          # a rejoin or protect under way
        self.last_attempt = -math.inf                   # monotonic time of the last rejoin/protect
        self.rejoin_requested = False
        self.rejoin_note = ""
        self.attempts = AttemptLog()                    # (re-)protections that did not hold: crash loops
        self._killed_local = False                      # our QEMU was killed by us (not a crash)
        # settled in run() once attached (no file: a running pair is adopted, an idle one waits)
        self.desired = Desired.load(cfg.desired_file, default=Desired(run=True, why="no wish recorded"))
        self.desired_error: str | None = None           # the last save of `desired` failed (a full disk)
        self.start_note = ""
        self.guest_started_at: float | None = None      # monotonic: our simplex start (boot grace)
        self.powering_down_since: float | None = None   # monotonic: server stop pressed the power button
        self.sync: dict[str, Any] | None = None          # progress of a running (re)sync
        self.thresholds: Thresholds = cfg.thresholds()
        self.witness = witness
        witness.on_lost = self._lease_lost               # the self-fence (policy.must_self_fence)
        self._lease_lost_at: float | None = None        # boottime: our grant went (or never came)
        #: the checkpoint mark at which the COLO stream was found stalled on a silent peer
        #: (_watch_stalled_checkpoint); None: not stalled
        self._stalled_at: tuple[float | None, float | None] | None = None
        #: the same for the primary's early verdict (_watch_unresponsive_replica): the replica is lost
        self._unresponsive_at: tuple[float | None, float | None] | None = None
        # monotonic: when the pair last entered COLO here (a restarted controller: from its restart)
        self._nudged_at = 0.0   # nudge_checkpoint: when we last asked QEMU for a checkpoint
        self._colo_since: float | None = (time.monotonic() if self.sm.state in (FtState.PROTECTED, FtState.DEGRADED)
                                          else None)
        self._fence_task: asyncio.Task[None] | None = None
        self.witness_view = WitnessView(reachable=False)
        self._witness_generation = 0
        self.heartbeats = heartbeats
        heartbeats.on_change = self._woken.set   # the peer's new word, or its silence: decided on now
        self.maintenance = cfg.maintenance_flag.exists()  # out of the pair on purpose (survives restarts)
        self.failure: BaseException | None = None          # the bug that stopped this controller
        self.decisions: deque[dict[str, Any]] = deque(maxlen=32)
        self.qemu_released: dict[str, Any] | None = None   # libvirt's hook's last "QEMU gone" (control.Command)
        self.outside_pause = OutsidePause()             # virsh suspend of a protected copy: undone, said
        self.started_at = time.time()
        self._started_boot = boottime()                 # the start-up grace (a wall-clock step must not end it)
        self._last_decision: tuple[str, str] | None = None
        self._last_journal = 0.0
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._forever: set[str] = set()                 # names of the tasks that must run until stop()
        self._acting = asyncio.Lock()
        # operators see it (issue 18): Prometheus metrics (served in run()) and the site's alert hook
        self.metrics = ControllerMetrics(
            cfg.ftserver, cfg.host, tick_s=TICK_S,
            replication=(lambda: replication_bytes(cfg.peer_repl_addr, cfg.sync_ports)) if cfg.peer_repl_addr else None)
        self.events.on_pause = self.metrics.observe_pause
        self.alert_hook = AlertHook(cfg.alert_command, ftserver=cfg.ftserver, host=cfg.host)

    @classmethod
    def from_config(cls, cfg: ControllerConfig, *, key: bytes | KeyRing | None = None) -> HostController:
        """The controller with its real journal, witness client and heartbeats (sockets open in run()).

        key: the pair's key, already loaded (the site path: load_key, never created); without it
        the key file is read or created (the lab's --config path, for now)."""
        links = [LinkSpec(name=ln["name"], local=(ln["local_ip"], int(ln["port"])),
                          peer=(ln["peer_ip"], int(ln["port"])), device=ln.get("device"))
                 for ln in cfg.links]
        keys = KeyRing.of(key if key is not None else load_or_create_key(Path(cfg.key_file)))
        heartbeats = Heartbeats(pair=cfg.ftserver, node=cfg.host, key=keys,
                                state_file=Path(cfg.journal_file).with_name("heartbeat.state.json"),
                                links=links, interval=cfg.heartbeat_interval_s, timeout=cfg.heartbeat_timeout_s,
                                site=cfg.site_digest, qemu_version=peercheck.local_qemu_version(),
                                clock=boottime)   # freshness must count a suspend (sys/clock.py)
        w = cfg.witness
        tls = WitnessTls(ca=Path(w["ca"]), cert=Path(w["cert"]), key=Path(w["key"])) if "cert" in w else None
        witness = Witness(cfg.ftserver, site=w["site"], host=w["host"], port=int(w["port"]), tls=tls,
                          ttl=int(w.get("ttl", 2)))   # the TLS files are read and checked here: one line if bad
        return cls(cfg, journal=Journal(Path(cfg.journal_file)), witness=witness, heartbeats=heartbeats,
                   key=keys.current)

    # ---- start-up: re-attach to what runs ---------------------------------------------
    async def _attach(self) -> None:
        try:
            self.qemu = attach_qemu(self.cfg.qemu_workdir, self.cfg.qemu_name)
        except CoserverError as exc:
            _log.warning("controller.qemu.absent", host=self.cfg.host, reason=str(exc))
            self.qemu = None
            self.role = Role.NONE
            if self.sm.state in RUNNING:  # the journal says a guest side ran here: it is gone (power cut)
                self._to(FtState.STOPPED, f"no QEMU found at start (was {self.sm.state}): it ended while "
                                          "the controller was down")
            return
        qmp = await self._open_qmp()
        st = await read_state(qmp, self.cfg.qmp_deadline_s)
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

    async def _open_qmp(self, *, connect_timeout: float = 30.0, drop_old_first: bool = False) -> QmpSession:
        """The controller's one QMP session to its QEMU: connect, listen to WATCHED_EVENTS, watch them.

        The session it replaces is closed after the new one is up, or before it is
        tried when the old one leads to a QEMU that is gone (drop_old_first)."""
        if self.qemu is None:
            raise CoserverBug(f"{self.cfg.host}: a QMP session asked for while no QEMU is known")
        if drop_old_first:
            await self._close_qmp(self.qmp, self.listener)
            self.qmp = self.listener = None
        qmp = await QmpSession.connect(self.qemu.qmp_path, name=f"{self.cfg.host}-controller",
                                       connect_timeout=connect_timeout, default_deadline=self.cfg.qmp_deadline_s)
        old, old_listener = self.qmp, self.listener
        self.qmp, self.listener = qmp, qmp.listen(*WATCHED_EVENTS)
        self._spawn(self._event_loop(self.listener), "events")
        await self._close_qmp(old, old_listener)
        return qmp

    @staticmethod
    async def _close_qmp(qmp: QmpSession | None, listener: QmpListener | None) -> None:
        if listener is not None:
            listener.close()
        if qmp is not None:
            await qmp.close(timeout=0.2)

    async def _claim_initial(self) -> None:
        """A primary (or simplex) side owns the witness key; a secondary learns the epoch."""
        try:
            if self.role in (Role.PRIMARY, Role.SIMPLEX):
                epoch = max(self.epoch, 1)
                res = await self.witness.claim(self.cfg.host, epoch)
                if res.granted:
                    self.epoch = epoch
                else:
                    _log.warning("controller.claim.initial.denied", host=self.cfg.host, reason=res.reason)
                    self._lease_lost(f"initial claim denied: {res.reason}")
            elif self.role == Role.SECONDARY and self.epoch == 0:
                owner = await self.witness.current()
                if owner is not None:
                    self.epoch = owner.epoch
        except WitnessError as exc:
            _log.warning("controller.witness.start.unreachable", host=self.cfg.host, reason=str(exc))
            if self.role in (Role.PRIMARY, Role.SIMPLEX):
                self._lease_lost(f"no grant at start: {exc}")

    def _lease_lost(self, reason: str) -> None:
        """witness.on_lost, or no grant at start: count from now; the watchdog fences a primary at
        fence_after unless the lease comes back (policy.Thresholds has the bound)."""
        if self._lease_lost_at is None:
            self._lease_lost_at = boottime()
            _log.warning("controller.lease.lost", host=self.cfg.host, role=self.role.value, epoch=self.epoch,
                         reason=reason, fence_after=self.thresholds.fence_after)
        if self._fence_task is None or self._fence_task.done():
            self._fence_task = self._spawn(self._fence_watch(), "fence-watch")

    async def _fence_watch(self) -> None:
        """Kill our QEMU at the first FENCE_POLL at which must_self_fence() holds, without waiting for
        a tick (a tick may sit in a witness call); the next tick records the fence."""
        while self._lease_lost_at is not None and self.role != Role.NONE:
            if must_self_fence(self.observe(), self.thresholds) and self.qemu is not None and self.qemu.alive():
                _log.critical("controller.lease.fence", host=self.cfg.host, epoch=self.epoch,
                              lost_for=round(boottime() - (self._lease_lost_at or 0), 2))
                self._killed_local = True
                self.qemu.kill()
                return
            await asyncio.sleep(FENCE_POLL)

    async def run(self) -> None:
        """Attach, serve and decide until stop(); raises the bug that stopped it, if one did."""
        await self._attach()
        if not self.cfg.desired_file.exists():
            # No wish recorded: a pair adopted while it runs keeps running; an idle one waits for `start`.
            self.desired = Desired(run=self.role != Role.NONE, since=time.time(), why="adopted as found",
                                   boot=boot_id())
            self._save_desired()
        elif self.role == Role.NONE:   # nothing runs here: a controller restart, or a host that rebooted
            wish = after_restart(self.desired, boot_id())
            if wish != self.desired:
                self.desired = wish
                self._save_desired()
        await self.heartbeats.open()
        await self._claim_initial()
        self._publish()
        await self.heartbeats.start()
        server = await control.serve(self.cfg.control_socket, self.handle)
        remote_server = await remote.serve_configured(self.cfg.remote_control, self.key, self.handle)
        if self.cfg.metrics:
            self.metrics.serve(self.cfg.metrics["address"], int(self.cfg.metrics["port"]))
        self._save_journal("controller started")
        _log.info("controller.started", host=self.cfg.host, role=self.role, state=self.sm.state, epoch=self.epoch,
                  qemu_pid=self.qemu.pid if self.qemu else None)
        self._spawn(self.heartbeats.wait(), "heartbeats", forever=True)
        self._spawn(self._health_loop(), "health", forever=True)
        self._spawn(self._stall_loop(), "stall-watch", forever=True)
        self._spawn(self._witness_loop(), "witness", forever=True)
        self._spawn(self._decide_loop(), "decide", forever=True)
        try:
            await self._stop.wait()
        finally:
            await self._shut_down(server, remote_server)
        if self.failure is not None:
            raise self.failure

    async def _shut_down(self, *servers: asyncio.Server | None) -> None:
        """Stop every task, heartbeats and the witness's keep-alive first (a controller that stops,
        or failed, must fall silent so its peer may take over), then the rest; each step on its own,
        so one that fails does not skip the others. QEMU is never touched: it runs on."""
        self._unwatch_exit()
        for task in self._tasks:
            task.cancel()
        steps: list[tuple[str, Any]] = [
            ("heartbeats", self.heartbeats.close),
            ("witness", self.witness.close),   # keeps the lease: a restarted controller re-claims it
            *((f"server {i}", srv.close) for i, srv in enumerate(servers) if srv is not None),
            ("journal", lambda: self._save_journal("controller stopped")),
            ("qmp", self.qmp.close if self.qmp is not None else None),
            ("socket", lambda: Path(self.cfg.control_socket).unlink(missing_ok=True)),
            ("metrics", self.metrics.close),
            ("alert hook", self.alert_hook.close),
        ]
        for what, step in steps:
            if step is None:
                continue
            try:
                result = step()
                if asyncio.iscoroutine(result):
                    await result
            except Exception as exc:  # noqa: BLE001 - stopping: go on with the next step
                _log.error("controller.stop.step.failed", host=self.cfg.host, step=what, error=repr(exc))
        _log.info("controller.stopped", host=self.cfg.host,
                  failure=repr(self.failure) if self.failure is not None else None)

    def stop(self) -> None:
        self._stop.set()

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str, *, forever: bool = False) -> asyncio.Task[None]:
        """A task of this controller: cancelled at stop; an exception escaping it stops the controller,
        and so does a `forever` task (a loop) that ends at all before stop()."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks = [t for t in self._tasks if not t.done()]
        self._tasks.append(task)
        if forever:
            self._forever.add(name)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:  # what no loop handles is a bug: never carry on after a half-done step
            self._fail(exc, f"task {task.get_name()}")
        elif task.get_name() in self._forever and not self._stop.is_set():
            self._fail(TaskEnded(f"task {task.get_name()} ended: it should run until the controller stops"),
                       f"task {task.get_name()}")

    def _fail(self, exc: BaseException, where: str) -> None:
        """A bug: stop the process (its supervisor restarts it; it re-attaches from its journal).

        Never raises (it runs in a task's done callback): the stop comes first, the log line after."""
        if self.failure is None:
            self.failure = exc
        self.stop()
        try:
            _log.critical("controller.bug", host=self.cfg.host, where=where, error=repr(exc),
                          note="stopping: heartbeats and the witness lease stop, QEMU runs on; "
                               "the supervisor restarts this controller")
        except Exception:  # noqa: BLE001 - the log is best effort; the stop above is what matters
            pass

    # ---- watching -----------------------------------------------------------------------
    @property
    def qemu(self) -> QemuProcess | None:
        """The local QEMU; setting it arms a watch on its exit (_watch_exit)."""
        return self._qemu

    @qemu.setter
    def qemu(self, proc: QemuProcess | None) -> None:
        if proc is not self._qemu:
            self.events.qemu_ending = None   # said by the QEMU that was watched before, not by this one
        self._qemu = proc
        self._watch_exit(proc)

    def _watch_exit(self, proc: QemuProcess | None) -> None:
        """Tick the moment the QEMU process ends (a pidfd becomes readable), not at the next TICK_S:
        a killed primary's controller reports it dead sooner, and the peer promotes sooner."""
        self._unwatch_exit()
        if proc is None or proc.pid is None:
            return
        try:
            loop = asyncio.get_running_loop()
            fd = os.pidfd_open(proc.pid)
        except (RuntimeError, OSError):   # no loop yet (resumed at start), or the process is gone
            return
        if not proc.alive():   # a zombie already, or not our process: _qemu_alive must not trust the fd
            os.close(fd)
            return
        self._exit_fd = fd
        loop.add_reader(fd, self._qemu_exited)

    def _qemu_alive(self) -> bool:
        """Our QEMU runs: known without reading /proc while its exit watch is armed and has not fired
        (the kernel makes the pidfd readable the moment the process exits; the loop runs _qemu_exited
        in its next round); else QemuProcess.alive(). The ticks asked /proc twice each (two system
        calls to reap, three to read): a tenth of an idle primary's controller's CPU."""
        if self._exit_fd is not None:
            return True
        return self.qemu is not None and self.qemu.alive()

    def _qemu_exited(self) -> None:
        self._unwatch_exit()
        self._woken.set()

    def _unwatch_exit(self) -> None:
        if self._exit_fd is not None:
            fd, self._exit_fd = self._exit_fd, None
            try:
                asyncio.get_running_loop().remove_reader(fd)
            except RuntimeError:
                pass
            os.close(fd)

    async def _event_loop(self, listener: QmpListener) -> None:
        try:
            async for ev in listener:
                self.events.record(ev, self.role, self.cfg.host)
                if ev.get("event") in WAKE_EVENTS:
                    self._woken.set()
                elif ev.get("event") == "STOP" and self.events.stopped_since is not None:
                    self._spawn(self._refuse_outside_pause(self.events.stopped_since), "outside-pause")
        except QmpError:
            return

    async def _stall_loop(self) -> None:
        """The stall watch on the health loop's grid (one wake-up for both), but not behind its QMP
        probe: a primary whose peer lost power mid-checkpoint has its main loop blocked, so the probe
        waits its whole deadline, and the client with it."""
        while True:
            await sleep_to_grid(HEALTH_INTERVAL_S)
            await self._watch_stalled_checkpoint()

    async def _health_loop(self) -> None:
        last_probe = -math.inf
        last_cpu: int | None = None
        while True:
            await sleep_to_grid(HEALTH_INTERVAL_S)
            if self.qemu is None or self.role == Role.NONE:
                last_cpu = None
                continue
            state = self.qemu.proc_state()   # one /proc read: our process still, and stopped or not
            cpu = self.qemu.cpu_ns()
            if state is None or state in ("Z", "X") or cpu is None:
                last_cpu = None
                continue  # gone: observe() reports DEAD
            t0 = time.monotonic()
            stalled, last_cpu = cpu == last_cpu or state in _STOPPED, cpu
            if (t0 - last_probe < PROBE_INTERVAL_S and not stalled
                    and self.health.hung_since is None and self.qmp is not None and self.qmp.healthy):
                continue   # QEMU computes and was answering: the next probe is due later
            last_probe = t0
            self.health.polls += 1
            try:
                qmp = self.qmp if self.qmp is not None and self.qmp.healthy else await self._reconnect()
                await qmp.probe("query-status", deadline=self.cfg.probe_deadline_s)
                ms = 1000 * (time.monotonic() - t0)
                self.health.last_latency_ms = round(ms, 1)
                self.health.max_latency_ms = round(max(self.health.max_latency_ms, ms), 1)
                self.health.hung_since = None
                self.health.stuck = False
                self._end_busy()
            except QmpError as exc:
                self.health.missed += 1
                miss = await self._classify_miss(t0)
                if miss == Miss.BUSY:
                    continue
                self.health.stuck = miss == Miss.STUCK
                if self.health.stuck:
                    self._woken.set()   # a stuck QEMU is acted on now: every 0.1 s counts for the client
                if self.health.hung_since is None:
                    self.health.hung_since = t0
                    _log.warning("controller.qmp.missed", host=self.cfg.host, reason=str(exc))

    async def _classify_miss(self, t0: float) -> Miss:
        """QMP missed its deadline: busy, slow or stuck? A checkpoint of much dirty RAM holds QEMU's
        main loop for seconds on both sides (the primary saves, the secondary loads, each under the
        BQL) while its bytes flow; calling that a hang killed both QEMUs of a pair whose guest filled
        768 MiB in one period. Bytes the kernel counts on the migration connection in
        STREAM_SAMPLE_S say it is busy (at most CHECKPOINT_BUSY_LIMIT_S in a row; then it is a hang
        again); a stopped or deadlocked QEMU moves none (at most what fills the socket buffers) and
        uses no CPU: stuck. One that uses CPU is slow."""
        if self.qemu is None or self.role not in (Role.PRIMARY, Role.SECONDARY) or not self.cfg.peer_repl_addr:
            return Miss.SLOW
        if self.health.busy_since is not None and t0 - self.health.busy_since >= CHECKPOINT_BUSY_LIMIT_S:
            return Miss.SLOW
        cpu_before = self.qemu.cpu_ticks()
        before, after = await self._sample_colo_stream()
        cpu_after = self.qemu.cpu_ticks()
        if before is None or after is None or after == before or after == StreamBytes():
            # None (no /proc entry: it just died, observe() reports DEAD) counts as CPU used: never stuck
            moved = cpu_before is None or cpu_after is None or cpu_after > cpu_before
            return Miss.SLOW if moved else Miss.STUCK
        if self.health.busy_since is None:
            self.health.busy_since = t0
            _log.info("controller.qmp.busy", host=self.cfg.host, why="QMP late while the COLO stream moves: "
                      "a long checkpoint, not a hang")
        self.health.hung_since = None
        return Miss.BUSY

    async def _sample_streams(self, ports: Mapping[str, int]) -> tuple[dict[str, StreamBytes] | None,
                                                                      dict[str, StreamBytes] | None]:
        """These streams' kernel byte counters with the peer, STREAM_SAMPLE_S apart (None: unread)."""
        before = await stream_bytes_async(ports, peer=self.cfg.peer_repl_addr)
        await asyncio.sleep(STREAM_SAMPLE_S)
        after = await stream_bytes_async(ports, peer=self.cfg.peer_repl_addr)
        return before, after

    async def _sample_colo_stream(self) -> tuple[StreamBytes | None, StreamBytes | None]:
        """The COLO (migration) stream's counters, STREAM_SAMPLE_S apart (None: unread)."""
        before, after = await self._sample_streams({"colo": self.cfg.sync_ports.migration})
        return (None if before is None else before["colo"]), (None if after is None else after["colo"])

    def _end_busy(self) -> None:
        if self.health.busy_since is not None:
            busy = time.monotonic() - self.health.busy_since
            self.health.busy_max_s = round(max(self.health.busy_max_s, busy), 2)
            _log.info("controller.qmp.busy.ended", host=self.cfg.host, busy_s=round(busy, 2))
            self.health.busy_since = None

    async def _reconnect(self) -> QmpSession:
        """After a missed deadline the session is suspect: a fresh one, bounded. The old one is closed
        first: a QMP monitor serves one client at a time, so while the old connection is open a new
        one is accepted by the kernel but never greeted, and a QEMU that was only busy for a moment
        would look hung for good."""
        return await self._open_qmp(connect_timeout=self.cfg.qmp_deadline_s, drop_old_first=True)

    def _witness_poll_can_wait(self, since_poll: float) -> bool:
        """May this round skip asking the witness? Only a protected secondary that hears its peer and
        whose last answer was "reachable", for up to WITNESS_QUIET_POLL_S: nothing it does then rests
        on the view (a failover, a self-fence or a stand-down all start from a silent peer or a newer
        epoch the peer's heartbeats already show), and the round after the peer falls silent asks."""
        return (self.role == Role.SECONDARY and self.sm.state in (FtState.PROTECTED, FtState.DEGRADED)
                and self.witness_view.reachable and since_poll < WITNESS_QUIET_POLL_S
                and self._peer_silent_for() < WITNESS_HEARD_INTERVALS * self.cfg.heartbeat_interval_s)

    async def _witness_loop(self) -> None:
        polled_at = -math.inf
        while True:
            generation = self._witness_generation
            held = self.witness.held
            if held is not None:
                # While we hold the lease the policy reads the keep-alive's word (_witness_for_policy),
                # not this view; the view follows it without an RPC (a poll costs ~0.3 CPU s/min in
                # gRPC), so that when the lease is lost the view is what a poll just before would have
                # said, and polling resumes at the next round.
                self.witness_view = WitnessView(reachable=bool(self.witness.reachable), owner=held.node,
                                                epoch=held.epoch, alive=True)
            elif not self._witness_poll_can_wait(time.monotonic() - polled_at):
                polled_at = time.monotonic()
                try:
                    owner = await self.witness.current()
                    view = WitnessView(reachable=True, owner=owner.node if owner else None,
                                       epoch=owner.epoch if owner else None, alive=bool(owner and owner.alive))
                except WitnessError:
                    view = WitnessView(reachable=False)
                if generation == self._witness_generation:  # no claim or release happened meanwhile
                    self.witness_view = view
            await sleep_to_grid(WITNESS_POLL_S)

    def _witness_changed(self, view: WitnessView) -> None:
        """Our own claim or release: what we know now beats any poll already under way."""
        self._witness_generation += 1
        self.witness_view = view

    def qemu_health(self) -> tuple[QemuHealth, float]:
        if self.qemu is None:
            return QemuHealth.NONE, 0.0
        if not self._qemu_alive() or self.events.qemu_ending is not None:
            # killed, crashed or fenced, or quitting on the host's word: the peer must hear "dead"
            return QemuHealth.DEAD, 0.0
        if self.role == Role.NONE:
            return QemuHealth.NONE, 0.0
        if self.health.hung_since is not None:
            return QemuHealth.HUNG, time.monotonic() - self.health.hung_since
        return QemuHealth.ALIVE, 0.0

    def _peer_hung_for(self, peer_qemu: str | None) -> float:
        """Seconds the peer has reported its QEMU HUNG in a row (0 once it reports anything else)."""
        if peer_qemu != QemuHealth.HUNG.value:
            self._peer_hung_since = None
            return 0.0
        now = time.monotonic()
        if self._peer_hung_since is None:
            self._peer_hung_since = now
        return now - self._peer_hung_since

    def colo_alive(self) -> bool:
        """Checkpoints flowed recently, and the stream is not found stalled on a silent peer since the
        last one: the peer's QEMU is alive whatever its controller says."""
        if self._stalled_at is not None and self._stalled_at == self._checkpoint_mark():
            return False
        return self.events.colo_alive(self.cfg.checkpoint_ms)

    def _checkpoint_mark(self) -> tuple[float | None, float | None]:
        """Where the checkpoints stand (the last one's time, the pause under way): a new checkpoint
        or the end of a pause moves it, which ends a stall verdict."""
        return self.events.last_checkpoint, self.events.stopped_since

    def _checkpoint_late(self, now: float) -> bool:
        stopped = self.events.stopped_since
        if stopped is not None:
            return now - stopped >= CHECKPOINT_STALLED_AFTER_S
        return now - self._checkpoints_since() >= checkpoint_every(self.cfg.checkpoint_ms) + CHECKPOINT_STALLED_AFTER_S

    def _checkpoints_since(self) -> float:
        """Monotonic time from which the next checkpoint is counted: the last one, or entering COLO here."""
        return max(self.events.last_checkpoint or 0.0, self._colo_since or 0.0)

    async def _watch_stalled_checkpoint(self) -> None:
        """Find the COLO stream stalled (colo_alive false) when a checkpoint is late (_checkpoint_late),
        the peer is silent on every link and the stream moves no byte: a powered-off or cut-off peer
        acknowledges nothing. A primary does not wait that long while its client waits: with the peer
        silent for EARLY_SILENCE_FRACTION of the heartbeat timeout, COLO streams holding bytes the peer
        does not acknowledge are enough (_watch_unresponsive_replica). Sampled only in those cases (an
        `ss` child twice), so an idle healthy pair pays nothing for it."""
        mark = self._checkpoint_mark()
        if (mark == self._stalled_at or self.qemu is None
                or self.role not in (Role.PRIMARY, Role.SECONDARY) or not self.cfg.peer_repl_addr
                or self.sm.state not in (FtState.PROTECTED, FtState.DEGRADED)):
            return
        peer_lost = not any(self.heartbeats.links_alive().values())
        if not (peer_lost and self._checkpoint_late(time.monotonic())):
            # the primary's early check, while the heartbeats have not timed out yet
            if (self.role == Role.PRIMARY
                    and self._peer_silent_for() >= EARLY_SILENCE_FRACTION * self.cfg.heartbeat_timeout_s):
                await self._watch_unresponsive_replica(mark)
            return
        before, after = await self._sample_colo_stream()
        if before is None or after is None or before != after:
            return
        if self._checkpoint_mark() == mark:
            self._stalled_at = mark
            _log.warning("controller.colo.stalled", host=self.cfg.host, role=self.role.value,
                         since_checkpoint=round(time.monotonic() - self._checkpoints_since(), 2),
                         guest_stopped=mark[1] is not None,
                         why="a checkpoint is late, the peer is silent on all links and the COLO stream "
                             "moves nothing")
            self._woken.set()

    async def _watch_unresponsive_replica(self, mark: tuple[float | None, float | None]) -> None:
        """Primary, peer silent on every link for a while: do the COLO streams (the client's packets
        mirrored to the secondary, its replies, the checkpoint stream) hold bytes the peer leaves
        unacknowledged, with nothing delivered or received for STREAM_SAMPLE_S? A live peer host
        acknowledges within a round trip whatever its controller does; a powered-off, frozen or
        cut-off one does not. Meanwhile colo-compare holds every reply for the secondary's copy, so
        each moment spent waiting for the heartbeat timeout is the client's outage."""
        p = self.cfg.sync_ports
        before, after = await self._sample_streams({"colo": p.migration, "mirror": p.mirror, "compare": p.compare})
        if before is None or after is None or before != after:
            return
        if not any(before[n].queued and after[n].queued for n in after) or self._checkpoint_mark() != mark:
            return
        self._stalled_at = self._unresponsive_at = mark
        _log.warning("controller.replica.unresponsive", host=self.cfg.host, silent_s=round(self._peer_silent_for(), 2),
                     queued={n: b.queued for n, b in after.items() if b.queued},
                     why="the peer is silent on all links and acknowledges none of the COLO streams' bytes")
        self._woken.set()

    def _peer_silent_for(self) -> float:
        """Seconds since the last valid heartbeat on any link (inf: never heard)."""
        heard = [t for t in (self.heartbeats.last_heard(ln["name"]) for ln in self.cfg.links) if t is not None]
        return self.heartbeats.now() - max(heard) if heard else float("inf")

    def observe(self) -> Observation:
        qemu, hung_for = self.qemu_health()
        peer = self.heartbeats.peer_state()
        silent_for = self._peer_silent_for()
        exit_ = self.events.colo_exit
        lease = self._holds_lease()
        if lease:
            self._lease_lost_at = None
        return Observation(
            node=self.cfg.host, role=self.role, epoch=self.epoch, qemu=qemu,
            links=self.heartbeats.links_alive(), witness=self._witness_for_policy(),
            state=self.sm.state.value, qemu_hung_for=hung_for,
            qemu_stuck=qemu == QemuHealth.HUNG and self.health.stuck,
            colo_exit_error=bool(exit_ and exit_.get("reason") == "error"),
            peer_qemu=QemuHealth(peer.qemu) if peer is not None else None,
            peer_qemu_hung_for=self._peer_hung_for(peer.qemu if peer is not None else None),
            peer_silent_for=silent_for, colo_alive=self.colo_alive(), maintenance=self.maintenance,
            peer_role=peer.role if peer is not None else None, peer_state=peer.state if peer is not None else None,
            peer_epoch=peer.epoch if peer is not None else None, lease=lease,
            lease_lost_for=None if self._lease_lost_at is None else boottime() - self._lease_lost_at,
            replication_late_for=self.replication_late_for(),
            replica_unresponsive=self._unresponsive_at is not None and self._unresponsive_at == self._checkpoint_mark(),
            local_disk_failing=self.events.local_disk_error is not None,
            replica_disk_failing=self.events.replica_disk_error is not None)

    def replication_late_for(self, now: float | None = None) -> float:
        """In COLO, seconds past the checkpoint window (observe.colo_window) with no checkpoint since the
        later of the last one and entering COLO; 0 outside COLO or while checkpoints come in time."""
        if self._colo_since is None or self.sm.state not in (FtState.PROTECTED, FtState.DEGRADED):
            return 0.0
        if self.health.busy_since is not None:   # a long checkpoint under way: its bytes are moving
            return 0.0
        now = time.monotonic() if now is None else now
        return max(0.0, now - self._checkpoints_since() - colo_window(self.cfg.checkpoint_ms))

    def _witness_for_policy(self) -> WitnessView:
        held = self.witness.held
        if held is not None:  # we own it: our keep-alive is the freshest evidence
            return WitnessView(reachable=bool(self.witness.reachable), owner=held.node, epoch=held.epoch, alive=True)
        return self.witness_view

    # ---- deciding and acting ------------------------------------------------------------
    async def _decide_loop(self) -> None:
        while True:
            # with the heartbeats' rounds (one wake-up for both), or at once when a watcher found
            # something to act on (_woken)
            await sleep_to_grid(TICK_S, until=self._woken)
            self._woken.clear()
            try:
                await self.tick()
            except CoserverError as exc:  # the world's fault (a peer, QMP, a disk): next tick tries again
                _log.error("controller.tick.failed", host=self.cfg.host, reason=str(exc))
            # a CoserverBug (or anything else) ends this task, and _task_done stops the controller

    async def tick(self) -> None:
        async with self._acting:
            await self._read_last_words()
            self._follow_guest_power_off()
            if not self.desired.run:  # server stop: shut down, never fail over
                await self._stopping_step()
                self._publish()
                if self._journal_due():
                    self._save_journal("periodic")
                return
            obs = self.observe()
            if obs.pair_well:
                self._well_at = time.monotonic()
            await self._announce_if_peer_returned(obs)
            if self._in_grace(obs) or self._awaiting_own_power_off(obs):
                return
            decision = decide(obs, self.thresholds)
            if decision.claim_epoch is not None:
                decision = await self._claim(obs, decision)
            self._note(decision)
            await self.act(decision)
            if decision.action in (Action.NONE, Action.ALERT, Action.DEGRADED_ALERT):
                await self.nudge_checkpoint()
                self._start_step()
                await self._rejoin_step()
            if self.attempts.tick(time.monotonic()):
                _log.info("controller.protection.held", host=self.cfg.host, ftserver=self.cfg.ftserver)
            self._publish()
            if self._journal_due():
                self._save_journal("periodic" if self.journal_error is None else "retry after a failed save")

    async def _read_last_words(self) -> None:
        """A QEMU that exits writes its last events just before (SHUTDOWN: the guest powered itself
        off, or the host ended it); its exit can wake this loop before the event task has read them.
        Why it is gone decides what follows (a planned stop on both hosts, or a failover), so read them
        first: until its QMP connection ends (at most 0.2 s), then let the event task run."""
        qmp, proc = self.qmp, self.qemu
        if qmp is None or proc is None or self._qemu_alive() or not qmp.connected:
            return
        await qmp.wait_lost(LAST_WORDS_S)
        for _ in range(3):
            await asyncio.sleep(0)

    async def nudge_checkpoint(self, now: float | None = None) -> bool:
        """Primary in COLO with a checkpoint period above MAX_CHECKPOINT_GAP_S: ask QEMU for a checkpoint
        when none came for that long (QEMU checkpoints at once whenever x-checkpoint-delay is set, even to
        the same value). A quiet guest with a 10-minute period would otherwise give neither side any proof
        for minutes that the other's QEMU lives: a host loss would wait 1.5 periods to be acted on.
        Returns whether it asked."""
        if (self.role != Role.PRIMARY or self.qmp is None or self._colo_since is None
                or self.sm.state not in (FtState.PROTECTED, FtState.DEGRADED)
                or self.cfg.checkpoint_ms <= 1000 * MAX_CHECKPOINT_GAP_S):
            return False
        now = time.monotonic() if now is None else now
        if now - max(self.events.last_checkpoint or 0.0, self._colo_since, self._nudged_at) < MAX_CHECKPOINT_GAP_S:
            return False
        self._nudged_at = now
        try:
            await self.qmp.execute("migrate-set-parameters", {"x-checkpoint-delay": self.cfg.checkpoint_ms})
        except CoserverError as exc:   # the health loop and the policy judge the QEMU; this is only a nudge
            _log.warning("controller.checkpoint.nudge.failed", host=self.cfg.host, reason=str(exc))
        return True

    def _outside_pause_possible(self) -> bool:
        """In COLO with no protection of ours under way: our own steps stop the guest too (the switch
        into COLO), and a simplex guest may stay paused (nothing resumes it behind libvirt's back)."""
        return (self.qmp is not None and self.role in (Role.PRIMARY, Role.SECONDARY)
                and self.sm.state in (FtState.PROTECTED, FtState.DEGRADED)
                and (self.busy is None or self.busy.done()))

    async def _refuse_outside_pause(self, stopped_since: float) -> None:
        """QEMU reported STOP: a checkpoint, or a pause someone else asked for (virsh suspend), which
        is undone at once (outsidepause). Asked the moment the STOP arrives: COLO's next checkpoint
        would resume the guest unseen, and within one period it always comes."""
        if not self._outside_pause_possible() or self.events.stopped_since != stopped_since:
            return
        qmp = self.qmp
        assert qmp is not None
        try:
            if await self.outside_pause.is_paused(qmp, deadline=self.cfg.qmp_deadline_s):
                async with self._acting:    # never between two steps of a decision of ours
                    if self._outside_pause_possible() and self.qmp is qmp:
                        await self.outside_pause.resume(qmp, stopped_since, host=self.cfg.host,
                                                        ftserver=self.cfg.ftserver, role=self.role.value,
                                                        deadline=self.cfg.qmp_deadline_s)
        except CoserverError as exc:   # the health loop judges the QEMU; this only undoes a pause
            _log.warning("controller.pause.check.failed", host=self.cfg.host, reason=str(exc))

    def _follow_guest_power_off(self) -> None:
        """A guest that powers itself off stops its FT server on both hosts, as `server stop` does: a
        server's own shutdown is its wish, never a fault to fail over from or restart after.

        The side running the guest (primary, simplex) learns it from its QEMU's SHUTDOWN event and
        says so in its heartbeats (guest_off = its epoch); the other side follows when it hears that at
        an epoch >= its own (a peer that powered off in an older epoch lost the guest to us since).
        Until the peer has followed, the primary keeps its lease (_stopping_step), so a secondary that
        saw COLO end first cannot win a claim and bring the guest back."""
        if not self.desired.run:
            return
        if self.events.guest_shutdown is not None and self.role in (Role.PRIMARY, Role.SIMPLEX):
            self.guest_off_epoch = self.epoch
            self._ask(run=False, why=f"{GUEST_OFF_WHY} on {self.cfg.host} (epoch {self.epoch})")
            return
        if self.events.guest_shutdown is not None and self.role == Role.SECONDARY and not self.replica_off_epoch:
            self.replica_off_epoch = self.epoch   # the primary waits for its own (_awaiting_own_power_off)
        peer = self._peer_heard_state()
        if (peer is not None and peer.guest_off and peer.guest_off >= self.epoch
                and peer.guest_off > self.guest_off_ignored and self.role in (Role.SECONDARY, Role.NONE)):
            self._ask(run=False, why=f"{GUEST_OFF_WHY} on {peer.node} (epoch {peer.guest_off})")

    async def _announce_if_peer_returned(self, obs: Observation) -> None:
        """We run the guest alone and the peer, silent until now, is heard again (a host resumed
        from a freeze, a power-on): its old QEMU, back for the instant before it stands down, may
        have sent a frame with the guest's MAC and pointed the LAN switch at its port. The guest
        announces itself again (what the failover did), so clients' packets come here, not there."""
        returned = obs.peer_heard and not self._peer_was_heard
        self._peer_was_heard = obs.peer_heard
        # ... and once that QEMU is gone for good (the peer reports it dead or stood down), once more:
        # whatever it sent before it stopped, nothing of it can come after this announcement.
        peer_qemu_running = obs.peer_heard and obs.peer_qemu in (QemuHealth.ALIVE, QemuHealth.HUNG)
        stopped = obs.peer_heard and self._peer_qemu_was_running and not peer_qemu_running
        if obs.peer_heard:
            self._peer_qemu_was_running = peer_qemu_running
        if ((returned or stopped) and self.role == Role.SIMPLEX and self.qmp is not None
                and obs.qemu == QemuHealth.ALIVE):
            try:
                await self.qmp.execute("announce-self", ANNOUNCE_AGAIN)
                _log.info("controller.announce", host=self.cfg.host,
                          why="peer heard again" if returned else "the peer's QEMU stopped")
            except QmpError as exc:
                _log.warning("controller.announce.failed", host=self.cfg.host, reason=str(exc))

    def _awaiting_own_power_off(self, obs: Observation) -> bool:
        """The secondary's copy of the guest powered itself off first (it runs ahead between
        checkpoints): ours runs the same code on the same input and is about to. Dropping the replica
        now would be a takeover nobody needs, so a primary with a live QEMU waits up to GUEST_OFF_HOLD_S
        for its own SHUTDOWN (colo-compare holds the guest's output meanwhile); then it decides as usual."""
        peer = self.heartbeats.peer_state() if obs.peer_heard else None
        if (self.role != Role.PRIMARY or obs.qemu != QemuHealth.ALIVE or peer is None
                or not (peer.replica_off and peer.replica_off >= self.epoch)):
            self.peer_guest_off_since = None
            return False
        since = self.peer_guest_off_since = self.peer_guest_off_since or time.monotonic()
        return time.monotonic() - since < GUEST_OFF_HOLD_S

    def _in_grace(self, obs: Observation) -> bool:
        """Just (re)started and no heartbeat yet: silence means 'not heard yet', not 'lost'.

        Lasts one heartbeat timeout; a dead or hung local QEMU is acted on at once anyway."""
        young = boottime() - self._started_boot < self.cfg.heartbeat_timeout_s * 1.5
        never_heard = all(self.heartbeats.last_heard(ln["name"]) is None for ln in self.cfg.links)
        return young and never_heard and obs.qemu in (QemuHealth.ALIVE, QemuHealth.NONE)

    async def _claim(self, obs: Observation, decision: Decision) -> Decision:
        if decision.claim_epoch is None:
            raise CoserverBug(f"claim asked for by {decision.action} without an epoch")
        owner_view = None
        try:
            res = await self.witness.claim(self.cfg.host, decision.claim_epoch)
            outcome = ClaimOutcome.GRANTED if res.granted else ClaimOutcome.DENIED
            if res.owner is not None:
                owner_view = WitnessView(True, res.owner.node, res.owner.epoch, res.owner.alive)
        except WitnessUnreachable:
            outcome = ClaimOutcome.UNREACHABLE
        except WitnessError as exc:
            _log.error("controller.claim.error", host=self.cfg.host, reason=str(exc))
            outcome = ClaimOutcome.UNREACHABLE
        final = after_claim(obs, decision, outcome, owner_view, self.thresholds)
        if outcome == ClaimOutcome.GRANTED:
            self.epoch = decision.claim_epoch
            self._witness_changed(WitnessView(True, self.cfg.host, self.epoch, True))
        elif owner_view is not None:
            self._witness_changed(owner_view)
        if outcome != ClaimOutcome.GRANTED and final.action == Action.NONE:
            # to be retried (the owner's lease may lapse at etcd's next expiry check): sooner than the
            # idle tick, as every 0.1 s of a failover counts for the clients
            asyncio.get_running_loop().call_later(CLAIM_RETRY_S, self._woken.set)
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
            await self._take_over(Secondary, d.reason, wait=d.wait)
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
            if all(self.heartbeats.links_alive().values()):
                self._to(FtState.PROTECTED, "all sync links heard again")

    async def _take_over(self, side: type[Primary] | type[Secondary], reason: str, wait: float = 0.0) -> None:
        """Fail over on this host: the secondary promotes, or the primary drops its replica.

        wait: after the grant, before running alone (policy.promote_wait). FAILING_OVER is published
        first, so a peer that hears us at our new epoch stands down at once; the sleep is on the loop's
        monotonic clock, which a suspend only lengthens."""
        if self.qmp is None:
            raise CoserverBug(f"{self.cfg.host}: failover decided with no QMP session")
        decided = time.monotonic()
        detection = decided - self._well_at if self._well_at is not None else None
        self._to(FtState.FAILING_OVER, reason)
        if wait > 0:
            _log.warning("controller.promote.wait", host=self.cfg.host, epoch=self.epoch, wait_s=wait)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + wait
            while loop.time() < deadline:   # the old primary's own word that its QEMU is dead ends it
                if self.observe().peer_reports_dead:
                    _log.info("controller.promote.wait.ended", host=self.cfg.host,
                              after_s=round(wait - (deadline - loop.time()), 3), why="peer reports its QEMU dead")
                    break
                await asyncio.sleep(PROMOTE_POLL_S)
        took = await actions.fail_over(side, self.qmp, self.cfg, self.settings)
        self.metrics.failed_over("promote" if side is Secondary else "continue_simplex",
                                 promotion_s=time.monotonic() - decided, detection_s=detection)
        self.role = Role.SIMPLEX
        self.events.forget_colo()
        self._to(FtState.SIMPLEX, f"failover done in {1000 * took:.0f} ms: {reason}")

    async def _stop_local(self, reason: str, *, release: bool, to: FtState) -> None:
        """End the local guest side (kill -9: a fenced side must stop now, not cleanly later)."""
        if self.qemu is not None and self.qemu.alive():
            self._killed_local = True   # our own kill: not a crash of the guest side (AttemptLog)
            self.qemu.kill()
        self.role = Role.NONE
        if release:
            await self._release_witness()
        if self.sm.state != to:
            if not self.sm.can(to):
                to = FtState.FENCED if self.sm.can(FtState.FENCED) else FtState.STOPPED
            self._to(to, reason)

    def _to(self, state: FtState, reason: str) -> None:
        if self.sm.state == state:
            return
        in_colo = (FtState.PROTECTED, FtState.DEGRADED)
        if state in in_colo and self.sm.state not in in_colo:
            self._colo_since = time.monotonic()
        elif state not in in_colo:
            self._colo_since = None
        transition = self.sm.to(state, reason)
        self.alert_hook.transition(transition)
        self.metrics.entered(state.value)
        if self.attempts.on_state(state, time.monotonic()):
            if self._fresh_secondary_died():
                self._attempt_failed(self._attempt_failure(reason))
            else:
                self.attempts.close()
        self._save_journal(reason)
        self._publish()

    def _retag_domain(self) -> None:
        """libvirt backend: the domain's <metadata> names the copy's role and epoch as they are now,
        checked at each publish (a role may change after its state's transition); written in the
        background only when they changed (libvirt calls block: a slow libvirtd must not hold us)."""
        proc = self.qemu
        key = (self.role.value, self.epoch)
        if not isinstance(proc, LibvirtQemu) or self.role == Role.NONE or key == self._domain_tag:
            return
        self._domain_tag = key

        async def retag() -> None:
            try:
                await asyncio.wait_for(asyncio.to_thread(proc.retag, self.cfg.witness["site"], *key), 5.0)
            except (CoserverError, TimeoutError) as exc:   # tried again at the next change, not every tick
                _log.warning("controller.libvirt.retag.failed", host=self.cfg.host, reason=str(exc) or "timeout")

        self._spawn(retag(), "retag")

    def _publish(self) -> None:
        qemu, _ = self.qemu_health()
        state = "maintenance" if self.role == Role.NONE and self.maintenance else self.sm.state.value
        self.heartbeats.update_local(epoch=self.epoch, role=self.role.value, state=state,
                                     qemu=qemu.value, checkpoints=self.events.checkpoints,
                                     guest_off=self.guest_off_epoch, replica_off=self.replica_off_epoch)
        self.metrics.update(self._metrics_snapshot())
        self._retag_domain()

    def _metrics_snapshot(self) -> Snapshot:
        """What a scrape shows, taken now without awaiting anything (metrics reads only this)."""
        sync = self.sync if self.sync is not None and not self.sync.get("finished") else None
        held = self.witness.held
        reachable = bool(self.witness.reachable) if held is not None else self.witness_view.reachable
        return Snapshot(state=self.sm.state.value, role=self.role.value, epoch=self.epoch,
                        checkpoints=self.events.checkpoints, links=dict(self.heartbeats.links_alive()),
                        witness_reachable=reachable, lease_left_s=self.witness.lease_left(),
                        wants_run=self.desired.run, link_rtt=self.heartbeats.rtts(),
                        resync_done=sync["done_bytes"] if sync else None,
                        resync_total=sync["total_bytes"] if sync else None)

    def _journal_due(self) -> bool:
        every = JOURNAL_EVERY_S if self.journal_error is None else JOURNAL_RETRY_S
        return time.monotonic() - self._last_journal > every

    def _save_journal(self, reason: str) -> bool:
        """Journal what is in memory now; never raises. A save that fails (a full disk) leaves the
        controller running from memory, with an alert, and the next tick tries again (JOURNAL_RETRY_S):
        the state change it follows has happened and stays (no step is redone, no epoch bumped twice)."""
        self._last_journal = time.monotonic()
        try:
            self.journal.save(JournalEntry(ftserver=self.cfg.ftserver, node=self.cfg.host, role=self.role,
                                           epoch=self.epoch, state=self.sm.state,
                                           checkpoints=self.events.checkpoints, qemu_name=self.cfg.qemu_name,
                                           qemu_workdir=self.cfg.qemu_workdir, reason=reason[:200]))
        except JournalError as exc:
            if self.journal_error is None:
                self.journal_unsaved_since = time.time()
                _log.error("controller.journal.unsaved", host=self.cfg.host, reason=str(exc),
                           state=self.sm.state.value, epoch=self.epoch, note="running from memory")
            self.journal_error = str(exc)
            return False
        if self.journal_error is not None:
            _log.warning("controller.journal.saved.again", host=self.cfg.host, state=self.sm.state.value,
                         epoch=self.epoch, unsaved_since=self.journal_unsaved_since)
            self.journal_error = self.journal_unsaved_since = None
        return True

    def _save_desired(self) -> None:
        """The operator's wish, on disk; a full disk keeps it in memory (an alert) until the next save."""
        try:
            self.desired.save(self.cfg.desired_file)
        except OSError as exc:
            if self.desired_error is None:
                _log.error("controller.desired.unsaved", host=self.cfg.host, reason=str(exc),
                           run=self.desired.run, note="kept in memory")
            self.desired_error = f"{self.cfg.desired_file}: {exc.strerror or exc}"
            return
        self.desired_error = None

    def alerts(self) -> list[str]:
        """Alert-level conditions of this controller itself (not of the pair): its disk, its log."""
        out = []
        if self.journal_error is not None:
            out.append(f"journal cannot be saved: {self.journal_error}; running from memory")
        if self.desired_error is not None:
            out.append(f"the operator's wish (server start/stop) cannot be saved: {self.desired_error}; "
                       "kept in memory")
        log_alert = log.alert()
        if log_alert is not None:
            out.append(log_alert)
        return out

    # ---- the FT server's life: start, stop -------------------------------------------------
    def _start_view(self) -> StartView:
        peer = self._peer_heard_state()
        w = self.witness_view
        return StartView(host=self.cfg.host, preferred=self.cfg.preferred, run=self.desired.run, role=self.role,
                         state=self.sm.state, maintenance=self.maintenance,
                         busy=self.busy is not None and not self.busy.done(), witness_reachable=w.reachable,
                         owner_alive=w.alive, last_owner=w.owner, peer_heard=peer is not None,
                         peer_role=peer.role if peer else None)

    def _start_step(self) -> None:
        if self.role != Role.NONE:
            return
        move, why = start_move(self._start_view())
        self.start_note = why
        if move == StartMove.START_SIMPLEX:
            self.busy = self._spawn(self._start_simplex(why), "start")

    async def _start_simplex(self, why: str) -> None:
        """Start the guest alone here, with the witness's grant for a new epoch; the peer then joins."""
        self.last_attempt = time.monotonic()
        try:
            if self.sm.state == FtState.STOPPED:
                self._to(FtState.STARTING, why)
            epoch = max(self.epoch, self.witness_view.epoch or 0) + 1
            res = await self.witness.claim(self.cfg.host, epoch)
            if not res.granted:
                self._to(FtState.STOPPED, f"not started: the witness denied epoch {epoch}: {res.reason}")
                return
            self.epoch = epoch
            self._witness_changed(WitnessView(True, self.cfg.host, epoch, True))
            self.qemu = await asyncio.to_thread(actions.start_simplex, self.cfg, epoch)
            await self._open_qmp(drop_old_first=True)
            self.role = Role.SIMPLEX
            self.health = QmpHealth()
            self.replica_off_epoch = 0
            self.events.new_qemu()
            self.guest_started_at = time.monotonic()
            self._to(FtState.SIMPLEX, f"guest started alone in epoch {epoch}; {self.cfg.peer} joins as its secondary")
        except (CoserverError, OSError) as exc:
            _log.error("controller.start.failed", host=self.cfg.host, reason=str(exc))
            if self.qemu is not None and self.qemu.alive():
                self.qemu.kill()
            self.role = Role.NONE
            await self._release_witness()
            if self.sm.state != FtState.STOPPED and self.sm.can(FtState.STOPPED):
                self._to(FtState.STOPPED, f"start failed: {exc}")

    async def _release_witness(self) -> None:
        """Give up the witness's lease now (the epoch record stays), so the peer need not wait out the TTL;
        if the witness does not confirm, the lease lapses by itself."""
        if not self.witness.held:
            return
        try:
            await self.witness.release()
            self._witness_changed(WitnessView(True, None, None, False))
        except WitnessError as exc:
            _log.warning("controller.witness.release.failed", host=self.cfg.host, reason=str(exc))

    async def _stopping_step(self) -> None:
        """`server stop`: the side running the guest presses the power button and waits (then quits);
        a secondary stops once the guest is gone from its peer. No failover happens meanwhile."""
        if self.busy is not None and not self.busy.done():
            return
        alive = self.qemu is not None and self.qemu.alive()
        if self.role in (Role.PRIMARY, Role.SIMPLEX):
            if alive and self.powering_down_since is None:
                if self.sm.can(FtState.STOPPING):
                    self._to(FtState.STOPPING, f"server stop: ACPI power button ({self.desired.why})")
                try:
                    if self.qmp is not None:
                        await self.qmp.execute("system_powerdown", deadline=self.cfg.qmp_deadline_s)
                except QmpError as exc:
                    _log.warning("controller.stop.powerdown.failed", host=self.cfg.host, reason=str(exc))
                self.powering_down_since = time.monotonic()
                return
            if alive and time.monotonic() - (self.powering_down_since or 0) < self.cfg.stop_timeout_s:
                return
            if not alive and self.guest_off_epoch and self._peer_runs_a_side():
                since = self.guest_off_hold_since = self.guest_off_hold_since or time.monotonic()
                if time.monotonic() - since < GUEST_OFF_HOLD_S:
                    return   # keep the lease until the secondary has heard that the guest is off
            await self._stopped_here(f"guest powered off ({self.desired.why})" if not alive else
                                     f"guest still running {self.cfg.stop_timeout_s:g} s after the power button: "
                                     "QEMU stopped")
        elif self.role == Role.SECONDARY:
            peer = self._peer_heard_state()
            if alive and peer is not None and peer.qemu == QemuHealth.ALIVE.value and peer.role != Role.NONE.value:
                if self.sm.can(FtState.STOPPING) and self.sm.state != FtState.STOPPING:
                    self._to(FtState.STOPPING, "server stop: waiting for the primary's guest to power off")
                return
            await self._stopped_here("the primary's guest is gone: secondary stopped")
        elif self.sm.state not in (FtState.STOPPED, FtState.FENCED) and self.sm.can(FtState.STOPPED):
            self._to(FtState.STOPPED, f"server stop ({self.desired.why})")

    def _peer_heard_state(self) -> Heartbeat | None:
        """The peer's latest heartbeat while it is heard on some link (None when silent)."""
        return self.heartbeats.peer_state() if self.heartbeats.peer_alive() else None

    def _peer_runs_a_side(self) -> bool:
        peer = self._peer_heard_state()
        return (peer is not None and peer.role != Role.NONE.value and peer.qemu == QemuHealth.ALIVE.value
                and peer.state not in (FtState.STOPPING.value, FtState.STOPPED.value))

    async def _stopped_here(self, reason: str) -> None:
        if self.qemu is not None and self.qemu.alive():
            await asyncio.to_thread(self.qemu.stop, 5.0)
        await self._close_qmp(self.qmp, self.listener)
        self.qmp = self.listener = None
        self.role = Role.NONE
        self.powering_down_since = None
        self.guest_started_at = None
        await self._release_witness()   # the epoch record stays: this host ran the guest last
        if self.sm.state != FtState.STOPPING and self.sm.can(FtState.STOPPING):
            self._to(FtState.STOPPING, reason)
        if self.sm.can(FtState.STOPPED):
            self._to(FtState.STOPPED, f"stopped: {reason}")

    def _ask(self, *, run: bool | None = None, enabled: bool | None = None, why: str) -> dict[str, Any]:
        self.desired = self.desired.asked(run=run, enabled=enabled, why=why)
        self._save_desired()
        _log.info("controller.desired", host=self.cfg.host, run=self.desired.run, enabled=self.desired.enabled,
                  why=why)
        return {"ok": True, "host": self.cfg.host, "run": self.desired.run, "enabled": self.desired.enabled,
                "role": self.role.value, "state": self.sm.state.value}

    async def _start_requested(self, why: str) -> dict[str, Any]:
        async with self._acting:
            if self.sm.state == FtState.FENCED:   # an operator's start clears a fence (never revives a guest)
                self._to(FtState.STOPPED, "fence cleared by `server start`")
            self.rejoin_requested = True          # the other side joins even under reprotect=manual
            self.guest_off_epoch = self.replica_off_epoch = 0
            self.guest_off_hold_since = None
            peer = self.heartbeats.peer_state()   # a power-off it still reports is the one this start ends
            self.guest_off_ignored = max(self.epoch, peer.guest_off if peer is not None else 0)
            self.attempts = AttemptLog()
            self.last_attempt = -math.inf
            return self._ask(run=True, why=why)

    # ---- re-protection --------------------------------------------------------------------
    def _fresh_secondary_died(self) -> bool:
        """The attempt ended because the secondary this side started died by itself (not our kill)."""
        return (self.attempts.kind == "secondary" and self.qemu is not None and not self.qemu.alive()
                and not self._killed_local)

    def _attempt_failed(self, reason: str) -> None:
        self.attempts.failed(reason)
        _log.error("controller.protection.attempt.failed", host=self.cfg.host, failures=self.attempts.failures,
                   reason=reason)

    def _attempt_failure(self, reason: str) -> str:
        """Why a (re-)protection attempt failed: our QEMU's last words if it died, else the reason given."""
        if self.qemu is not None and not self.qemu.alive():
            words = last_words(self.qemu.log_path)
            if words:
                return f"{self.cfg.host}'s QEMU exited: {words}"
        return reason

    def _rejoin_view(self) -> RejoinView:
        peer = self._peer_heard_state()
        return RejoinView(
            role=self.role, state=self.sm.state, epoch=self.epoch, policy=ReprotectPolicy(self.cfg.reprotect),
            maintenance=self.maintenance, requested=self.rejoin_requested,
            since_last_attempt_s=time.monotonic() - self.last_attempt, peer_heard=peer is not None,
            peer_role=peer.role if peer else None, peer_state=peer.state if peer else None,
            peer_epoch=peer.epoch if peer else None, peer_maintenance=bool(peer and peer.state == "maintenance"),
            busy=self.busy is not None and not self.busy.done(), failures=self.attempts.failures,
            last_failure=self.attempts.last_reason, refusal=self._peer_refusal(), lease=self._holds_lease())

    def _holds_lease(self) -> bool:
        held = self.witness.held
        return held is not None and held.epoch == self.epoch and self.witness.lease_left() > 0

    def _peer_refusal(self) -> str | None:
        """Why not to protect with the peer: its key, site file or QEMU differs (peercheck)."""
        return peercheck.refusal(self.heartbeats, host=self.cfg.host, peer=self.cfg.peer, key_file=self.cfg.key_file)

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
            self.busy = self._spawn(self._start_secondary(why), "rejoin")
        elif move == Move.PROTECT:
            booting = (time.monotonic() - self.guest_started_at) if self.guest_started_at is not None else None
            if booting is not None and booting < self.cfg.boot_grace_s:
                self.rejoin_note = (f"the guest started {booting:.0f} s ago: protecting it once it has booted "
                                    f"({self.cfg.boot_grace_s:g} s)")
                return
            self.busy = self._spawn(self._protect(why), "protect")

    async def _start_secondary(self, why: str) -> None:
        """Rejoin: start a new secondary QEMU here and wait for the survivor to sync it."""
        self.last_attempt = time.monotonic()
        self.rejoin_requested = False
        peer = self.heartbeats.peer_state()
        try:
            if self.sm.state == FtState.FENCED:
                self._to(FtState.STOPPED, "fence cleared to rejoin as a secondary (never as a primary)")
            self._to(FtState.STARTING, why)
            self.attempts.start("secondary")
            if self.qemu is not None and self.qemu.alive():
                self.qemu.kill()
            self.qemu = await asyncio.to_thread(actions.start_secondary, self.cfg,
                                                max(self.epoch, peer.epoch if peer else 0))
            self._killed_local = False
            qmp = await self._open_qmp(drop_old_first=True)  # the old session leads to a QEMU that is gone
            await Secondary(qmp, self.cfg.colo_node(), self.settings).prepare(self.cfg.sync_ports)
            self.role = Role.SECONDARY
            self.epoch = max(self.epoch, peer.epoch if peer else 0)
            self.health = QmpHealth()
            self.replica_off_epoch = 0
            self.events.new_qemu()
            self._to(FtState.SYNCING, "secondary ready: waiting for the survivor's sync")
        except (CoserverError, OSError) as exc:
            _log.error("controller.rejoin.failed", host=self.cfg.host, reason=str(exc))
            if self.attempts.open:
                self._attempt_failed(self._attempt_failure(f"rejoin failed: {exc}"))
            if self.qemu is not None and self.qemu.alive():
                self.qemu.kill()
            self.role = Role.NONE
            if self.sm.state != FtState.STOPPED and self.sm.can(FtState.STOPPED):
                self._to(FtState.STOPPED, f"rejoin failed, will retry: {exc}")

    def _on_sync(self, p: SyncProgress) -> None:
        now = time.monotonic()
        started = self.sync["started"] if self.sync else now
        elapsed = now - started
        rate = p.done / elapsed if elapsed >= 0.5 else None  # too early for a meaningful rate
        self.sync = {"started": started, "percent": round(p.percent, 1), "done_bytes": p.done,
                     "total_bytes": p.total, "rate_mib_s": round(rate / 2**20, 1) if rate else None,
                     "eta_s": round((p.total - p.done) / rate, 1) if rate and not p.ready else None,
                     "in_step": p.ready}

    def _overtaken(self, task: str) -> bool:
        """A decision taken while a protection ran (it runs beside the ticks) moved this side on: a
        stand-down or a fence left SYNCING and stopped our QEMU. Its outcome then changes nothing."""
        if self.sm.state == FtState.SYNCING:
            return False
        _log.warning("controller.task.overtaken", host=self.cfg.host, task=task, state=self.sm.state.value,
                     role=self.role.value)
        return True

    async def _protect(self, why: str) -> None:
        """The survivor: sync the peer's new secondary and enter COLO; stay simplex if it fails."""
        self.last_attempt = time.monotonic()
        self.attempts.start("protect")
        self.sync = None
        self._to(FtState.SYNCING, why)
        if self.qmp is None:
            raise CoserverBug(f"{self.cfg.host}: protect decided with no QMP session")
        try:
            await Primary(self.qmp, self.cfg.colo_node(), self.settings).protect(
                self.cfg.peer_repl_addr, self.cfg.sync_ports, self._on_sync)
            if self._overtaken("protect"):
                return
            self.role = Role.PRIMARY
            self.events.forget_colo()
            self.events.last_checkpoint = time.monotonic()
            self._to(FtState.PROTECTED, f"protected again with {self.cfg.peer} as the secondary")
        except (CoserverError, OSError) as exc:
            _log.error("controller.protect.failed", host=self.cfg.host, reason=str(exc))
            self._attempt_failed(f"protection of {self.cfg.peer}'s secondary failed: {exc}")
            if self._overtaken("protect"):
                return
            self.role = Role.SIMPLEX
            self._to(FtState.SIMPLEX, f"re-protection failed, still simplex (retrying later): {exc}")
        finally:
            if self.sync is not None:
                self.sync["finished"] = True

    # ---- control socket -----------------------------------------------------------------
    async def status(self) -> dict[str, Any]:
        qemu, hung_for = self.qemu_health()
        hb = self.heartbeats
        peer = hb.peer_state()
        last = self.events.last_checkpoint
        out: dict[str, Any] = {
            "host": self.cfg.host, "ftserver": self.cfg.ftserver, "role": self.role.value,
            "state": self.sm.state.value, "epoch": self.epoch,
            "qemu_pid": self.qemu.pid if self.qemu else None, "qemu_alive": bool(self.qemu and self.qemu.alive()),
            "qemu_health": qemu.value, "controller_pid": os.getpid(), "since": self.started_at,
            "checkpoints": self.events.checkpoints,
            "last_checkpoint_age_s": round(time.monotonic() - last, 2) if last else None,
            "checkpoint_pause_ms": self.events.pause_median_ms(),
            "colo_exit": self.events.colo_exit, "quorum_bad": self.events.quorum_bad,
            "io_errors": self.events.io_errors,
            "disk_errors": {"local": self.events.local_disk_error, "replica": self.events.replica_disk_error},
            "qmp": asdict(self.health),
            "links": hb.links_alive(),
            "link_rtt_ms": {name: round(1000 * rtt, 2) if rtt is not None else None for name, rtt in hb.rtts().items()},
            "identity": {"site": hb.local.site, "qemu_version": hb.local.qemu_version,
                         "auth_failing": hb.auth_failing()},   # peercheck: what the peer must match
            "peer": {"role": peer.role, "state": peer.state, "qemu": peer.qemu, "epoch": peer.epoch,
                     "site": peer.site, "qemu_version": peer.qemu_version}
            if peer else None,
            "witness": asdict(self.witness_view) | {"held": self.witness.held is not None},
            "history": [t.as_json() for t in self.sm.history],  # {at, from, to, reason}, as the tests read it
            "decisions": list(self.decisions),
            "qemu_released": self.qemu_released,
            "pause_refused": self.outside_pause.as_json(),
            "reprotect": {"policy": self.cfg.reprotect, "maintenance": self.maintenance,
                          "busy": bool(self.busy and not self.busy.done()), "note": self.rejoin_note,
                          "failed_attempts": self.attempts.failures, "last_failure": self.attempts.last_reason,
                          "alert": self._peer_refusal() or self.attempts.alert()},
            "sync": self.sync,
            "desired": {"run": self.desired.run, "enabled": self.desired.enabled, "why": self.desired.why,
                        "since": self.desired.since},
            "start_note": self.start_note,
            "alerts": self.alerts(),
            "log": log.health(),
            "journal": {"path": str(self.journal.path), "saved": self.journal_error is None,
                        "error": self.journal_error, "unsaved_since": self.journal_unsaved_since},
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
        plain: dict[str, Any] = json.loads(json.dumps(out, default=str))  # what the socket will send
        return plain

    async def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        """One control-socket request (control.Command); a bug met here stops the controller too."""
        try:
            return await self._handle(request)
        except CoserverBug as exc:
            self._fail(exc, f"control {request.get('cmd')!r}")
            return {"ok": False, "error": f"controller bug, restarting: {exc}"}

    async def _handle(self, request: dict[str, Any]) -> dict[str, Any]:
        cmd = request.get("cmd")
        if cmd == Command.STATUS:
            return {"ok": True, "status": await self.status()}
        if cmd == Command.RELINQUISH:
            return await self._relinquish(str(request.get("reason", "operator request")))
        if cmd == Command.REJOIN:
            self.rejoin_requested = True
            self.attempts = AttemptLog()   # an operator's request: a fresh count
            self.last_attempt = -math.inf
            return {"ok": True, "host": self.cfg.host, "role": self.role.value}
        if cmd == Command.MAINTENANCE:
            return await self._maintenance(bool(request.get("on")))
        if cmd == Command.START:
            return await self._start_requested(str(request.get("reason", "server start")))
        if cmd == Command.STOP:
            return self._ask(run=False, why=str(request.get("reason", "server stop")))
        if cmd == Command.ENABLE:
            return self._ask(enabled=bool(request.get("on", True)), why="server enable" if request.get(
                "on", True) else "server disable")
        if cmd == Command.QEMU_RELEASED:
            return self._qemu_released(request)
        return {"ok": False, "error": f"unknown command {cmd!r}"}

    def _qemu_released(self, request: dict[str, Any]) -> dict[str, Any]:
        """libvirt's hook: the QEMU of this FT server's domain is gone (the libvirt backend's word).

        Logged and recorded (status: qemu_released) only. A pidfd on the QEMU wakes the decide loop
        the moment it ends (_watch_exit) and observe() finds it dead by itself, so nothing is gained
        by acting on the hook's word, which comes from whoever can write the 0600 socket and may
        arrive after the fact."""
        name = request.get("name")
        if name != self.cfg.ftserver:
            return {"ok": False, "error": f"this controller serves {self.cfg.ftserver!r}, not {clip(str(name), quote=repr)}"}
        self.qemu_released = {"at": time.time(), "reason": clip(str(request.get("reason", "")), 200),
                              "domain": clip(str(request.get("domain", name)), 80), "role": request.get("role"),
                              "epoch": request.get("epoch")}
        _log.warning("controller.qemu.released", host=self.cfg.host, ftserver=self.cfg.ftserver,
                     reason=self.qemu_released["reason"], role=self.role.value,
                     qemu_alive=bool(self.qemu and self.qemu.alive()))
        return {"ok": True, "host": self.cfg.host}

    async def _maintenance(self, on: bool) -> dict[str, Any]:
        """Take this CoServer out on purpose (its secondary stops quietly), or bring it back."""
        async with self._acting:
            if not on:
                self.cfg.maintenance_flag.unlink(missing_ok=True)
                self.maintenance = False
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
            self.maintenance = True
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
        peer = self._peer_heard_state()
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


async def _main(cfg: ControllerConfig, key: bytes | KeyRing | None = None) -> None:
    controller = HostController.from_config(cfg, key=key)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, controller.stop)
    await controller.run()


def site_config(site_file: Path | None, server: str, host: str | None = None) -> ControllerConfig:
    """The controller of `server` on this host, from the site file and the server's spec."""
    site = load_site(site_file)
    me = this_host(site, host)
    spec = find_server(site, server)
    return controller_config_for(site, spec, me, servers=spec_names(site))


#: This host's interfaces (inside a network namespace: that namespace's, as `ip netns exec` remounts /sys).
SYS_NET = Path("/sys/class/net")


#: While the promoting side waits W, how often it looks for the old primary's report of its dead QEMU.
PROMOTE_POLL_S = 0.05


def prepare_host(cfg: ControllerConfig) -> None:
    """What a site controller makes on its host before it runs: its private directories (0700) and
    the guest NIC's tap on the client-LAN bridge (the lab made these for its --config controllers).
    The host's own network (link devices, the bridge) is checked first: a host that cannot run the
    server gets one line and nothing made."""
    for i, link in enumerate(cfg.links):
        device = link.get("device")
        if device and not (SYS_NET / device).exists():
            raise ConfigError(f"FT server {cfg.ftserver}: sync link {link['name']}: no interface {device} on "
                              f"this host (site file key coservers.{cfg.host}.links[{i}].device)")
    bridge = cfg.node.get("bridge")
    if bridge and not (SYS_NET / bridge).exists():
        raise ConfigError(f"FT server {cfg.ftserver}: bridge {bridge}: no such interface on this host "
                          "(the guest NIC's tap goes on it)")
    if cfg.tls_dir:
        _check_tls_dir(cfg)
    overlay = cfg.node.get("overlay_dir")
    for d in (Path(cfg.qemu_workdir), Path(cfg.control_socket).parent, *([Path(overlay)] if overlay else [])):
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
    if bridge and cfg.backend != "libvirt":   # libvirtd makes its own tap on the bridge
        try:
            netns.ensure_tap(cfg.node["tap"], bridge)
        except CoserverError as exc:
            raise ConfigError(f"FT server {cfg.ftserver}: {exc}") from None


def _check_tls_dir(cfg: ControllerConfig) -> None:
    """The QEMUs' certificates are there and safe (no key others can read, no directory others can
    write), or one line saying what to fix, before any QEMU is started with them."""
    tls = cfg.colo_node().tls
    assert tls is not None
    try:
        check_pki_dir(tls.directory)
    except CoserverError as exc:
        raise ConfigError(f"FT server {cfg.ftserver}: TLS: {exc}") from None
    missing = tls.missing()
    if missing:
        raise ConfigError(f"FT server {cfg.ftserver}: TLS: {tls.directory} lacks {', '.join(missing)} "
                          "(make them with `coserver site certs` and copy this host's directory here)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="coserver-controller", description=__doc__.splitlines()[0],
        epilog="A real CoServer runs `--server NAME` (site file: --site, else $COSERVER_SITE, else "
               "/etc/coserver/site.toml); the lab runs `--config JSON`.")
    how = parser.add_mutually_exclusive_group(required=True)
    how.add_argument("--config", type=Path, help="a ControllerConfig JSON file (the lab)")
    how.add_argument("--server", help="the FT server's name, its spec in the site's servers_dir")
    parser.add_argument("--site", type=Path, default=None, help="the site file (with --server)")
    parser.add_argument("--host", default=None,
                        help="this CoServer's name (with --server; default: found by its addresses)")
    args = parser.parse_args(argv)
    if args.config is not None and (args.site is not None or args.host is not None):
        parser.error("--site and --host go with --server, not --config")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        key: KeyRing | None = None
        if args.config is not None:
            cfg = ControllerConfig.load(args.config)
        else:
            cfg = site_config(args.site, args.server, args.host)
            key = load_keys(Path(cfg.key_file))   # a controller never invents a missing key
            prepare_host(cfg)
        log.configure("INFO", Path(cfg.log_file))
        asyncio.run(_main(cfg, key))
    except CoserverError as exc:
        print(f"coserver-controller: error: {exc}", file=sys.stderr)
        return 1
    except CoserverBug as exc:
        print(f"coserver-controller: bug, stopping (the supervisor restarts it): {exc}", file=sys.stderr)
        return EXIT_BUG
    except Exception as exc:  # noqa: BLE001 - a task died of something unforeseen (OSError, ...): one line
        print(f"coserver-controller: a task failed, stopping (the supervisor restarts it): {exc!r}",
              file=sys.stderr)
        return EXIT_BUG
    return 0


if __name__ == "__main__":
    sys.exit(main())
