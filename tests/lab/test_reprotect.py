"""Re-protection, switchover and maintenance: the pair heals itself while a client writes.

After every cycle: 0 acknowledged appends lost, the guest's boot_id unchanged
(it never rebooted), the roles swapped; the client-visible pauses are printed.
"""

from __future__ import annotations

import os
import time

import pytest

from coserver.images.guestclient import Writer, connect_journal, missing_acks
from coserver.lab.lab import Lab, LabOptions
from coserver.lab.trials import run_trial, table

from .labutil import coserver

pytestmark = [pytest.mark.qemu, pytest.mark.netns, pytest.mark.slow]

PREFIX = f"r{os.getpid() % 10000}"


def make_lab(tmp_path, prefix: str = PREFIX, **opts) -> Lab:
    lab = Lab(prefix, tmp_path / "lab")
    lab.up(LabOptions(prefix=prefix, workdir=tmp_path / "lab", checkpoint_ms=1000, **opts))
    return lab


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    the_lab = make_lab(tmp_path_factory.mktemp("reprotect"))
    try:
        yield the_lab
    finally:
        the_lab.down()


def wait_state(lab: Lab, want: str, timeout: float = 90.0) -> dict:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        st = lab.status()
        if st["state"] == want and (want != "protected"
                                    or all(e.get("state") == "protected" for e in st["hosts"].values())):
            return st
        time.sleep(0.2)
    raise AssertionError(f"not {want} after {timeout:.0f} s: {lab.status()['state']}")


def boot_id(st: dict) -> str:
    g = st["guest"]
    with connect_journal(g["client_netns"], g["address"], g["port"]) as c:
        return c.info()["boot_id"]


def test_three_kill_cycles_reprotect_automatically_with_roles_swapped(lab):
    st = wait_state(lab, "protected")
    first_boot = boot_id(st)
    for cycle in range(3):
        before = wait_state(lab, "protected")
        r = run_trial(lab, "kill-primary-qemu")
        after = wait_state(lab, "protected")
        print(f"\ncycle {cycle + 1}: {table([r]).splitlines()[1]}")
        assert r.ok and r.lost == 0, r.problems
        assert (after["primary"], after["secondary"]) == (before["secondary"], before["primary"])
        assert boot_id(after) == first_boot


def writer_for(lab: Lab) -> Writer:
    g = lab.status()["guest"]
    return Writer(g["client_netns"], g["address"], g["port"], interval=0.02, tag=f"w{time.monotonic():.0f}").start()


def finish(lab: Lab, writer: Writer, what: str) -> None:
    res = writer.stop()
    g = lab.status()["guest"]
    with connect_journal(g["client_netns"], g["address"], g["port"]) as c:
        assert missing_acks(c, res.acked) == []
    assert not res.reconnects
    print(f"\n{what}: {len(res.acks)} appends, 0 lost, largest client pause {res.largest_gap() * 1000:.0f} ms")


def test_switchover_moves_the_primary_with_nothing_lost(lab):
    before = wait_state(lab, "protected")
    first_boot = boot_id(before)
    w = writer_for(lab)
    time.sleep(1.5)
    coserver("pair", "switchover", "--prefix", PREFIX)
    time.sleep(1.5)
    finish(lab, w, "switchover")
    after = wait_state(lab, "protected")
    assert (after["primary"], after["secondary"]) == (before["secondary"], before["primary"])
    assert boot_id(after) == first_boot


def test_maintenance_on_off_cycle(lab):
    before = wait_state(lab, "protected")
    host = before["primary"]  # the harder case: the host in maintenance runs the guest
    w = writer_for(lab)
    time.sleep(1.5)
    coserver("host", "maintenance", "on", "--host", host, "--prefix", PREFIX)
    time.sleep(7)  # longer than the rejoin back-off: the host must stay out
    st = lab.status()
    assert st["state"] == "simplex" and st["hosts"][host]["role"] == "none"
    assert st["hosts"][host]["reprotect"]["maintenance"] is True
    coserver("host", "maintenance", "off", "--host", host, "--prefix", PREFIX)
    time.sleep(1.5)
    finish(lab, w, "maintenance on/off")
    after = wait_state(lab, "protected")
    assert after["secondary"] == host


def test_reprotection_interrupted_by_a_second_fault_retries_later(tmp_path):
    lab = make_lab(tmp_path, prefix=PREFIX + "i", sync_speed_mib_s=16)  # a re-sync takes ~16 s: time to hit it mid-way
    try:
        w = writer_for(lab)
        time.sleep(1)
        before = lab.status()
        lab.fault("kill-qemu", before["primary"])
        survivor, failed = before["secondary"], before["primary"]
        t0 = time.monotonic()
        while True:  # the failed side rejoined and the survivor is syncing it
            st = lab.status()
            sync = st["hosts"][survivor].get("sync") or {}
            if st["hosts"][survivor].get("state") == "syncing" and 5 < (sync.get("percent") or 0) < 80:
                break
            assert time.monotonic() - t0 < 60, st["state"]
            time.sleep(0.2)
        lab.fault("kill-qemu", failed)  # the new secondary dies mid-resync
        st = wait_state(lab, "simplex", timeout=20)
        assert st["primary"] == survivor
        finish(lab, w, "interrupted re-protection")
        st = wait_state(lab, "protected", timeout=120)  # retried later, protected again
        assert (st["primary"], st["secondary"]) == (survivor, failed)
    finally:
        lab.down()
