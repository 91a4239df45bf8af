"""HostController.tick and friends against fakes: no QEMU, no etcd, no sockets.

The controller takes its journal, witness and heartbeats from outside
(HostController.from_config builds the real ones), so each tick's
observe -> decide -> claim -> act -> journal path can be driven here.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from coserver.bench.failover import _history_times
from coserver.controller.config import ConfigError, ControllerConfig
from coserver.controller.daemon import EXIT_BUG, HostController
from coserver.controller.errors import WitnessError
from coserver.controller.heartbeat import LocalStatus
from coserver.controller.journal import Journal, JournalEntry
from coserver.controller.policy import DEFAULT_KILL_HUNG_AFTER, Thresholds
from coserver.controller.roles import QemuHealth, Role
from coserver.controller.statemachine import FtState, IllegalTransition
from coserver.controller.witness import Owner
from coserver.errors import CoserverBug, CoserverError


class FakeHeartbeats:
    """The peer as the heartbeats report it: heard on every link, its QEMU alive."""

    def __init__(self, links: list[str], peer_qemu: str = "alive") -> None:
        self.links = links
        self.peer_qemu = peer_qemu
        self.published: list[dict[str, Any]] = []

    async def open(self) -> None: ...
    async def start(self) -> None: ...
    async def close(self) -> None: ...

    async def wait(self) -> None:   # the send task, as run() watches it: runs until cancelled
        await asyncio.Event().wait()

    def last_heard(self, link: str) -> float | None:
        return time.monotonic()

    def now(self) -> float:
        return time.monotonic()

    def links_alive(self) -> dict[str, bool]:
        return {name: True for name in self.links}

    def rtts(self) -> dict[str, float | None]:
        return {name: 0.001 for name in self.links}

    def peer_alive(self) -> bool:
        return True

    def peer_state(self) -> Any:
        class Peer:
            role, state, qemu, epoch = "secondary", "protected", self.peer_qemu, 1
            site, qemu_version, guest_off, replica_off, node = "", "10.2.2", 0, 0, "cs2"
        return Peer()

    def update_local(self, **changes: Any) -> None:
        self.published.append(changes)

    @property
    def local(self) -> LocalStatus:
        return LocalStatus(site="", qemu_version="10.2.2")

    def auth_failing(self) -> list[str]:
        return []

    def link_names(self) -> list[str]:
        return list(self.links)


class FakeWitness:
    """A witness that grants whatever is asked and remembers the release."""

    def __init__(self, held_by: str | None) -> None:
        self.held = Owner(held_by, 1, True) if held_by else None
        self.reachable = True
        self.released = False
        self.on_lost: Any = None

    async def current(self) -> Owner | None:
        return self.held

    def lease_left(self) -> float:
        return 2.0 if self.held else 0.0

    async def release(self) -> None:
        self.released, self.held = True, None

    async def close(self) -> None: ...


class DeadQemu:
    """The launcher's view of a QEMU that was killed or crashed."""

    pid = 4242
    qmp_path = Path("/nonexistent/qemu.qmp")

    def alive(self) -> bool:
        return False

    def cpu_ticks(self) -> int | None:
        return None

    def cpu_ns(self) -> int | None:
        return None

    def proc_state(self) -> str | None:
        return None

    def kill(self) -> bool:
        raise AssertionError("a dead QEMU is not killed again")


def config(tmp_path: Path, **overrides: Any) -> ControllerConfig:
    fields: dict[str, Any] = dict(
        host="cs1", peer="cs2", ftserver="journal", qemu_workdir=str(tmp_path), qemu_name="qemu",
        control_socket=str(tmp_path / "control.sock"), log_file=str(tmp_path / "log.jsonl"),
        journal_file=str(tmp_path / "journal.json"), key_file=str(tmp_path / "key"),
        links=[{"name": "sync1", "local_ip": "10.0.1.1", "peer_ip": "10.0.1.2", "port": 7400}],
        witness={"host": "127.0.0.1", "port": 2379, "site": "test", "insecure": True},
        node={"sync_addr": "10.0.1.1", "tap": "tap0", "disk": str(tmp_path / "disk.qcow2"), "mac": "52:54:00:00:00:01"})
    fields.update(overrides)
    return ControllerConfig(**fields)


def primary_controller(tmp_path: Path, **overrides: Any) -> tuple[HostController, FakeWitness, FakeHeartbeats]:
    """A controller resumed from its journal as the protected primary, whose QEMU has just died."""
    cfg = config(tmp_path, **overrides)
    journal = Journal(Path(cfg.journal_file))
    journal.save(JournalEntry(ftserver=cfg.ftserver, node=cfg.host, role=Role.PRIMARY, epoch=1,
                              state=FtState.PROTECTED))
    witness, heartbeats = FakeWitness(held_by=cfg.host), FakeHeartbeats(["sync1"])
    controller = HostController(cfg, journal=journal, witness=witness, heartbeats=heartbeats)  # type: ignore[arg-type]
    controller.qemu = DeadQemu()  # type: ignore[assignment]
    return controller, witness, heartbeats


def test_tick_kills_reaps_and_releases_when_the_local_qemu_died(tmp_path: Path, arun) -> None:
    controller, witness, heartbeats = primary_controller(tmp_path)

    async def go() -> None:
        assert controller.observe().qemu == QemuHealth.DEAD
        await controller.tick()

    arun(go())
    assert controller.role == Role.NONE and controller.sm.state == FtState.STOPPED
    assert witness.released  # the secondary need not wait for the lease to lapse
    saved = controller.journal.load()
    assert saved is not None and saved.state == FtState.STOPPED and saved.role == Role.NONE
    assert heartbeats.published[-1]["role"] == "none"


def test_maintenance_is_observed_and_holds_the_kill(tmp_path: Path, arun) -> None:
    (tmp_path / "maintenance").write_text("on\n")
    controller, witness, _ = primary_controller(tmp_path)
    obs = controller.observe()
    assert obs.maintenance  # the daemon sets it: the maintenance rule no longer runs only in tests

    arun(controller.tick())
    assert controller.sm.state == FtState.PROTECTED and not witness.released
    assert controller.decisions[-1]["reason"].startswith("maintenance")


def test_status_history_is_from_to_and_readers_read_it(tmp_path: Path, arun) -> None:
    controller, _, _ = primary_controller(tmp_path)
    t_fault = time.time()
    controller._to(FtState.FAILING_OVER, "test: peer lost")
    controller._to(FtState.SIMPLEX, "test: failover done")
    history = arun(controller.status())["history"]  # the resume from the journal first, then these two
    assert all(set(h) == {"at", "from", "to", "reason"} for h in history)
    assert [(h["from"], h["to"]) for h in history[-2:]] == [("protected", "failing_over"), ("failing_over", "simplex")]
    detection, promotion, reason = _history_times(history, t_fault)
    assert detection is not None and promotion is not None and reason == "test: failover done"


def test_a_bug_in_a_tick_stops_the_controller(tmp_path: Path, arun) -> None:
    controller, _, _ = primary_controller(tmp_path)

    def broken(state: FtState, reason: str) -> None:
        raise IllegalTransition("test: a transition the table forbids")

    controller._to = broken  # type: ignore[method-assign]

    async def go() -> None:
        controller._spawn(controller._decide_loop(), "decide")
        await asyncio.wait_for(controller._stop.wait(), 5.0)

    arun(go())
    assert isinstance(controller.failure, IllegalTransition)
    assert issubclass(IllegalTransition, CoserverBug) and not issubclass(IllegalTransition, CoserverError)
    assert EXIT_BUG != 0


def test_the_hung_qemu_threshold_is_defined_once() -> None:
    assert DEFAULT_KILL_HUNG_AFTER == 1.5  # measured and documented (README: "QMP silent for 1.5 s")
    assert Thresholds().kill_hung_after == ControllerConfig.__dataclass_fields__["kill_hung_after_s"].default


@pytest.mark.parametrize("field,value,why", [
    ("reprotect", "sometimes", "reprotect"),
    ("kill_hung_after_s", 0, "kill_hung_after_s"),
    ("links", [], "no sync links"),
    ("links", [{"name": "sync1"}], r"links\[0\] lacks"),
    ("peer", "cs1", "host and peer"),
    ("heartbeat_interval_s", 2.0, "heartbeat_interval_s"),
    ("ports", {"mirror": 0}, "ports"),
    ("remote_control", {"port": 7405}, "remote_control.address"),
    ("remote_control", {"address": "10.0.3.1", "port": 0}, "remote_control.port"),
    ("lease_patience_s", 1.0, "lease_patience"),
    ("fence_after_s", 0, "fence_after_s"),
])
def test_config_is_validated(tmp_path: Path, field: str, value: Any, why: str) -> None:
    with pytest.raises(ConfigError, match=why):
        config(tmp_path, **{field: value})


def test_config_round_trips(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    cfg.save(tmp_path / "c.json")
    assert ControllerConfig.load(tmp_path / "c.json") == cfg


def test_a_controller_that_finds_no_qemu_after_a_power_cut_is_stopped_and_may_rejoin(tmp_path: Path, arun) -> None:
    """The journal says protected primary, but the host lost power: no QEMU is found at start. The
    controller must say stopped (so rejoin's STARTING is a legal move), not stay 'protected'."""
    controller, _, _ = primary_controller(tmp_path)
    controller.qemu = None
    arun(controller._attach())
    assert controller.role == Role.NONE and controller.sm.state == FtState.STOPPED
    assert controller.sm.can(FtState.STARTING)


class LiveQemu:
    """A running QEMU that records its SIGKILL."""

    pid = 4243
    qmp_path = Path("/nonexistent/qemu.qmp")

    def __init__(self) -> None:
        self.killed_at: float | None = None

    def alive(self) -> bool:
        return self.killed_at is None

    def proc_state(self) -> str | None:
        """No /proc entry of its own (a made-up pid): the health loop leaves it to alive()."""
        return None

    def cpu_ns(self) -> int | None:
        return None

    def kill(self) -> bool:
        self.killed_at = time.monotonic()
        return True


@pytest.mark.parametrize("colo_error", [True, False])
def test_a_primary_that_lost_its_lease_is_fenced_after_f_unless_its_secondary_is_in_step(
        tmp_path: Path, arun, colo_error: bool) -> None:
    """witness.on_lost -> the watchdog kills our QEMU at fence_after (no tick needed); a secondary heard
    in step with us (COLO running, our epoch) holds the fence: it has no reason to promote."""
    controller, witness, _ = primary_controller(tmp_path, fence_after_s=0.3)
    qemu = LiveQemu()
    controller.qemu = qemu  # type: ignore[assignment]
    witness.held = None
    assert witness.on_lost == controller._lease_lost   # wired
    if colo_error:
        controller.events.colo_exit = {"reason": "error"}

    async def go() -> float:
        t0 = time.monotonic()
        witness.on_lost("test: not refreshed in time")
        await asyncio.sleep(0.8)
        return t0

    t0 = arun(go())
    if colo_error:
        assert qemu.killed_at is not None and 0.3 <= qemu.killed_at - t0 <= 0.3 + 0.25
        arun(controller.tick())
        assert controller.sm.state == FtState.FENCED and not witness.released
    else:
        assert qemu.killed_at is None
        assert controller.observe().lease_lost_for is not None


def test_a_regained_lease_ends_the_watch(tmp_path: Path, arun) -> None:
    controller, witness, _ = primary_controller(tmp_path, fence_after_s=0.3)
    qemu = LiveQemu()
    controller.qemu = qemu  # type: ignore[assignment]
    controller.events.colo_exit = {"reason": "error"}
    held, witness.held = witness.held, None

    async def go() -> None:
        witness.on_lost("test")
        await asyncio.sleep(0.1)
        witness.held = held          # re-claimed at our epoch within F
        await asyncio.sleep(0.6)

    arun(go())
    assert qemu.killed_at is None and controller.observe().lease_lost_for is None


def test_the_promotion_is_published_then_waits_before_running_alone(tmp_path: Path, arun, monkeypatch) -> None:
    from coserver.controller import daemon
    from coserver.controller.policy import Action, Decision
    controller, _, heartbeats = primary_controller(tmp_path)
    controller.role, controller.qmp = Role.SECONDARY, object()  # type: ignore[assignment]
    took: list[float] = []

    async def fail_over(*args: Any) -> float:
        took.append(time.monotonic())
        return 0.0

    monkeypatch.setattr(daemon.actions, "fail_over", fail_over)

    async def go() -> float:
        t0 = time.monotonic()
        await controller.act(Decision(Action.PROMOTE, "test: granted", wait=0.3))
        return t0

    t0 = arun(go())
    assert took and took[0] - t0 >= 0.3
    assert any(p["state"] == "failing_over" for p in heartbeats.published)   # heard before the wait
    assert controller.sm.state == FtState.SIMPLEX


@contextlib.contextmanager
def colo_stream() -> Iterator[tuple[int, threading.Event]]:
    """A TCP connection on loopback standing in for the COLO checkpoint stream: yields its port and an
    Event; while it is set, bytes flow (and are read at the other end), so the kernel counts them."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    dialled = socket.create_connection(("127.0.0.1", port))
    accepted, _ = server.accept()
    sending, done = threading.Event(), threading.Event()

    def pump() -> None:
        while not done.is_set():
            if sending.is_set():
                dialled.sendall(b"x" * 65536)
            else:
                time.sleep(0.01)

    def drain() -> None:
        while accepted.recv(1 << 20):
            pass
        accepted.close()

    threads = [threading.Thread(target=pump, daemon=True), threading.Thread(target=drain, daemon=True)]
    for t in threads:
        t.start()
    try:
        yield port, sending
    finally:
        done.set()
        threads[0].join()
        dialled.close()     # the drain ends on EOF and closes its end
        threads[1].join()
        server.close()


def test_a_qemu_whose_colo_stream_moves_is_busy_not_hung(tmp_path: Path, arun) -> None:
    """A QMP deadline missed while the kernel counts bytes on the COLO connection is a long
    checkpoint (busy); with the stream still, or past the busy limit, it is a hang again."""
    from coserver.controller import daemon

    with colo_stream() as (port, sending):
        controller, _, _ = primary_controller(tmp_path, peer_repl_addr="127.0.0.1", ports={"migration": port})
        assert arun(controller._classify_miss(time.monotonic())) != daemon.Miss.BUSY   # a still stream: hung
        sending.set()
        t0 = time.monotonic()
        assert arun(controller._classify_miss(t0)) == daemon.Miss.BUSY
        assert controller.health.busy_since == t0 and controller.health.hung_since is None
        assert arun(controller._classify_miss(t0 + 1)) == daemon.Miss.BUSY   # still busy, since t0
        assert controller.replication_late_for() == 0.0
        assert arun(controller._classify_miss(t0 + daemon.CHECKPOINT_BUSY_LIMIT_S)) != daemon.Miss.BUSY  # too long
        controller._end_busy()
        assert controller.health.busy_since is None and controller.health.busy_max_s > 0


def test_a_checkpoint_stuck_on_a_silent_peer_ends_colo_alive(tmp_path: Path, arun, monkeypatch) -> None:
    """A primary whose checkpoint is late (the guest stopped in one, or the next one overdue) while the
    secondary is silent on every link and the COLO stream moves nothing (a powered-off host
    acknowledges nothing) no longer counts checkpoints as flowing, though the last MIGRATION_PASS is
    within colo_window; with the peer heard, or the stream moving (a large checkpoint), it still does."""
    from coserver.controller import daemon

    monkeypatch.setattr(daemon, "CHECKPOINT_STALLED_AFTER_S", 0.0)
    with colo_stream() as (port, sending):
        controller, _, heartbeats = primary_controller(tmp_path, peer_repl_addr="127.0.0.1",
                                                       ports={"migration": port})
        for name in ("MIGRATION_PASS", "STOP"):   # a checkpoint starts: the guest stops
            controller.events.record({"event": name, "data": {}}, Role.PRIMARY, "cs1")
        arun(controller._watch_stalled_checkpoint())
        assert controller.colo_alive()   # the peer is heard: nothing is sampled
        monkeypatch.setattr(heartbeats, "links_alive", lambda: {"sync1": False})
        sending.set()
        arun(controller._watch_stalled_checkpoint())
        assert controller.colo_alive()   # silent peer, but the stream moves: a large checkpoint
        sending.clear()
        time.sleep(0.1)
        arun(controller._watch_stalled_checkpoint())
        assert not controller.colo_alive()
        assert controller.observe().colo_alive is False
        controller.events.record({"event": "RESUME", "data": {}}, Role.PRIMARY, "cs1")
        assert controller.colo_alive()   # that checkpoint ended after all: the verdict was about it only
        # the guest runs, but the next checkpoint is overdue (its request waits for a reply that never
        # comes): within colo_window, yet stalled
        late = time.monotonic() - controller.cfg.checkpoint_ms / 1000 - 0.1   # past its period, in the window
        controller.events.last_checkpoint = controller._colo_since = late
        assert controller.events.colo_alive(controller.cfg.checkpoint_ms)
        arun(controller._watch_stalled_checkpoint())
        assert not controller.colo_alive()
        controller.events.record({"event": "MIGRATION_PASS", "data": {}}, Role.PRIMARY, "cs1")
        assert controller.colo_alive()


@contextlib.contextmanager
def unacknowledged_stream() -> Iterator[int]:
    """A loopback TCP connection whose far end stopped reading: the sender's last bytes stay in its
    Send-Q, unacknowledged, and nothing moves (what a powered-off peer's streams look like)."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    dialled = socket.create_connection(("127.0.0.1", port))
    accepted, _ = server.accept()
    dialled.setblocking(False)
    try:
        while True:
            dialled.send(b"x" * 65536)
    except BlockingIOError:
        pass
    try:
        yield port
    finally:
        for sock in (dialled, accepted, server):
            sock.close()


def test_a_primary_drops_a_silent_peer_whose_streams_hold_unacknowledged_bytes(tmp_path: Path, arun,
                                                                               monkeypatch) -> None:
    """Peer silent on every link for half the heartbeat timeout (its links not yet timed out) and the
    COLO streams hold bytes it does not acknowledge: the primary's verdict comes now, not at the
    timeout; a stream that delivers, or a peer heard recently, gives none."""
    with unacknowledged_stream() as port, colo_stream() as (colo_port, sending):
        controller, _, _ = primary_controller(tmp_path, peer_repl_addr="127.0.0.1",
                                              ports={"mirror": port, "migration": colo_port})
        controller.events.record({"event": "MIGRATION_PASS", "data": {}}, Role.PRIMARY, "cs1")
        silence = 0.2
        monkeypatch.setattr(controller, "_peer_silent_for", lambda: silence)
        arun(controller._watch_stalled_checkpoint())
        assert controller.observe().replica_unresponsive is False   # heard 0.2 s ago: nothing sampled
        silence = 0.6 * controller.cfg.heartbeat_timeout_s
        sending.set()
        arun(controller._watch_stalled_checkpoint())
        assert controller.observe().replica_unresponsive is False   # the checkpoint stream still delivers
        sending.clear()
        time.sleep(0.1)
        arun(controller._watch_stalled_checkpoint())
        o = controller.observe()
        assert o.replica_unresponsive and not o.colo_alive   # the policy drops the replica (test_policy)
        controller.events.record({"event": "MIGRATION_PASS", "data": {}}, Role.PRIMARY, "cs1")
        assert controller.observe().replica_unresponsive is False   # a checkpoint came after all


def test_a_secondary_that_hears_its_peer_asks_the_witness_less_often(tmp_path: Path, arun, monkeypatch) -> None:
    """A protected secondary whose peer is heard polls the witness every WITNESS_QUIET_POLL_S, not
    every round; the round after the peer falls silent (or the witness was last unreachable) asks."""
    from coserver.controller import daemon

    cfg = config(tmp_path, host="cs2", peer="cs1")
    journal = Journal(Path(cfg.journal_file))
    journal.save(JournalEntry(ftserver=cfg.ftserver, node=cfg.host, role=Role.SECONDARY, epoch=1,
                              state=FtState.PROTECTED))
    witness, heartbeats = FakeWitness(held_by=None), FakeHeartbeats(["sync1"])
    controller = HostController(cfg, journal=journal, witness=witness, heartbeats=heartbeats)  # type: ignore[arg-type]
    assert controller.role == Role.SECONDARY and controller.sm.state == FtState.PROTECTED
    polls: list[float] = []

    async def current() -> Owner | None:
        polls.append(time.monotonic())
        return Owner("cs1", 1, True)

    witness.current = current  # type: ignore[method-assign]
    silence = 0.0
    monkeypatch.setattr(controller, "_peer_silent_for", lambda: silence)
    monkeypatch.setattr(daemon, "WITNESS_POLL_S", 0.02)
    monkeypatch.setattr(daemon, "WITNESS_QUIET_POLL_S", 0.2)

    async def rounds(seconds: float) -> int:
        before = len(polls)
        task = asyncio.create_task(controller._witness_loop())
        await asyncio.sleep(seconds)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return len(polls) - before

    heard = arun(rounds(0.5))
    assert 2 <= heard <= 4, heard          # every 0.2 s, not every 0.02 s
    assert controller.witness_view.owner == "cs1" and controller.witness_view.reachable
    silence = 1.0                          # peer silent: every round asks
    assert arun(rounds(0.3)) >= 8
    silence = 0.0

    async def unreachable() -> Owner | None:
        polls.append(time.monotonic())
        raise WitnessError("witness 127.0.0.1:2379: unreachable")

    witness.current = unreachable  # type: ignore[method-assign]
    assert arun(rounds(0.3)) >= 8          # last answer "unreachable": every round asks again
    assert not controller.witness_view.reachable


def test_qemu_released_from_libvirts_hook_is_recorded_and_decides_nothing(tmp_path: Path, arun) -> None:
    controller, witness, _ = primary_controller(tmp_path)
    state = controller.sm.state
    reply = arun(controller.handle({"cmd": "qemu-released", "name": "journal", "domain": "journal",
                                    "role": "primary", "epoch": 1, "reason": "libvirt: release end -"}))
    assert reply == {"ok": True, "host": "cs1"}
    assert controller.sm.state == state and not witness.released   # no action: the next tick decides
    status = arun(controller.status())
    assert status["qemu_released"]["reason"] == "libvirt: release end -"
    other = arun(controller.handle({"cmd": "qemu-released", "name": "web", "reason": "x"}))
    assert other["ok"] is False and "journal" in other["error"]


def test_a_stopped_qemu_is_stuck_and_a_busy_one_is_not(tmp_path: Path, arun) -> None:
    """After a missed probe the controller samples QEMU's CPU time: a stopped process (SIGSTOP, a
    deadlock) used none, so it is stuck (killed at once); one that computes is only slow."""
    import signal
    import subprocess
    import sys
    import time

    from coserver.controller.daemon import Miss
    from coserver.sys.proc import ProcessRecord

    class Proc:   # the launcher's view of a live QEMU: its pid and the CPU time it used
        def __init__(self, pid: int) -> None:
            self.pid = pid
            self.record = ProcessRecord.of(pid)

        def alive(self) -> bool:
            return True

        def cpu_ticks(self) -> int | None:
            return self.record.cpu_ticks()

    stopped = subprocess.Popen(["sleep", "60"])
    spinning = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        stopped.send_signal(signal.SIGSTOP)
        controller, _, _ = primary_controller(tmp_path, peer_repl_addr="127.0.0.1", ports={"migration": 1})
        controller.qemu = Proc(stopped.pid)  # type: ignore[assignment]
        assert arun(controller._classify_miss(time.monotonic())) == Miss.STUCK
        time.sleep(0.3)   # the interpreter has started and computes
        controller.qemu = Proc(spinning.pid)  # type: ignore[assignment]
        assert arun(controller._classify_miss(time.monotonic())) == Miss.SLOW
    finally:
        for p in (stopped, spinning):
            p.kill()
            p.wait()


def test_the_decide_loop_is_woken_the_moment_qemu_exits(tmp_path: Path, arun) -> None:
    """A pidfd watch on the local QEMU: its death wakes the decide loop at once (not at the next
    tick), so a killed primary is reported dead, and its peer promotes, sooner."""
    import asyncio
    import subprocess

    class Proc:
        def __init__(self, pid: int) -> None:
            self.pid = pid

        def alive(self) -> bool:   # asked when the watch is armed, and once it has fired
            return child.poll() is None

    child = subprocess.Popen(["sleep", "60"])
    controller, _, _ = primary_controller(tmp_path)

    async def go() -> float:
        controller.qemu = Proc(child.pid)  # type: ignore[assignment]
        assert controller._exit_fd is not None
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        child.kill()
        await asyncio.wait_for(controller._woken.wait(), 2.0)
        return loop.time() - t0

    try:
        assert arun(go()) < 0.1
        assert controller._exit_fd is None   # one wake per process: the watch is gone
        assert not controller._qemu_alive()  # and /proc is asked again: the process is gone
    finally:
        child.kill()
        child.wait()
