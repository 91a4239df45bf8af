"""Heartbeats over real UDP sockets on loopback, time driven by an injected clock.

A forger (a plain UDP socket that encodes heartbeats itself) plays the peer
where a test needs exact control: one link only, a wrong key, a replay.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import socket
import stat
import time
from dataclasses import replace
from pathlib import Path

import pytest

from coserver.controller.heartbeat import (
    KEY_ID_LEN,
    MAC_LEN,
    MAGIC,
    EventKind,
    Heartbeat,
    HeartbeatError,
    Heartbeats,
    LinkSpec,
    load_or_create_key,
)
from coserver.site.keygen import key_id

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def free_udp_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def link_pair(name: str, host_a: str, host_b: str) -> tuple[LinkSpec, LinkSpec]:
    """The same link as seen from side A and from side B."""
    pa, pb = free_udp_port(host_a), free_udp_port(host_b)
    return (LinkSpec(name, (host_a, pa), (host_b, pb)), LinkSpec(name, (host_b, pb), (host_a, pa)))


async def until(cond, timeout: float = 2.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        if loop.time() > end:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.002)


def drain(hb: Heartbeats) -> list[tuple[EventKind, str | None]]:
    out = []
    while not hb.events.empty():
        ev = hb.events.get_nowait()
        out.append((ev.kind, ev.link))
    return out


class Forger:
    """Plays peer node 'cs1' towards side B by sending hand-made heartbeats.

    With a clock, each message's ts is that clock's time (as a live sender's is) unless given."""

    def __init__(self, b_links: list[LinkSpec], clock: FakeClock | None = None) -> None:
        self.to = {spec.name: spec.local for spec in b_links}
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.clock = clock
        self.base = Heartbeat(pair="ft1", link="sync1", node="cs1", generation=100, seq=1,
                              ts=clock() if clock else 0.0, epoch=4, role="primary", state="protected",
                              qemu="alive", checkpoints=17, sent=1.0)

    def send(self, link: str, key: bytes = KEY, dest: str | None = None, **changes) -> bytes:
        if self.clock is not None and "ts" not in changes:
            changes["ts"] = self.clock()
        data = replace(self.base, link=link, **changes).encode(key)
        self.sock.sendto(data, self.to[dest or link])
        return data

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def links() -> dict[str, tuple[LinkSpec, LinkSpec]]:
    # Two links with their own addresses, as two /30s would have.
    return {"sync1": link_pair("sync1", "127.0.0.1", "127.0.0.2"),
            "sync2": link_pair("sync2", "127.0.0.3", "127.0.0.4")}


def side_b(links, clock, **kw) -> Heartbeats:
    return Heartbeats(pair="ft1", node="cs2", key=KEY, links=[links["sync1"][1], links["sync2"][1]],
                      clock=clock, **kw)


def test_both_sides_see_each_other_with_the_payload(arun, links):
    clock = FakeClock()

    async def main():
        a = Heartbeats(pair="ft1", node="cs1", key=KEY, links=[links["sync1"][0], links["sync2"][0]],
                       clock=clock)
        b = side_b(links, clock)
        await a.open()
        await b.open()
        try:
            assert not b.peer_alive() and b.peer_state() is None
            a.update_local(epoch=7, role="primary", state="protected", qemu="alive", checkpoints=42)
            a.send_once()
            b.send_once()
            await until(lambda: b.peer_alive() and a.peer_alive() and
                        all(b.link_alive(n) for n in ("sync1", "sync2")))
            peer = b.peer_state()
            assert (peer.node, peer.epoch, peer.role, peer.state, peer.qemu, peer.checkpoints) == \
                ("cs1", 7, "primary", "protected", "alive", 42)
            assert peer.generation == a.generation and peer.pair == "ft1"
            evs = drain(b)
            assert sorted(k for k, _ in evs) == sorted([EventKind.LINK_UP, EventKind.LINK_UP,
                                                        EventKind.PEER_UP])
            assert {link for k, link in evs if k == EventKind.LINK_UP} == {"sync1", "sync2"}
            assert b.stats()["sync1"]["accepted"] == 1 and a.stats()["sync1"]["sent"] == 1
        finally:
            await a.close()
            await b.close()

    arun(main())


def test_link_times_out_alone_then_peer_is_lost(arun, links):
    clock = FakeClock()

    async def main():
        b = side_b(links, clock)
        await b.open()
        f = Forger([links["sync1"][1], links["sync2"][1]], clock)
        try:
            f.send("sync1", seq=1)
            f.send("sync2", seq=2)
            await until(lambda: b.stats()["sync2"].get("accepted") == 1)
            drain(b)
            clock.t += 0.6
            f.send("sync2", seq=3)  # only link 2 keeps talking
            await until(lambda: b.stats()["sync2"].get("accepted") == 2)
            clock.t += 0.5  # link 1 silent 1.1 s, link 2 0.5 s
            assert not b.link_alive("sync1") and b.link_alive("sync2") and b.peer_alive()
            assert [(e.kind, e.link) for e in b.check()] == [(EventKind.LINK_DOWN, "sync1")]
            assert b.check() == []  # reported once
            clock.t += 0.5  # exactly timeout after link 2's last message: still alive
            assert b.link_alive("sync2") and b.check() == []
            clock.t += 0.01
            assert [(e.kind, e.link) for e in b.check()] == [(EventKind.LINK_DOWN, "sync2"),
                                                               (EventKind.PEER_LOST, None)]
            assert not b.peer_alive()
            assert b.peer_state().checkpoints == 17  # the last word stays readable
            drain(b)
            f.send("sync1", seq=4)
            await until(lambda: b.link_alive("sync1"))
            assert drain(b) == [(EventKind.LINK_UP, "sync1"), (EventKind.PEER_UP, "sync1")]
        finally:
            f.close()
            await b.close()

    arun(main())


def test_bad_mac_wrong_pair_wrong_link_own_and_garbage_are_dropped_and_counted(arun, links):
    clock = FakeClock()

    async def main():
        b = side_b(links, clock)
        await b.open()
        f = Forger([links["sync1"][1], links["sync2"][1]], clock)
        try:
            f.send("sync1", key=OTHER_KEY, seq=1)
            f.send("sync1", pair="ft2", seq=2)
            f.send("sync2", dest="sync1", seq=3)  # says link 2, arrived on link 1
            f.send("sync1", node="cs2", seq=4)  # claims to be us
            f.sock.sendto(b"hello", links["sync1"][1].local)
            data = f.base.encode(KEY)
            tampered = data[:-5] + b"9" + data[-4:]  # flip a byte of the payload
            f.sock.sendto(tampered, links["sync1"][1].local)
            await until(lambda: b.stats()["sync1"].get("received") == 6)
            c = b.stats()["sync1"]
            assert (c["bad_mac"], c["wrong_pair"], c["wrong_link"], c["own"], c["malformed"]) == (2, 1, 1, 1, 1)
            assert "accepted" not in c
            assert not b.link_alive("sync1") and not b.peer_alive() and b.peer_state() is None
            assert drain(b) == []
        finally:
            f.close()
            await b.close()

    arun(main())


def test_replays_are_dropped_new_seq_accepted(arun, links):
    clock = FakeClock()

    async def main():
        b = side_b(links, clock)
        await b.open()
        f = Forger([links["sync1"][1], links["sync2"][1]], clock)
        try:
            first = f.send("sync1", seq=5)
            await until(lambda: b.stats()["sync1"].get("accepted") == 1)
            clock.t += 0.9
            f.sock.sendto(first, links["sync1"][1].local)  # the same datagram again
            f.send("sync1", seq=4, epoch=99)  # older seq, valid MAC
            await until(lambda: b.stats()["sync1"].get("replay") == 2)
            clock.t += 0.2
            # The replays did not refresh the link: it timed out 1.1 s after seq 5.
            assert not b.link_alive("sync1")
            assert b.peer_state().epoch == 4
            f.send("sync1", seq=6)
            await until(lambda: b.stats()["sync1"].get("accepted") == 2)
            assert b.link_alive("sync1")
        finally:
            f.close()
            await b.close()

    arun(main())


def test_peer_restart_is_accepted_and_late_old_datagrams_do_not_win(arun, links):
    clock = FakeClock()

    async def main():
        b = side_b(links, clock)
        await b.open()
        f = Forger([links["sync1"][1], links["sync2"][1]], clock)
        try:
            f.send("sync1", seq=900)
            await until(lambda: b.stats()["sync1"].get("accepted") == 1)
            drain(b)
            # The peer controller restarts: a higher generation, seq from 1, accepted at once.
            f.send("sync1", generation=101, seq=1, epoch=5)
            await until(lambda: b.stats()["sync1"].get("accepted") == 2)
            assert b.peer_state().generation == 101 and b.peer_state().epoch == 5
            assert (EventKind.PEER_RESTARTED, "sync1") in drain(b)
            # A late datagram of the old generation: dropped, peer view unchanged.
            f.send("sync1", seq=901)
            await until(lambda: b.stats()["sync1"].get("replay") == 1)
            assert b.peer_state().generation == 101
            # ... on the other link too, which never heard the new generation: the peer's generation counts.
            f.send("sync2", seq=902)
            await until(lambda: b.stats()["sync2"].get("replay") == 1)
            assert b.peer_state().generation == 101 and not b.link_alive("sync2")
        finally:
            f.close()
            await b.close()

    arun(main())


def test_running_sides_detect_a_closed_peer_within_timeout(arun, links):
    """Real time, real send loop: the figures the daemon will see (scaled down)."""

    async def main():
        kw = dict(pair="ft1", key=KEY, interval=0.02, timeout=0.2)
        a = Heartbeats(node="cs1", links=[links["sync1"][0], links["sync2"][0]], **kw)
        b = Heartbeats(node="cs2", links=[links["sync1"][1], links["sync2"][1]], **kw)
        await a.start()
        await b.start()
        try:
            await until(lambda: a.peer_alive() and b.peer_alive(), timeout=1.0)
            drain(b)
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            await a.close()
            while True:
                ev = await asyncio.wait_for(b.events.get(), 2.0)
                if ev.kind == EventKind.PEER_LOST:
                    break
            took = loop.time() - t0
            assert 0.2 - 0.03 <= took <= 0.2 + 0.25, took
        finally:
            await a.close()
            await b.close()

    arun(main())


def test_bind_failure_is_one_line_and_names_the_link(arun):
    async def main():
        hb = Heartbeats(pair="ft1", node="cs1", key=KEY,
                        links=[LinkSpec("sync1", ("192.0.2.1", 9), ("192.0.2.2", 9))])
        with pytest.raises(HeartbeatError) as ei:
            await hb.open()
        assert "sync1" in str(ei.value) and "192.0.2.1" in str(ei.value) and "\n" not in str(ei.value)

    arun(main())


def test_bad_configuration_is_refused():
    spec = LinkSpec("sync1", ("127.0.0.1", 1), ("127.0.0.1", 2))
    with pytest.raises(HeartbeatError, match="interval"):
        Heartbeats(pair="p", node="n", key=KEY, links=[spec], interval=1.0, timeout=1.0)
    with pytest.raises(HeartbeatError, match="duplicate"):
        Heartbeats(pair="p", node="n", key=KEY, links=[spec, spec])
    with pytest.raises(HeartbeatError, match="too short"):
        Heartbeats(pair="p", node="n", key=b"short", links=[spec])


def test_key_is_created_0600_and_reused(tmp_path: Path):
    path = tmp_path / "ft1.key"
    key = load_or_create_key(path)
    assert len(key) == 32 and stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_or_create_key(path) == key
    assert load_or_create_key(tmp_path / "other.key") != key


def test_key_with_a_broad_mode_is_refused_in_one_line(tmp_path: Path):
    path = tmp_path / "ft1.key"
    load_or_create_key(path)
    os.chmod(path, 0o640)
    with pytest.raises(HeartbeatError) as ei:
        load_or_create_key(path)
    msg = str(ei.value)
    assert str(path) in msg and "0640" in msg and "\n" not in msg


def test_short_key_file_is_refused(tmp_path: Path):
    path = tmp_path / "ft1.key"
    path.write_bytes(b"1234")
    os.chmod(path, 0o600)
    with pytest.raises(HeartbeatError, match="4 bytes"):
        load_or_create_key(path)


# -- real namespaces: cutting a veth silences exactly that link --------------------------------

@pytest.fixture
def two_hosts():
    """Namespaces A and B joined by two veth pairs (two links, each its own /30); removed after."""
    from coserver.sys import netns
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    prefix = f"hbt{os.getpid() % 100000}"
    a, b = f"{prefix}a", f"{prefix}b"
    try:
        for ns in (a, b):
            netns.create(ns)
        for i in (1, 2):
            netns.add_veth(a, f"{prefix}a{i}", b, f"{prefix}b{i}")
            netns.set_address(a, f"{prefix}a{i}", f"10.231.{i}.1/30")
            netns.set_address(b, f"{prefix}b{i}", f"10.231.{i}.2/30")
        yield netns, prefix, a, b
    finally:
        for ns in (a, b):
            netns.delete(ns)
        assert not netns.list_namespaces(prefix)


@pytest.mark.netns
def test_in_namespaces_one_cut_link_is_reported_alone_two_lose_the_peer_healing_brings_it_back(
        arun, two_hosts):
    netns, prefix, ns_a, ns_b = two_hosts
    port = 7500

    def spec(side: str, other: str, i: int) -> LinkSpec:
        me, peer = (1, 2) if side == "a" else (2, 1)
        return LinkSpec(f"sync{i}", (f"10.231.{i}.{me}", port), (f"10.231.{i}.{peer}", port),
                        device=f"{prefix}{side}{i}")

    async def main() -> dict[str, float]:
        loop = asyncio.get_running_loop()
        a = Heartbeats(pair="ft1", node="cs1", key=KEY, links=[spec("a", "b", 1), spec("a", "b", 2)],
                       netns=ns_a)
        b = Heartbeats(pair="ft1", node="cs2", key=KEY, links=[spec("b", "a", 1), spec("b", "a", 2)],
                       netns=ns_b)

        async def set_link(i: int, up: bool) -> float:
            # off the event loop: `ip` must not stall the heartbeats we are measuring
            await asyncio.to_thread(netns.link_up, ns_a, f"{prefix}a{i}", up)
            return loop.time()

        async def wait_for(hb: Heartbeats, kind: EventKind, link: str | None, limit: float) -> float:
            while True:
                ev = await asyncio.wait_for(hb.events.get(), limit)
                if ev.kind == kind and ev.link == link:
                    return loop.time()

        figures: dict[str, float] = {}
        await a.start()
        await b.start()
        try:
            await until(lambda: all(b.links_alive().values()) and all(a.links_alive().values()), 3.0)
            drain(a), drain(b)
            margin = 0.4
            limit = b.timeout + b.interval + margin

            t_cut = await set_link(1, False)
            figures["link1_down_b"] = await wait_for(b, EventKind.LINK_DOWN, "sync1", limit) - t_cut
            figures["link1_down_a"] = await wait_for(a, EventKind.LINK_DOWN, "sync1", limit) - t_cut
            assert b.peer_alive() and a.peer_alive() and b.link_alive("sync2")
            assert EventKind.PEER_LOST not in [k for k, _ in drain(a) + drain(b)]

            t_cut = await set_link(2, False)
            figures["peer_lost_b"] = await wait_for(b, EventKind.PEER_LOST, None, limit) - t_cut
            figures["peer_lost_a"] = await wait_for(a, EventKind.PEER_LOST, None, limit) - t_cut
            assert not b.peer_alive() and not a.peer_alive()

            t_heal = await set_link(2, True)
            figures["peer_back_b"] = await wait_for(b, EventKind.PEER_UP, "sync2", 3.0) - t_heal
            assert b.link_alive("sync2") and not b.link_alive("sync1")
            t_heal = await set_link(1, True)
            figures["link1_back_b"] = await wait_for(b, EventKind.LINK_UP, "sync1", 3.0) - t_heal
            await until(lambda: all(a.links_alive().values()), 3.0)
            assert b.stats()["sync1"].get("bad_mac", 0) == 0 and b.stats()["sync1"].get("replay", 0) == 0
        finally:
            await a.close()
            await b.close()
        return figures

    figures = arun(main(), timeout=30)
    print("heartbeat figures (s):", {k: round(v, 3) for k, v in figures.items()})
    for k in ("link1_down_b", "link1_down_a", "peer_lost_b", "peer_lost_a"):
        # at least timeout - interval (last datagram may have left just before the cut)
        assert 1.0 - 0.1 - 0.02 <= figures[k] <= 1.0 + 0.1 + 0.4, figures
    assert figures["peer_back_b"] < 1.0 and figures["link1_back_b"] < 1.0, figures


def test_wait_raises_what_killed_the_send_task_and_ends_quietly_on_close(arun, links):
    """HostController watches its heartbeats through wait(): a dead send task must not go unnoticed."""
    clock = FakeClock()

    async def main() -> None:
        hb = side_b(links, clock)
        await hb.start()

        def broken() -> None:
            raise RuntimeError("test: sending broke")

        hb.send_once = broken  # type: ignore[method-assign]
        with pytest.raises(RuntimeError, match="sending broke"):
            await asyncio.wait_for(hb.wait(), 2.0)
        await hb.close()                    # the sockets close although the task died
        await asyncio.sleep(0.01)           # (transports close on the next loop turn)

        hb = side_b(links, clock)
        await hb.start()
        waiter = asyncio.create_task(hb.wait())
        await asyncio.sleep(0.05)
        waiter.cancel()                     # the watcher going away leaves the heartbeats running
        await asyncio.gather(waiter, return_exceptions=True)
        assert hb._task is not None and not hb._task.done()
        waiter = asyncio.create_task(hb.wait())
        await asyncio.sleep(0)
        await hb.close()                    # close() ends the watcher as cancelled, not failed
        await asyncio.gather(waiter, return_exceptions=True)
        assert waiter.cancelled()

    arun(main())


def test_each_link_measures_its_round_trip_on_one_clock(arun, links):
    """A sends at t, B answers 0.3 s later echoing A's ts and its 0.3 s hold; A hears that 0.5 s
    after its send: 0.2 s on the wire both ways, whatever B's clock says. A down link shows none."""
    clock_a, clock_b = FakeClock(1000.0), FakeClock(77.0)   # unrelated clocks: only A's own is used

    async def main():
        a = Heartbeats(pair="ft1", node="cs1", key=KEY, links=[links["sync1"][0], links["sync2"][0]],
                       clock=clock_a)
        b = side_b(links, clock_b)
        await a.open()
        await b.open()
        try:
            assert a.rtts() == {"sync1": None, "sync2": None}
            a.send_once()                      # A's ts = 1000.0
            await until(lambda: b.link_alive("sync1") and b.link_alive("sync2"))
            clock_b.t += 0.3                   # B holds it 0.3 s before answering
            b.send_once()
            clock_a.t += 0.5
            await until(lambda: a.link_alive("sync1") and a.link_alive("sync2"))
            assert a.rtts() == {"sync1": pytest.approx(0.2), "sync2": pytest.approx(0.2)}
            assert b.rtts() == {"sync1": None, "sync2": None}   # B has no echo of its own yet
            clock_a.t += a.timeout + 0.1       # nothing heard since: no figure for a dead link
            assert a.rtts() == {"sync1": None, "sync2": None}
        finally:
            await a.close()
            await b.close()

    arun(main())


def test_a_peer_one_release_older_without_the_echo_is_still_heard(arun, links):
    clock = FakeClock()

    async def main():
        b = side_b(links, clock)
        await b.open()
        forger = Forger([links["sync1"][1], links["sync2"][1]], clock)
        try:
            data = forger.send("sync1")
            assert b"echo_ts" in data   # the dataclass sends it: strip it as an older peer would
            head = len(MAGIC) + KEY_ID_LEN + MAC_LEN
            obj = json.loads(data[head:])
            del obj["echo_ts"], obj["echo_held"]
            obj["seq"], obj["link"] = 2, "sync2"
            payload = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
            kid = key_id(KEY).encode()
            old = MAGIC + kid + hmac.new(KEY, MAGIC + kid + payload, hashlib.sha256).digest() + payload
            forger.sock.sendto(old, forger.to["sync2"])
            await until(lambda: b.link_alive("sync1") and b.link_alive("sync2"))
            assert b.stats()["sync2"]["accepted"] == 1
        finally:
            forger.close()
            await b.close()

    arun(main())


def test_a_status_change_goes_out_at_once_a_checkpoint_count_waits_for_the_round(arun, links):
    """Once started, what the peer decides on (state, role, epoch, QEMU) is sent in an extra round when it
    changes, not up to one interval later; the checkpoint counter changes all the time and waits."""
    async def main():
        a = Heartbeats(pair="ft1", node="cs1", key=KEY, links=[links["sync1"][0]], interval=0.5, timeout=2.0)
        await a.start()
        try:
            await until(lambda: a.stats()["sync1"].get("sent", 0) >= 1)   # the first round, at start
            # no await from here on: the periodic rounds cannot run in between
            sent = a.stats()["sync1"]["sent"]
            a.update_local(checkpoints=5)
            assert a.stats()["sync1"]["sent"] == sent
            a.update_local(state="protected", qemu="alive", checkpoints=5)
            assert a.stats()["sync1"]["sent"] == sent + 1
            a.update_local(state="protected", qemu="alive", checkpoints=5)   # unchanged: nothing
            assert a.stats()["sync1"]["sent"] == sent + 1
        finally:
            await a.close()

    arun(main())


def test_on_change_fires_on_the_peers_new_word_and_at_its_silence_deadline_not_the_round(arun, links):
    """The daemon decides at once on what the peer says or on its silence: on_change is called when a
    status field changes (not the checkpoint counter), and a peer gone silent is found by a timer at
    its deadline (last heartbeat + timeout), not only at a round (here no rounds run: open() only)."""
    async def main():
        b = Heartbeats(pair="ft1", node="cs2", key=KEY, links=[links["sync1"][1]], interval=0.1, timeout=0.3)
        calls: list[float] = []
        loop = asyncio.get_running_loop()
        b.on_change = lambda: calls.append(loop.time())
        forger = Forger([links["sync1"][1]])
        await b.open()
        try:
            # the peer's ts must be fresh on b's clock (time.monotonic): a live sender's is
            forger.send("sync1", ts=time.monotonic())
            await until(lambda: b.peer_alive())
            assert calls, "the first word of a peer (link and peer up) wakes the daemon"
            calls.clear()
            forger.send("sync1", seq=2, ts=time.monotonic(), checkpoints=18)
            await until(lambda: b.stats()["sync1"].get("accepted", 0) >= 2)
            assert calls == []          # a counter: no reason to decide again
            forger.send("sync1", seq=3, ts=time.monotonic(), qemu="dead")
            await until(lambda: bool(calls))
            assert b.peer_state().qemu == "dead"
            calls.clear()
            last = loop.time()
            await until(lambda: not b.peer_alive() and bool(calls), timeout=1.5)
            took = calls[0] - last
            assert 0.3 - 0.02 <= took <= 0.3 + 0.15, took   # at the deadline, with no round to find it
            assert (EventKind.PEER_LOST, None) in drain(b)
        finally:
            forger.close()
            await b.close()

    arun(main())
