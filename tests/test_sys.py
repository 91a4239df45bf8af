"""coserver.sys: the one subprocess wrapper and the one `ip netns exec` builder."""

from __future__ import annotations

import os
import sys

import pytest

from coserver.errors import CoserverError
from coserver.sys.netns import exec_argv
from coserver.sys.run import RunError, run


class MyError(CoserverError):
    pass


def test_run_returns_the_output() -> None:
    assert run([sys.executable, "-c", "print('hi')"], "say hi", timeout=30).stdout == "hi\n"


def test_run_failure_names_what_and_the_last_line() -> None:
    code = "import sys; print('first', file=sys.stderr); print('the reason', file=sys.stderr); sys.exit(3)"
    with pytest.raises(MyError, match=r"^build x: python failed: the reason$"):
        run([sys.executable, "-c", code], "build x", timeout=30, error=MyError, program="python")


def test_run_timeout_and_missing_program() -> None:
    with pytest.raises(RunError, match="timed out after 0 s"):
        run([sys.executable, "-c", "import time; time.sleep(5)"], "wait", timeout=0.2)
    with pytest.raises(RunError, match="cannot run /nonexistent/prog"):
        run(["/nonexistent/prog"], "start", timeout=5)


def test_run_unchecked_keeps_the_status() -> None:
    assert run([sys.executable, "-c", "raise SystemExit(4)"], "probe", timeout=30, check=False).returncode == 4


def test_exec_argv() -> None:
    assert exec_argv("cs-cs1", ["qemu", "-S"]) == ["ip", "netns", "exec", "cs-cs1", "qemu", "-S"]
    assert exec_argv(None, ("qemu", "-S")) == ["qemu", "-S"]


def test_a_process_record_is_loaded_only_while_that_process_runs(tmp_path) -> None:
    import json
    import os

    from coserver.sys.proc import ProcessRecord, load_record

    me = ProcessRecord.of(os.getpid())
    path = tmp_path / "controller.pid.json"
    path.write_text(json.dumps({"pid": me.pid, "starttime": me.starttime, "boot": me.boot, "starts": 1}))
    assert load_record(path) == me
    path.write_text(json.dumps({"pid": me.pid, "starttime": me.starttime + 1, "boot": me.boot}))
    assert load_record(path) is None  # the pid was reused by another process
    assert load_record(tmp_path / "missing.json") is None


def test_periodic_loops_wake_on_a_shared_grid_never_later_than_their_period() -> None:
    import random

    from coserver.sys.aio import next_on_grid

    rng = random.Random(7)
    shared = 0
    for _ in range(20000):
        now = rng.uniform(0, 1e6)
        for period in (0.05, 0.1, 0.25, 0.5, 0.02, 0.13):
            assert now < next_on_grid(now, period) <= now + period + 1e-6
        tick, poll = next_on_grid(now, 0.1), next_on_grid(now, 0.25)
        if abs(tick - poll) < 1e-6:   # the same instant: the very same float, so one timer wake-up serves both
            assert tick == poll
            shared += 1
    assert shared > 2000   # every other 250 ms poll falls on a 100 ms tick


@pytest.mark.parametrize("kind", ["event", "wake"])
def test_sleep_to_grid_ends_early_when_its_event_is_set(kind: str) -> None:
    """The decide loop's sleep: to the next grid point, or at once when a watcher sets the event
    (an asyncio.Event, or the task-free Wake the daemon uses)."""
    import asyncio

    from coserver.sys.aio import Wake, sleep_to_grid

    async def go() -> tuple[float, float, float]:
        loop = asyncio.get_running_loop()
        ev = asyncio.Event() if kind == "event" else Wake()
        t0 = loop.time()
        await sleep_to_grid(0.5, until=ev)
        full = loop.time() - t0
        loop.call_later(0.05, ev.set)
        t0 = loop.time()
        await sleep_to_grid(5.0, until=ev)
        cut = loop.time() - t0
        t0 = loop.time()
        await sleep_to_grid(5.0, until=ev)   # still set: returns at once
        return full, cut, loop.time() - t0

    full, cut, again = asyncio.run(go())
    assert 0 < full <= 0.52 and 0.04 <= cut < 0.3 and again < 0.01


def test_cpu_clock_ns_moves_with_a_running_process_stands_still_when_stopped_and_ends_with_it() -> None:
    """The health loop's CPU sample: a spinning process moves in every 50 ms, a SIGSTOPped one not
    at all, and a reaped one has no clock (None); it agrees with /proc's ticks."""
    import signal
    import subprocess
    import time

    from coserver.sys.proc import ProcessRecord, cpu_clock_ns

    spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        a = cpu_clock_ns(spin.pid)
        time.sleep(0.05)
        b = cpu_clock_ns(spin.pid)
        assert a is not None and b is not None and b > a
        ticks = ProcessRecord.of(spin.pid).cpu_ticks()
        assert ticks is not None and abs(ticks * 10**9 // os.sysconf("SC_CLK_TCK") - b) < 10**9 // 2
        spin.send_signal(signal.SIGSTOP)
        time.sleep(0.05)
        c = cpu_clock_ns(spin.pid)
        time.sleep(0.1)
        assert cpu_clock_ns(spin.pid) == c
    finally:
        spin.kill()
        spin.wait()
    assert cpu_clock_ns(spin.pid) is None
