"""The peer's control channel (controller.remote): real TCP listeners on loopback, real HMAC.

A good request is answered by the handler; a bad MAC, a stale timestamp, a replayed nonce or
junk is refused with one line and never reaches the handler; a reply that does not answer the
request (a recorded one) or is not made with the pair's key is refused by the client.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from coserver.controller import remote
from coserver.controller.control import recv_line
from coserver.controller.errors import ControlError

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))


class Recorder:
    """A control handler that answers every request and remembers it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.seen: list[dict[str, Any]] = []

    async def __call__(self, request: dict[str, Any]) -> dict[str, Any]:
        self.seen.append(request)
        if request.get("cmd") == "boom":
            raise ValueError("no such thing")
        return {"ok": True, "host": self.name, "cmd": request.get("cmd")}


def _port(server: asyncio.Server) -> int:
    return int(server.sockets[0].getsockname()[1])


def _raw(port: int, line: bytes) -> bytes:
    """Send one raw line, return the raw reply line."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(line)
        return recv_line(s)


async def _pair(key2: bytes = KEY) -> tuple[asyncio.Server, asyncio.Server, Recorder, Recorder]:
    """Two listeners, as the two CoServers' controllers: cs1 on 127.0.0.1, cs2 on 127.0.0.2."""
    h1, h2 = Recorder("cs1"), Recorder("cs2")
    s1 = await remote.serve("127.0.0.1", 0, KEY, h1)
    s2 = await remote.serve("127.0.0.2", 0, key2, h2)
    return s1, s2, h1, h2


def test_a_good_request_is_answered_by_each_listener(arun: Callable[..., Any]) -> None:
    async def go() -> None:
        s1, s2, h1, h2 = await _pair()
        try:
            r1 = await asyncio.to_thread(remote.ask, "127.0.0.1", _port(s1), KEY, {"cmd": "status"})
            r2 = await asyncio.to_thread(remote.ask, "127.0.0.2", _port(s2), KEY, {"cmd": "rejoin"})
            assert r1 == {"ok": True, "host": "cs1", "cmd": "status"}
            assert r2 == {"ok": True, "host": "cs2", "cmd": "rejoin"}
            assert h1.seen == [{"cmd": "status"}] and h2.seen == [{"cmd": "rejoin"}]
            # the handler's own refusal comes back as one line
            with pytest.raises(ControlError, match=r"^127\.0\.0\.1:\d+: no such thing$"):
                await asyncio.to_thread(remote.ask, "127.0.0.1", _port(s1), KEY, {"cmd": "boom"})
        finally:
            s1.close()
            s2.close()

    arun(go())


def _refusal(reply: bytes) -> str:
    body = remote.unseal(KEY, reply, "reply")["body"]
    assert body["ok"] is False
    error = str(body["error"])
    assert "\n" not in error and "Traceback" not in error
    return error


def test_bad_mac_stale_replayed_and_junk_are_refused_with_one_line(arun: Callable[..., Any]) -> None:
    async def go() -> None:
        s1, s2, h1, _ = await _pair()
        port = _port(s1)
        try:
            good = remote.seal(KEY, "request", {"cmd": "status"})
            # a bad MAC: one hex digit of the MAC changed
            i = len(remote.MAGIC)
            forged = good[:i] + (b"0" if good[i:i + 1] != b"0" else b"1") + good[i + 1:]
            assert _refusal(await asyncio.to_thread(_raw, port, forged)).startswith("refused: bad MAC")
            # the body changed after sealing: the MAC no longer matches either
            tampered = good.replace(b'"status"', b'"relinquish"')
            assert _refusal(await asyncio.to_thread(_raw, port, tampered)).startswith("refused: bad MAC")
            # stale and future timestamps
            old = remote.seal(KEY, "request", {"cmd": "status"}, ts=time.time() - 31)
            assert _refusal(await asyncio.to_thread(_raw, port, old)).startswith("refused: stale request")
            ahead = remote.seal(KEY, "request", {"cmd": "status"}, ts=time.time() + 120)
            assert "ahead of" in _refusal(await asyncio.to_thread(_raw, port, ahead))
            # a reply sent as a request (reflection) is not a request
            reflected = remote.seal(KEY, "reply", {"cmd": "status"})
            assert "malformed" in _refusal(await asyncio.to_thread(_raw, port, reflected))
            # junk
            assert "not a coserver control message" in _refusal(await asyncio.to_thread(_raw, port, b"hello\n"))
            assert h1.seen == []   # nothing refused reached the handler
            # replay: the first copy is answered, the second refused
            first = remote.unseal(KEY, await asyncio.to_thread(_raw, port, good), "reply")
            assert first["body"]["ok"] is True
            assert _refusal(await asyncio.to_thread(_raw, port, good)) == \
                "refused: replayed request: its nonce was already used"
            assert h1.seen == [{"cmd": "status"}]
            # the listener still serves after all that
            assert (await asyncio.to_thread(remote.ask, "127.0.0.1", port, KEY, {"cmd": "status"}))["ok"]
        finally:
            s1.close()
            s2.close()

    arun(go())


def test_another_pairs_key_is_refused_both_ways(arun: Callable[..., Any]) -> None:
    async def go() -> None:
        s1, s2, _, h2 = await _pair(key2=OTHER_KEY)
        try:
            with pytest.raises(ControlError) as err:
                await asyncio.to_thread(remote.ask, "127.0.0.2", _port(s2), KEY, {"cmd": "stop"})
            line = str(err.value)
            assert "\n" not in line and "pair's key" in line
            assert h2.seen == []
        finally:
            s1.close()
            s2.close()

    arun(go())


def test_a_recorded_reply_does_not_answer_a_new_request(arun: Callable[..., Any]) -> None:
    """A listener that replays an old (authentic) reply: the client refuses it."""
    recorded = remote.seal(KEY, "reply", {"ok": True, "status": {"state": "protected"}}, re="0" * 32)

    async def replayer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        writer.write(recorded)
        await writer.drain()
        writer.close()

    async def go() -> None:
        server = await asyncio.start_server(replayer, "127.0.0.1", 0)
        try:
            with pytest.raises(ControlError, match="does not answer this request"):
                await asyncio.to_thread(remote.ask, "127.0.0.1", _port(server), KEY, {"cmd": "status"})
        finally:
            server.close()

    arun(go())


def test_nobody_listening_is_one_line() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]   # bound, not listening: connection refused
        with pytest.raises(ControlError, match=rf"^127\.0\.0\.1:{port}: ") as err:
            remote.ask("127.0.0.1", port, KEY, {"cmd": "status"}, timeout=2)
    assert "\n" not in str(err.value)


def test_nonces_are_forgotten_once_their_timestamp_leaves_the_window() -> None:
    nonces = remote.Nonces(window=30, limit=3)
    for i in range(3):
        nonces.check({"ts": 1000.0, "nonce": f"n{i}"}, now=1000.0)
    with pytest.raises(remote.Refused, match="too many"):
        nonces.check({"ts": 1000.0, "nonce": "n3"}, now=1000.0)
    nonces.check({"ts": 1031.0, "nonce": "n4"}, now=1031.0)   # the first three expired at 1030
    with pytest.raises(remote.Refused, match="stale"):
        nonces.check({"ts": 1000.0, "nonce": "n0"}, now=1031.0)


def test_serve_configured_is_off_without_config_and_survives_an_address_it_cannot_bind(
        arun: Callable[..., Any]) -> None:
    async def handler(request: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True}

    async def go() -> None:
        assert await remote.serve_configured({}, KEY, handler) is None
        # 192.0.2.1 (TEST-NET-1) is no address of this machine: logged, None, no exception
        assert await remote.serve_configured({"address": "192.0.2.1", "port": 7405}, KEY, handler) is None

    arun(go())


def test_the_daemon_serves_its_handler_on_tcp_when_configured(tmp_path: Path, arun: Callable[..., Any]) -> None:
    """HostController.run() with remote_control: the same handler answers over TCP; stop() closes it."""
    from coserver.controller.daemon import HostController
    from coserver.controller.journal import Journal

    from .test_daemon import FakeHeartbeats, FakeWitness, config

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    cfg = config(tmp_path, remote_control={"address": "127.0.0.1", "port": port})
    controller = HostController(cfg, journal=Journal(Path(cfg.journal_file)), witness=FakeWitness(None),  # type: ignore[arg-type]
                                heartbeats=FakeHeartbeats(["sync1"]), key=KEY)  # type: ignore[arg-type]

    async def go() -> None:
        task = asyncio.create_task(controller.run())
        for _ in range(200):
            if Path(cfg.control_socket).exists():
                break
            await asyncio.sleep(0.02)
        try:
            reply = await asyncio.to_thread(remote.ask, "127.0.0.1", port, KEY, {"cmd": "status"})
            assert reply["ok"] and reply["status"]["host"] == "cs1" and reply["status"]["ftserver"] == "journal"
        finally:
            controller.stop()
            await task
        with pytest.raises(ControlError):
            await asyncio.to_thread(remote.ask, "127.0.0.1", port, KEY, {"cmd": "status"}, 1.0)

    arun(go())
