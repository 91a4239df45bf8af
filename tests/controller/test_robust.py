"""A controller on a full disk, and one whose task dies (issue 13), against the fakes of test_daemon.

* a task that dies (or a loop that ends) stops the whole controller: heartbeats and the witness's
  keep-alive stop so the peer can take over, run() raises, main() exits non-zero; QEMU is not touched;
* a journal that cannot be saved leaves the controller running from memory, with an alert, and the
  save is retried; a takeover under way completes (one epoch bump);
* a journal of another host or FT server is refused at start.
"""

from __future__ import annotations

import asyncio
import errno
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from coserver import log
from coserver.controller import daemon
from coserver.controller.daemon import EXIT_BUG, HostController, TaskEnded
from coserver.controller.errors import JournalMismatch
from coserver.controller.journal import Journal, JournalEntry
from coserver.controller.roles import Role
from coserver.controller.statemachine import FtState
from coserver.controller.witness import ClaimResult, Owner

from .test_daemon import FakeHeartbeats, FakeWitness, config


class RunHeartbeats(FakeHeartbeats):
    """FakeHeartbeats as run() uses them: started, watched (wait), closed; `die` ends their task."""

    def __init__(self, links: list[str], peer_qemu: str = "alive") -> None:
        super().__init__(links, peer_qemu)
        self.sending = False
        self.die: asyncio.Future[None] | None = None

    async def start(self) -> None:
        self.sending = True
        self.die = asyncio.get_running_loop().create_future()

    async def wait(self) -> None:
        assert self.die is not None
        await asyncio.shield(self.die)

    async def close(self) -> None:
        self.sending = False


class RunWitness(FakeWitness):
    """FakeWitness that grants claims (counted) and knows whether its keep-alive runs."""

    def __init__(self, held_by: str | None) -> None:
        super().__init__(held_by)
        self.claims: list[int] = []
        self.keeping_alive = held_by is not None

    async def claim(self, node: str, epoch: int) -> ClaimResult:
        self.claims.append(epoch)
        self.held = Owner(node, epoch, True)
        self.keeping_alive = True
        return ClaimResult(True, self.held, f"{node} owns epoch {epoch}")

    async def close(self) -> None:
        self.keeping_alive = False   # the lease is kept (not released): a restart re-claims it


class LiveQemu:
    """A QEMU the controller may not touch: killing or stopping it fails the test."""

    pid = 4243
    qmp_path = Path("/nonexistent/qemu.qmp")

    def alive(self) -> bool:
        return True

    def proc_state(self) -> str | None:
        """No /proc entry of its own (a made-up pid): the health loop leaves it to alive()."""
        return None

    def cpu_ns(self) -> int | None:
        return None

    def kill(self) -> bool:
        raise AssertionError("QEMU must never be killed by the controller's own failure")

    def stop(self, timeout: float) -> None:
        raise AssertionError("QEMU must never be stopped by the controller's own failure")


def controller_at(tmp_path: Path, *, role: Role = Role.NONE, state: FtState = FtState.STOPPED,
                  peer_qemu: str = "alive", **overrides: Any) -> tuple[HostController, RunWitness, RunHeartbeats]:
    cfg = config(tmp_path, **overrides)
    journal = Journal(Path(cfg.journal_file))
    journal.save(JournalEntry(ftserver=cfg.ftserver, node=cfg.host, role=role, epoch=1, state=state))
    witness = RunWitness(held_by=cfg.host if role in (Role.PRIMARY, Role.SIMPLEX) else None)
    heartbeats = RunHeartbeats(["sync1"], peer_qemu=peer_qemu)
    controller = HostController(cfg, journal=journal, witness=witness, heartbeats=heartbeats)  # type: ignore[arg-type]
    return controller, witness, heartbeats


def break_journal(controller: HostController, tmp_path: Path) -> Path:
    """The journal's directory is now a regular file: every save fails (as on a full disk)."""
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a directory\n")
    controller.journal = Journal(blocker / "journal.json")
    return blocker


def log_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def json_log(tmp_path: Path) -> Any:
    path = tmp_path / "controller.log.jsonl"
    log.configure("INFO", path)
    try:
        yield path
    finally:
        log.configure("WARNING")


async def run_until_stopped(controller: HostController, timeout: float = 10.0) -> BaseException | None:
    """run() to its end; what it raised (None: a clean stop)."""
    try:
        await asyncio.wait_for(controller.run(), timeout)
    except Exception as exc:  # noqa: BLE001 - the test looks at it
        return exc
    return None


async def started(controller: HostController) -> None:
    while not any(t.get_name() == "decide" for t in controller._tasks):
        await asyncio.sleep(0.01)


# ---- task supervision ----------------------------------------------------------------------

def test_a_decide_loop_that_dies_of_a_full_disk_stops_the_controller(tmp_path: Path, arun, json_log: Path) -> None:
    controller, witness, heartbeats = controller_at(tmp_path)
    ticks = 0

    async def full_disk_tick() -> None:
        nonlocal ticks
        ticks += 1
        if ticks == 3:
            raise OSError(errno.ENOSPC, "No space left on device")

    controller.tick = full_disk_tick  # type: ignore[method-assign]

    async def go() -> BaseException | None:
        runner = asyncio.create_task(run_until_stopped(controller))
        await started(controller)
        assert heartbeats.sending
        return await runner

    raised = arun(go())
    assert isinstance(raised, OSError) and raised.errno == errno.ENOSPC   # run() ends with the task's death
    assert not heartbeats.sending              # the peer hears silence and may take over
    assert not witness.keeping_alive and not witness.released   # no zombie lease renewal; not handed over
    assert all(t.done() for t in controller._tasks)
    bugs = [ln for ln in log_lines(json_log) if ln["event"] == "controller.bug"]
    assert len(bugs) == 1 and bugs[0]["where"] == "task decide" and "No space left" in bugs[0]["error"]


def test_a_loop_that_returns_stops_the_controller(tmp_path: Path, arun, json_log: Path) -> None:
    controller, witness, heartbeats = controller_at(tmp_path)

    async def witness_loop_that_returns() -> None:
        await asyncio.sleep(0.05)

    controller._witness_loop = witness_loop_that_returns  # type: ignore[method-assign]
    raised = arun(run_until_stopped(controller))
    assert isinstance(raised, TaskEnded) and "task witness ended" in str(raised)
    assert not heartbeats.sending and not witness.keeping_alive
    assert [ln["where"] for ln in log_lines(json_log) if ln["event"] == "controller.bug"] == ["task witness"]


def test_heartbeats_that_die_stop_the_controller(tmp_path: Path, arun) -> None:
    controller, witness, heartbeats = controller_at(tmp_path, role=Role.PRIMARY, state=FtState.PROTECTED)
    controller._attach = _attached_to(LiveQemu(), Role.PRIMARY, controller)  # type: ignore[method-assign]

    async def go() -> BaseException | None:
        runner = asyncio.create_task(run_until_stopped(controller))
        await started(controller)
        assert heartbeats.die is not None
        heartbeats.die.set_exception(RuntimeError("test: the heartbeat task died"))
        return await runner

    raised = arun(go())
    assert isinstance(raised, RuntimeError) and "heartbeat task died" in str(raised)
    assert not witness.keeping_alive and not witness.released
    assert controller.sm.state == FtState.PROTECTED   # nothing was decided on the way out; QEMU untouched


def test_a_clean_stop_is_not_a_failure(tmp_path: Path, arun) -> None:
    controller, witness, heartbeats = controller_at(tmp_path)

    async def go() -> BaseException | None:
        runner = asyncio.create_task(run_until_stopped(controller))
        await started(controller)
        controller.stop()
        return await runner

    assert arun(go()) is None and controller.failure is None
    assert not heartbeats.sending and not witness.keeping_alive


def test_main_exits_non_zero_when_a_task_died_of_something_unforeseen(tmp_path: Path, monkeypatch,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    cfg_file = tmp_path / "controller.json"
    config(tmp_path).save(cfg_file)

    async def dies(cfg: Any, key: Any = None) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(daemon, "_main", dies)
    try:
        assert daemon.main(["--config", str(cfg_file)]) == EXIT_BUG
    finally:
        log.configure("WARNING")
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "a task failed" in err[0] and "Input/output error" in err[0]


def _attached_to(qemu: Any, role: Role, controller: HostController) -> Any:
    async def attach() -> None:
        controller.qemu, controller.role = qemu, role
    return attach


# ---- the journal on a full disk ----------------------------------------------------------

def test_a_takeover_completes_in_memory_when_the_journal_cannot_be_saved(tmp_path: Path, arun, monkeypatch) -> None:
    """The primary's peer reports its QEMU dead: claim epoch 2, drop the replica, simplex. The journal
    fails at FAILING_OVER: the takeover still completes, once; the save is retried and then works."""
    controller, witness, _ = controller_at(tmp_path, role=Role.PRIMARY, state=FtState.PROTECTED, peer_qemu="dead",
                                           reprotect="manual")
    controller.qemu = LiveQemu()  # type: ignore[assignment]
    controller.qmp = object()  # type: ignore[assignment]
    failovers: list[str] = []

    async def fail_over(side: Any, qmp: Any, cfg: Any, settings: Any) -> float:
        failovers.append(side.__name__)
        return 0.01

    monkeypatch.setattr(daemon.actions, "fail_over", fail_over)
    blocker = break_journal(controller, tmp_path)

    async def ticks(n: int) -> None:
        for _ in range(n):
            await controller.tick()

    arun(ticks(5))
    assert (controller.sm.state, controller.role, controller.epoch) == (FtState.SIMPLEX, Role.SIMPLEX, 2)
    assert witness.claims == [2] and failovers == ["Primary"]   # one claim, one failover: nothing redone
    controller.qmp = None
    st = arun(controller.status())
    assert st["journal"]["saved"] is False and "cannot write" in st["journal"]["error"]
    assert len(st["alerts"]) == 1
    assert st["alerts"][0].startswith("journal cannot be saved: journal ") and \
        st["alerts"][0].endswith("; running from memory")

    blocker.unlink()          # room again: the next retry saves what is in memory
    blocker.mkdir()
    controller._last_journal = -1e9
    arun(ticks(1))
    saved = controller.journal.load()
    assert saved is not None and (saved.state, saved.role, saved.epoch) == (FtState.SIMPLEX, Role.SIMPLEX, 2)
    assert controller.journal_error is None and arun(controller.status())["alerts"] == []


def test_a_failed_save_is_retried_on_the_next_tick_not_every_five_seconds(tmp_path: Path, arun) -> None:
    controller, _, _ = controller_at(tmp_path, reprotect="manual")
    blocker = break_journal(controller, tmp_path)
    assert not controller._save_journal("test")
    assert not controller._journal_due()
    controller._last_journal -= daemon.JOURNAL_RETRY_S + 0.1
    assert controller._journal_due()
    blocker.unlink()
    blocker.mkdir()
    assert controller._save_journal("test") and controller.journal_error is None
    controller._last_journal -= daemon.JOURNAL_RETRY_S + 0.1
    assert not controller._journal_due()   # saved again: back to every JOURNAL_EVERY_S


def test_a_journal_that_cannot_be_saved_at_start_does_not_stop_the_controller(tmp_path: Path, arun) -> None:
    """The journal says protected primary; no QEMU is found; the disk is full: the controller runs on
    (no crash loop), says stopped, and alerts."""
    controller, _, heartbeats = controller_at(tmp_path, role=Role.PRIMARY, state=FtState.PROTECTED)
    journal_dir = Path(controller.journal.path).parent
    shutil.move(str(controller.journal.path), str(tmp_path / "old-journal.json"))
    controller.journal = Journal(tmp_path / "blocker" / "journal.json")
    (tmp_path / "blocker").write_text("a file, not a directory\n")
    assert journal_dir.exists()

    async def go() -> tuple[dict[str, Any], BaseException | None]:
        runner = asyncio.create_task(run_until_stopped(controller))
        await started(controller)
        await asyncio.sleep(0.3)   # some ticks
        st = await controller.status()
        controller.stop()
        return st, await runner

    st, raised = arun(go())
    assert raised is None and controller.failure is None
    assert st["state"] == "stopped" and st["alerts"] and "running from memory" in st["alerts"][0]
    assert not heartbeats.sending


def test_a_journal_of_another_host_or_ft_server_is_refused(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    journal = Journal(Path(cfg.journal_file))
    journal.save(JournalEntry(ftserver=cfg.ftserver, node="cs2", role=Role.PRIMARY, epoch=7, state=FtState.SIMPLEX))
    with pytest.raises(JournalMismatch) as err:
        HostController(cfg, journal=journal, witness=FakeWitness(None), heartbeats=FakeHeartbeats(["sync1"]))  # type: ignore[arg-type]
    msg = str(err.value)
    assert "\n" not in msg and "node 'cs2' (this controller's is 'cs1')" in msg and "move it away" in msg
    journal.save(JournalEntry(ftserver="other", node=cfg.host, role=Role.PRIMARY, epoch=7, state=FtState.SIMPLEX))
    with pytest.raises(JournalMismatch, match="FT server 'other'"):
        HostController(cfg, journal=journal, witness=FakeWitness(None), heartbeats=FakeHeartbeats(["sync1"]))  # type: ignore[arg-type]
    assert journal.load() is not None   # without an expectation it still reads (tools, tests)


def test_the_log_health_is_in_the_status(tmp_path: Path, arun) -> None:
    controller, _, _ = controller_at(tmp_path)
    st = arun(controller.status())
    assert set(st["log"]) == {"dropped", "failing", "failing_since", "last_error"}
    assert st["journal"]["saved"] is True and st["alerts"] == []


def test_the_pair_summary_shows_a_controllers_own_alert_by_host() -> None:
    from coserver.pair.summary import alert, host_entry
    ok = host_entry({"role": "primary", "reprotect": {"alert": None}, "alerts": []})
    full = host_entry({"role": "secondary", "reprotect": {"alert": None},
                       "alerts": ["journal cannot be saved: ...; running from memory"]})
    assert alert({"cs1": ok, "cs2": full}) == "cs2: journal cannot be saved: ...; running from memory"
    refused = host_entry({"role": "none", "reprotect": {"alert": "cannot protect: keys differ"}, "alerts": []})
    assert alert({"cs1": full, "cs2": refused}) == "cannot protect: keys differ"   # the pair's alert first
    assert alert({"cs1": ok}) is None
