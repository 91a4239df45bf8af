"""controller.alerthook: a real small command gets each state change as JSON, and never holds the loop up."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

from coserver.controller.alerthook import AlertHook, event_for
from coserver.controller.statemachine import FtState, Transition

from .test_daemon import primary_controller

KEYS = {"component", "old", "new", "severity", "ftserver", "host", "reason", "time"}


def writer(out: Path) -> list[str]:
    """A hook that writes its stdin to `out` (via a temporary name, so a reader never sees half)."""
    code = ("import os, sys; data = sys.stdin.read(); p = sys.argv[1]; open(p + '.tmp', 'w').write(data); "
            "os.replace(p + '.tmp', p)")
    return [sys.executable, "-c", code, str(out)]


async def wait_for_file(path: Path, within: float) -> float:
    t0 = time.monotonic()
    while not path.exists():
        assert time.monotonic() - t0 < within, f"{path} not written within {within} s"
        await asyncio.sleep(0.01)
    return time.monotonic() - t0


def test_the_hook_gets_the_change_as_json_within_a_second(tmp_path: Path, arun) -> None:
    out = tmp_path / "event.json"
    hook = AlertHook(writer(out), ftserver="journal", host="cs1")

    async def go() -> None:
        t = Transition(1714564800.5, FtState.PROTECTED, FtState.SIMPLEX, "failover done in 40 ms: cs2 QEMU died")
        assert hook.transition(t) is True
        await wait_for_file(out, 1.0)
        while hook.in_flight:
            await asyncio.sleep(0.01)

    arun(go())
    event = json.loads(out.read_text())
    assert set(event) == KEYS
    assert (event["component"], event["old"], event["new"], event["severity"]) == (
        "ftserver", "protected", "simplex", "warning")
    assert (event["ftserver"], event["host"]) == ("journal", "cs1")
    assert event["reason"] == "FT server journal on cs1: Protected → Simplex (failover done in 40 ms: cs2 QEMU died)"
    assert event["time"] == "2024-05-01T12:00:00.500+00:00"
    assert hook.sent == 1 and hook.failed == 0


def test_a_hanging_hook_is_killed_at_the_timeout_without_blocking(tmp_path: Path, arun) -> None:
    pid_file = tmp_path / "pid"
    code = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    hook = AlertHook([sys.executable, "-c", code], ftserver="journal", host="cs1", timeout_s=0.5)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.02)
            ticks += 1

    async def go() -> float:
        task = asyncio.create_task(ticker())
        t0 = time.monotonic()
        hook.fire({"old": "protected", "new": "degraded"})
        assert time.monotonic() - t0 < 0.05          # fire() returns at once
        await wait_for_file(pid_file, 5.0)
        while hook.in_flight:
            await asyncio.sleep(0.02)
        took = time.monotonic() - t0
        task.cancel()
        return took

    took = arun(go())
    assert 0.5 <= took < 3.0, took
    assert ticks >= 10                                  # the loop ran on meanwhile
    assert hook.failed == 1 and hook.sent == 0
    pid = int(pid_file.read_text())
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()


def test_beyond_the_limit_changes_are_dropped_and_counted(tmp_path: Path, arun) -> None:
    hook = AlertHook([sys.executable, "-c", "import time; time.sleep(60)"], ftserver="journal", host="cs1",
                     max_in_flight=2, timeout_s=30)

    async def go() -> None:
        results = [hook.fire({"n": i}) for i in range(4)]
        assert results == [True, True, False, False]
        assert hook.dropped == 2
        await hook.close()                            # the controller's stop ends the runs still going
        assert hook.in_flight == 0

    arun(go())


def test_failures_are_logged_not_raised(tmp_path: Path, arun) -> None:
    async def go() -> None:
        missing = AlertHook([str(tmp_path / "no-such-hook")], ftserver="journal", host="cs1")
        failing = AlertHook([sys.executable, "-c", "import sys; sys.exit('no mail server')"],
                            ftserver="journal", host="cs1")
        nothing = AlertHook([], ftserver="journal", host="cs1")
        assert missing.fire({}) and failing.fire({}) and not nothing.fire({})
        while missing.in_flight or failing.in_flight:
            await asyncio.sleep(0.01)
        assert (missing.failed, failing.failed) == (1, 1)

    arun(go())


def test_every_state_has_a_severity() -> None:
    for state in FtState:
        assert event_for(Transition(0.0, FtState.STOPPED, state, "x"), ftserver="s", host="h")["severity"] in (
            "info", "warning", "critical")


def test_the_daemon_fires_the_hook_on_a_state_change(tmp_path: Path, arun) -> None:
    out = tmp_path / "event.json"
    controller, _, _ = primary_controller(tmp_path, alert_command=writer(out))

    async def go() -> None:
        await controller.tick()     # the dead QEMU: protected -> stopped
        await wait_for_file(out, 1.0)

    arun(go())
    event = json.loads(out.read_text())
    assert (event["old"], event["new"], event["host"], event["ftserver"]) == ("protected", "stopped", "cs1", "journal")
