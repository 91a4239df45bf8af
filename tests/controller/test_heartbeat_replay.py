"""Heartbeat replays, restarts and the two-key window (issue 14), over loopback UDP with an injected clock.

The bug report these reproduce: "an old datagram with a valid MAC replayed after a 1.5 s silence made
a silent peer 'alive', replaced its reported epoch 7 -> 3, and retired the real instance so its next
real heartbeats were dropped as replays."
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
from dataclasses import replace
from pathlib import Path

import pytest

from coserver.controller.hbstate import HeartbeatState
from coserver.controller.heartbeat import OLD_MAGIC, EventKind, HeartbeatError, Heartbeats, LinkSpec
from coserver.site.keygen import KeyRing

from .test_heartbeat import KEY, OTHER_KEY, FakeClock, Forger, drain, link_pair, side_b, until

NEW_KEY = bytes(range(2, 34))


@pytest.fixture
def links() -> dict[str, tuple[LinkSpec, LinkSpec]]:
    """Two links with their own loopback addresses (each side's view of each link)."""
    return {"sync1": link_pair("sync1", "127.0.0.1", "127.0.0.2"),
            "sync2": link_pair("sync2", "127.0.0.3", "127.0.0.4")}


def boot(name: str = "boot-1"):
    return lambda: name


async def _accepted(b: Heartbeats, link: str, n: int) -> None:
    await until(lambda: b.stats()[link].get("accepted") == n)


def test_the_bug_report_a_replay_after_a_silence_is_dropped_and_changes_nothing(arun, links, tmp_path):
    clock = FakeClock()

    async def main():
        b = side_b(links, clock, state_file=tmp_path / "b.json", boot=boot())
        await b.open()
        f = Forger([links["sync1"][1], links["sync2"][1]], clock)
        try:
            captured = f.send("sync1", seq=1, epoch=3)          # the attacker records this one
            await _accepted(b, "sync1", 1)
            clock.t += 0.1
            f.send("sync1", seq=3, epoch=7)
            await _accepted(b, "sync1", 2)
            clock.t += 1.5                                      # the peer falls silent
            assert not b.peer_alive()
            drain(b)
            f.sock.sendto(captured, links["sync1"][1].local)    # the replay, valid MAC
            await until(lambda: b.stats()["sync1"].get("replay") == 1)
            assert not b.peer_alive() and b.peer_state().epoch == 7 and drain(b) == []
            f.send("sync1", seq=5, epoch=7)                     # the real peer speaks again
            await _accepted(b, "sync1", 3)
            assert b.peer_alive() and b.peer_state().epoch == 7
        finally:
            f.close()
            await b.close()

    arun(main())


def test_a_replay_of_an_older_start_after_a_silence_never_retires_the_real_one(arun, links, tmp_path):
    """The report's exact shape: the captured datagram came from the peer's previous start."""
    clock = FakeClock()

    async def main():
        b = side_b(links, clock, state_file=tmp_path / "b.json", boot=boot())
        await b.open()
        f = Forger([links["sync1"][1], links["sync2"][1]], clock)
        try:
            captured = f.send("sync1", generation=99, seq=50, epoch=3)
            await _accepted(b, "sync1", 1)
            clock.t += 0.1
            f.send("sync1", generation=100, seq=1, epoch=7)      # the peer restarted
            await _accepted(b, "sync1", 2)
            clock.t += 1.5
            drain(b)
            f.sock.sendto(captured, links["sync1"][1].local)
            f.sock.sendto(captured.replace(b'"link":"sync1"', b'"link":"sync2"'), links["sync2"][1].local)
            await until(lambda: b.stats()["sync1"].get("replay") == 1 and b.stats()["sync2"].get("bad_mac") == 1)
            assert not b.peer_alive() and b.peer_state().epoch == 7 and b.peer_state().generation == 100
            assert drain(b) == []                                # no PEER_UP, no PEER_RESTARTED
            f.send("sync1", generation=100, seq=2, epoch=7)
            await _accepted(b, "sync1", 3)
            assert b.peer_alive()
        finally:
            f.close()
            await b.close()

    arun(main())


def test_a_datagram_held_back_longer_than_the_timeout_is_stale(arun, links, tmp_path):
    """Never delivered before (seq and ts above the last): refused for its age, by the peer's own clock."""
    clock = FakeClock()

    async def main():
        b = side_b(links, clock, state_file=tmp_path / "b.json", boot=boot())
        await b.open()
        f = Forger([links["sync1"][1], links["sync2"][1]], clock)
        try:
            f.send("sync1", seq=1)
            await _accepted(b, "sync1", 1)
            held = replace(f.base, link="sync1", seq=2, ts=clock(), epoch=3).encode(KEY)   # kept from us
            clock.t += 1.5
            f.sock.sendto(held, links["sync1"][1].local)
            await until(lambda: b.stats()["sync1"].get("stale") == 1)
            assert not b.peer_alive() and b.peer_state().epoch == 4
            clock.t += 0.5
            late = replace(f.base, link="sync2", seq=3, ts=clock() - 0.9).encode(KEY)      # late, not stale
            f.sock.sendto(late, links["sync2"][1].local)
            await _accepted(b, "sync2", 1)
        finally:
            f.close()
            await b.close()

    arun(main())


def test_timestamps_going_back_within_a_generation_are_replays(arun, links):
    clock = FakeClock()

    async def main():
        b = side_b(links, clock)
        await b.open()
        f = Forger([links["sync1"][1], links["sync2"][1]], clock)
        try:
            f.send("sync1", seq=1)
            await _accepted(b, "sync1", 1)
            f.send("sync1", seq=2, ts=clock() - 0.01)
            await until(lambda: b.stats()["sync1"].get("replay") == 1)
        finally:
            f.close()
            await b.close()

    arun(main())


def test_a_restarted_sender_is_accepted_at_once_even_if_its_wall_clock_went_back(arun, links, tmp_path):
    clock = FakeClock()
    a_links = [links["sync1"][0], links["sync2"][0]]

    async def main():
        b = side_b(links, clock, state_file=tmp_path / "b.json", boot=boot())
        a1 = Heartbeats(pair="ft1", node="cs1", key=KEY, links=a_links, clock=clock,
                        state_file=tmp_path / "a.json", wallclock=lambda: 2000.0)
        await b.open()
        await a1.open()
        try:
            a1.update_local(epoch=7)
            a1.send_once()
            await _accepted(b, "sync1", 1)
            await a1.close()
            await asyncio.sleep(0.01)                               # (transports close on the next loop turn)
            a2 = Heartbeats(pair="ft1", node="cs1", key=KEY, links=a_links, clock=clock,
                            state_file=tmp_path / "a.json", wallclock=lambda: 1000.0)   # clock stepped back
            assert a2.generation == a1.generation + 1
            await a2.open()
            drain(b)
            a2.update_local(epoch=8)
            a2.send_once()                                          # seq 1 again, same instant
            await _accepted(b, "sync1", 2)
            assert b.peer_state().generation == a2.generation and b.peer_state().epoch == 8
            assert EventKind.PEER_RESTARTED in [k for k, _ in drain(b)]
            await a2.close()
        finally:
            await a1.close()
            await b.close()

    arun(main())


def test_after_the_receiver_restarts_replays_of_before_are_still_dropped(arun, links, tmp_path):
    clock = FakeClock()
    state = tmp_path / "b.json"

    async def main():
        f = Forger([links["sync1"][1], links["sync2"][1]], clock)
        b1 = side_b(links, clock, state_file=state, boot=boot())
        await b1.open()
        try:
            old_start = f.send("sync1", generation=99, seq=7, epoch=3)
            await _accepted(b1, "sync1", 1)
            captured = f.send("sync1", generation=100, seq=1, epoch=7)
            await _accepted(b1, "sync1", 2)
        finally:
            await b1.close()
            await asyncio.sleep(0.01)
        assert stat.S_IMODE(os.stat(state).st_mode) == 0o600
        assert json.loads(state.read_text())["peers"]["cs1"]["generation"] == 100

        clock.t += 1.5
        b2 = side_b(links, clock, state_file=state, boot=boot())      # our controller restarted, same boot
        await b2.open()
        try:
            f.sock.sendto(old_start, links["sync1"][1].local)
            f.sock.sendto(captured, links["sync1"][1].local)
            await until(lambda: b2.stats()["sync1"].get("replay") == 1 and b2.stats()["sync1"].get("stale") == 1)
            assert not b2.peer_alive() and b2.peer_state() is None
            f.send("sync1", generation=100, seq=2, epoch=7)              # the real peer
            await _accepted(b2, "sync1", 1)
            assert b2.peer_alive() and b2.peer_state().epoch == 7
        finally:
            await b2.close()
            await asyncio.sleep(0.01)

        # After a reboot of ours the delay baseline is on another clock and is not used: an older
        # start is still refused; a replay of the current one is accepted as its first message
        # (documented in coserver.controller.hbstate).
        b3 = side_b(links, clock, state_file=state, boot=boot("boot-2"))
        await b3.open()
        try:
            f.sock.sendto(old_start, links["sync1"][1].local)
            await until(lambda: b3.stats()["sync1"].get("replay") == 1)
            assert b3.peer_state() is None
        finally:
            f.close()
            await b3.close()

    arun(main())


def test_generations_persist_grow_and_a_bad_state_file_is_one_line(tmp_path: Path):
    path = tmp_path / "hb.json"
    g1 = HeartbeatState(path, wallclock=lambda: 5.0).next_generation()
    g2 = HeartbeatState(path, wallclock=lambda: 1.0).next_generation()
    assert g1 == 5000 and g2 == 5001 and stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert HeartbeatState(None, wallclock=lambda: 7.0).next_generation() == 7000
    path.write_text('{"generation": "x"}')
    with pytest.raises(HeartbeatError) as ei:
        HeartbeatState(path)
    assert str(path) in str(ei.value) and "\n" not in str(ei.value)
    path.write_bytes(b"\xff")
    with pytest.raises(HeartbeatError, match="not a heartbeat state file"):
        HeartbeatState(path)


def test_two_key_window_accepts_current_and_previous_and_an_unknown_key_is_an_auth_failure(arun, links):
    clock = FakeClock()

    async def main():
        b2 = Heartbeats(pair="ft1", node="cs2", key=KeyRing(current=NEW_KEY, previous=KEY),
                        links=[links["sync1"][1], links["sync2"][1]], clock=clock)
        await b2.open()
        f = Forger([links["sync1"][1], links["sync2"][1]], clock)
        try:
            f.send("sync1", seq=1, key=KEY)
            f.send("sync2", seq=2, key=NEW_KEY)
            await until(lambda: b2.stats()["sync1"].get("accepted") == 1 and b2.stats()["sync2"].get("accepted") == 1)
            f.send("sync1", seq=3, key=OTHER_KEY)                  # a key id it does not know
            tampered = bytearray(f.send("sync2", seq=4, key=OTHER_KEY, dest="sync1"))
            await until(lambda: b2.stats()["sync1"].get("bad_mac") == 2)
            tampered[6:14] = f.base.encode(KEY)[6:14]               # a known key id over another key's MAC
            f.sock.sendto(bytes(tampered), links["sync2"][1].local)
            await until(lambda: b2.stats()["sync2"].get("bad_mac") == 1)
            f.sock.sendto(OLD_MAGIC + b"\0" * 40, links["sync1"][1].local)   # a peer of the first format
            await until(lambda: b2.stats()["sync1"].get("old_version") == 1)
        finally:
            f.close()
            await b2.close()

    arun(main())


def test_rotation_in_either_order_keeps_both_sides_hearing_each_other(arun, links):
    """cs1 restarts with the rotated file first: it answers cs2 (old file) with the previous key until
    cs2 says it knows the new one; then both send with the new key."""
    clock = FakeClock()
    a_links, b_links = [links["sync1"][0], links["sync2"][0]], [links["sync1"][1], links["sync2"][1]]
    rotated = KeyRing(current=NEW_KEY, previous=KEY)

    async def main():
        a = Heartbeats(pair="ft1", node="cs1", key=rotated, links=a_links, clock=clock)
        b = Heartbeats(pair="ft1", node="cs2", key=KEY, links=b_links, clock=clock)
        await a.open()
        await b.open()
        try:
            a.send_once()                     # before hearing cs2: the current key, which cs2 cannot check
            await until(lambda: b.stats()["sync1"].get("bad_mac") == 1)
            b.send_once()
            await until(lambda: a.peer_alive())
            bad = b.stats()["sync1"]["bad_mac"]
            clock.t += 0.1
            a.send_once()                     # cs2 said it knows only the old key: a uses it
            await until(lambda: b.peer_alive())
            assert b.stats()["sync1"]["bad_mac"] == bad
            await b.close()
            await asyncio.sleep(0.01)
            b = Heartbeats(pair="ft1", node="cs2", key=rotated, links=b_links, clock=clock)   # cs2 restarts
            await b.open()
            clock.t += 0.1
            b.send_once()                     # new key (a accepts it), advertising both
            await until(lambda: a.stats()["sync1"].get("accepted") == 2)
            clock.t += 0.1
            a.send_once()
            await until(lambda: b.peer_alive())
            assert a._send_key() == NEW_KEY and b._send_key() == NEW_KEY
            assert b.stats()["sync1"].get("bad_mac", 0) == 0
        finally:
            await a.close()
            await b.close()

    arun(main())
