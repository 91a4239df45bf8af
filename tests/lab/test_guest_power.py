"""The guest's own reboot and power-off (issue 13): a reboot keeps the pair protected with nothing
lost; a power-off stops the FT server on both hosts, with no failover that brings it back, and its
disk holds every acknowledged write when the operator starts it again."""

from __future__ import annotations

import os
import time

import pytest

from coserver.images.guestclient import Writer, connect_journal, missing_acks
from coserver.lab.lab import Lab, LabOptions

from .labutil import coserver, status

pytestmark = [pytest.mark.qemu, pytest.mark.netns, pytest.mark.slow]

PREFIX = f"g{os.getpid() % 10000}"
#: After these, nobody took the guest over.
TAKEOVER = {"failing_over", "simplex"}


def _transitions_since(st: dict, t0_wall: float) -> dict[str, list[str]]:
    return {h: [t["to"] for t in (e.get("history") or []) if t.get("at", 0) >= t0_wall]
            for h, e in st["hosts"].items()}


def _wait(predicate, timeout: float, what: str) -> dict:
    deadline = time.monotonic() + timeout
    st: dict = {}
    while time.monotonic() < deadline:
        st = status(PREFIX)
        if predicate(st):
            return st
        time.sleep(0.5)
    raise AssertionError(f"{what}: not within {timeout:.0f} s; last status: {st.get('state')} "
                         f"{ {h: e.get('state') for h, e in st.get('hosts', {}).items()} }")


def test_the_guest_reboots_protected_then_powers_itself_off_on_both_hosts(tmp_path):
    lab = Lab(PREFIX, tmp_path / "lab")
    try:
        up = lab.up(LabOptions(prefix=PREFIX, workdir=tmp_path / "lab", checkpoint_ms=1000))
        assert up["state"] == "protected" and up["primary"] == "cs1"
        g = up["guest"]
        with connect_journal(g["client_netns"], g["address"], g["port"]) as c:
            boot_before = c.info()["boot_id"]

        # ---- the guest reboots itself: still protected, nothing lost, no takeover
        writer = Writer(g["client_netns"], g["address"], g["port"], interval=0.05, tag="reboot").start()
        time.sleep(2)
        t0_wall = time.time()
        with connect_journal(g["client_netns"], g["address"], g["port"]) as c:
            c.reboot()
        time.sleep(3)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:   # the journal answers again from the rebooted guest
            try:
                with connect_journal(g["client_netns"], g["address"], g["port"], timeout=5) as c:
                    if c.info()["boot_id"] != boot_before:
                        break
            except Exception:
                pass
            time.sleep(1)
        else:
            raise AssertionError("the guest did not come back from its reboot within 180 s")
        time.sleep(3)
        acked = writer.stop().acked
        st = status(PREFIX)
        print(f"\nreboot: pair {st['state']}, {len(acked)} acked, checkpoints {st['checkpoints']}")
        assert st["state"] == "protected" and st["primary"] == "cs1", st["state"]
        moved = _transitions_since(st, t0_wall)
        assert not (TAKEOVER & set(moved["cs1"] + moved["cs2"])), moved
        with connect_journal(g["client_netns"], g["address"], g["port"]) as c:
            assert missing_acks(c, acked) == []

        # ---- the guest powers itself off: stopped on both hosts, never taken over
        writer = Writer(g["client_netns"], g["address"], g["port"], interval=0.05, tag="off").start()
        time.sleep(2)
        t0_wall = time.time()
        with connect_journal(g["client_netns"], g["address"], g["port"]) as c:
            c.poweroff()
        st = _wait(lambda s: all(e.get("state") == "stopped" and not e.get("qemu_alive")
                                 for e in s["hosts"].values()), 60, "both hosts stopped after the guest's power-off")
        acked_off = writer.stop().acked
        time.sleep(5)   # and it stays so: no controller restarts or fails over the guest
        st = status(PREFIX)
        moved = _transitions_since(st, t0_wall)
        print(f"power-off: {moved}; {len(acked_off)} acked")
        assert st["state"] == "stopped", st["state"]
        for host, e in st["hosts"].items():
            assert e["state"] == "stopped" and not e["qemu_alive"], (host, e["state"])
            assert not (TAKEOVER & set(moved[host])), (host, moved[host])
        assert "the guest powered itself off" in st["hosts"]["cs1"]["history"][-1]["reason"]

        out = coserver("server", "start", "journal", "--prefix", PREFIX, "--json", timeout=300)
        print(f"server start: {out.stdout.strip()}")
        st = status(PREFIX)
        assert st["state"] == "protected" and st["primary"] == "cs1"   # the host that ran it last
        with connect_journal(g["client_netns"], g["address"], g["port"]) as c:
            assert missing_acks(c, {**acked, **acked_off}) == []
    finally:
        lab.down()
