"""QmpSession against a real QEMU (TCG): commands, errors, events, deadlines, close."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from coserver.machine.launcher import QemuProcess
from coserver.qmp import (
    QmpCommandError,
    QmpConnectError,
    QmpDisconnected,
    QmpEventTimeout,
    QmpSession,
    QmpTimeout,
)

pytestmark = [pytest.mark.qemu, pytest.mark.timeout(60)]


def test_connect_retries_until_socket_appears(qemu_args, tmp_path, arun):
    proc = QemuProcess("vm", qemu_args, tmp_path)

    async def main() -> float:
        t0 = time.monotonic()
        connecting = asyncio.create_task(
            QmpSession.connect(proc.qmp_path, name="t", connect_timeout=20))
        await asyncio.sleep(0.7)
        assert not connecting.done(), "connect gave up (or succeeded) before QEMU existed"
        assert not proc.qmp_path.exists()
        await asyncio.to_thread(proc.start)
        async with await connecting as s:
            assert (await s.execute("query-status"))["status"] == "running"
        return time.monotonic() - t0

    try:
        assert arun(main()) >= 0.7
    finally:
        proc.stop(timeout=4)


def test_connect_gives_up_in_bounded_time(tmp_path, arun):
    missing = tmp_path / "missing.sock"
    t0 = time.monotonic()
    with pytest.raises(QmpConnectError, match="No such file") as err:
        arun(QmpSession.connect(missing, name="t", connect_timeout=0.6))
    assert 0.5 <= time.monotonic() - t0 < 1.5
    assert str(missing) in str(err.value) and "\n" not in str(err.value)

    # A socket file nobody listens on (QEMU died, file left behind): refused, retried, bounded.
    stale = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(stale))
        t0 = time.monotonic()
        with pytest.raises(QmpConnectError, match="refused"):
            arun(QmpSession.connect(stale, name="t", connect_timeout=0.6))
        assert 0.5 <= time.monotonic() - t0 < 1.5


def test_query_status_and_hmp(qemu_proc, qemu, arun):
    async def main() -> None:
        async with await QmpSession.connect(qemu_proc.qmp_path, name="t") as s:
            status = await s.execute("query-status", deadline=2)
            assert status["status"] == "running" and status["running"] is True
            out = await s.hmp("info version", deadline=2)
            assert out.startswith(qemu.version), out
            assert s.healthy
    arun(main())


def test_command_error_carries_class(qemu_proc, arun):
    async def main() -> None:
        async with await QmpSession.connect(qemu_proc.qmp_path, name="t") as s:
            with pytest.raises(QmpCommandError) as err:
                await s.execute("no-such-command")
            assert err.value.error_class == "CommandNotFound"
            assert err.value.command == "no-such-command"
            assert "no-such-command" in str(err.value) and "\n" not in str(err.value)
            with pytest.raises(QmpCommandError) as err:
                await s.execute("query-status", {"bogus": 1})
            assert err.value.error_class == "GenericError"
            assert s.healthy  # an error answer is not a hang
            assert (await s.execute("query-status"))["running"] is True
    arun(main())


def test_events_stop_then_cont(qemu_proc, arun):
    async def main() -> None:
        async with await QmpSession.connect(qemu_proc.qmp_path, name="t") as s:
            with s.listen("STOP", "RESUME") as events:
                await s.execute("stop")
                await s.execute("cont")
                first = await events.wait(deadline=3)
                second = await events.wait(deadline=3)
            assert [first["event"], second["event"]] == ["STOP", "RESUME"]
            assert [e["event"] for e in events.history] == ["STOP", "RESUME"]

            # async iteration, like qemu.qmp's EventListener
            async with s.listen("STOP") as stops:
                await s.execute("stop")
                async for event in stops:
                    assert event["event"] == "STOP"
                    break
            await s.execute("cont")

            # wait_event with a predicate, fed by a later command
            waiter = asyncio.create_task(s.wait_event(
                "RESUME", deadline=3, predicate=lambda e: "timestamp" in e))
            await asyncio.sleep(0.1)
            await s.execute("stop")
            await s.execute("cont")
            assert (await waiter)["event"] == "RESUME"

            # an event that never comes: bounded, and not a hang
            t0 = time.monotonic()
            with pytest.raises(QmpEventTimeout, match="SHUTDOWN"):
                await s.wait_event("SHUTDOWN", deadline=0.3)
            assert time.monotonic() - t0 < 1.0
            assert s.healthy
    arun(main())


def test_sigstopped_qemu_times_out_and_close_is_bounded(qemu_proc, arun):
    async def main() -> None:
        s = await QmpSession.connect(qemu_proc.qmp_path, name="t")
        assert s.healthy
        qemu_proc.pause()
        try:
            t0 = time.monotonic()
            with pytest.raises(QmpTimeout) as err:
                await s.execute("query-status", deadline=1.0)
            assert time.monotonic() - t0 < 1.0 + 1.0
            assert (err.value.command, err.value.deadline, err.value.path) == (
                "query-status", 1.0, str(qemu_proc.qmp_path))
            assert "missed its 1.0 s deadline" in str(err.value)
            assert not s.healthy and s.connected
            t0 = time.monotonic()
            await s.close(timeout=1.0)
            assert time.monotonic() - t0 < 2.5
            with pytest.raises(QmpDisconnected):
                await s.execute("query-status")
        finally:
            qemu_proc.resume()
        async with await QmpSession.connect(qemu_proc.qmp_path, name="t2",
                                            connect_timeout=5) as s2:
            assert (await s2.execute("query-status", deadline=3))["running"] is True
            assert s2.healthy
    arun(main())


def test_close_bounded_when_qemu_does_not_read(qemu_proc, arun):
    """A hung QEMU with our unsent data piled up: a polite disconnect would wait forever."""
    async def main() -> None:
        s = await QmpSession.connect(qemu_proc.qmp_path, name="t")
        qemu_proc.pause()
        try:
            with pytest.raises(QmpTimeout):
                await s.hmp("x" * (8 << 20), deadline=0.5)
            t0 = time.monotonic()
            await s.close(timeout=0.5)
            assert time.monotonic() - t0 < 0.5 + 1.5
            assert not s.connected
        finally:
            qemu_proc.resume()
    t0 = time.monotonic()
    arun(main(), timeout=20)
    # including asyncio.run's shutdown: nothing left behind still waits on the socket
    assert time.monotonic() - t0 < 5


def test_qemu_death_mid_command_is_disconnected(qemu_proc, arun):
    async def main() -> None:
        async with await QmpSession.connect(qemu_proc.qmp_path, name="t") as s:
            events = s.listen("SHUTDOWN")
            qemu_proc.pause()
            pending = asyncio.create_task(s.execute("query-status", deadline=10))
            await asyncio.sleep(0.3)
            t0 = time.monotonic()
            assert qemu_proc.kill()  # SIGKILL
            with pytest.raises(QmpDisconnected) as err:
                await pending
            assert time.monotonic() - t0 < 3
            assert err.value.command == "query-status"
            assert not s.connected and not s.healthy
            with pytest.raises(QmpDisconnected):
                await events.wait(deadline=5)
            with pytest.raises(QmpDisconnected):
                await s.execute("query-status")
    arun(main())


def test_close_unregisters_listeners_and_refuses_commands(qemu_proc, arun):
    """Closing a session unregisters its listeners and a closed session refuses commands."""
    async def main() -> None:
        s = await QmpSession.connect(qemu_proc.qmp_path, name="t")
        listener = s.listen()
        await s.execute("stop")
        await s.execute("cont")
        await asyncio.sleep(0.1)
        assert not listener.empty()
        await s.close()
        assert listener.empty()  # cleared on unregister, as in qemu.qmp
        await s.close()  # idempotent
        with pytest.raises(QmpDisconnected, match="session closed"):
            await s.execute("query-status")
    arun(main())
