"""Success means protected; a crash loop is not re-protection (issue: COLO on q35).

With a deliberately broken QEMU (tests/brokenqemu.py: the real one, except that a COLO
secondary aborts at about its first checkpoint with the assertion the q35 bug printed):
- `coserver lab up` exits non-zero with that reason in one line, and leaves nothing behind;
- on a running pair whose secondaries start dying that way, the controllers back off, stop
  after a bound and `lab status` shows "cannot protect: <the assertion>"; once the cause is
  gone, `coserver pair reprotect` brings protection back.
The second test also protects a `--spec` FT server named "pgdb": that name, not the lab's
built-in one, is what every controller reports.
"""

from __future__ import annotations

import json
import os
import time
from itertools import pairwise

import pytest
from brokenqemu import MESSAGE, make_broken_qemu

from coserver.images.labguest import build_lab_guest
from coserver.lab.net import HOSTS
from coserver.lab.spec import write_lab_spec
from coserver.paths import qemu_install
from coserver.sys import netns

from .labutil import coserver, lab_processes

pytestmark = [pytest.mark.qemu, pytest.mark.netns, pytest.mark.slow]

PREFIX = f"k{os.getpid() % 10000}"


def nothing_left() -> None:
    assert netns.list_namespaces(f"{PREFIX}-") == []
    assert lab_processes(PREFIX) == []


def test_lab_up_fails_with_the_reason_when_the_secondary_aborts_at_its_first_checkpoint(tmp_path):
    broken = make_broken_qemu(tmp_path / "qemu", qemu_install().system)
    t0 = time.monotonic()
    proc = coserver("lab", "up", "--prefix", PREFIX, "--workdir", str(tmp_path / "lab"), "--checkpoint-ms", "1000",
                    check=False, env={"COSERVER_QEMU": str(broken)})
    took = time.monotonic() - t0
    try:
        assert proc.returncode != 0, proc.stdout
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and not ln.startswith("  ..")]
        assert len(lines) == 1 and lines[0].startswith("coserver: error: lab up failed"), proc.stderr
        assert "Assertion `!subregion->container' failed" in lines[0] and "cs2" in lines[0], lines[0]
        print(f"\nlab up failed in {took:.0f} s: {lines[0]}")
    finally:
        coserver("lab", "down", "--prefix", PREFIX, check=False)
    nothing_left()


def lab_status() -> dict:
    return json.loads(coserver("lab", "status", "--prefix", PREFIX, "--json").stdout)


def wait_for(what: str, check, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        st = lab_status()
        if check(st):
            return st
        assert time.monotonic() < deadline, f"{what}: not within {timeout:.0f} s; last status {st['state']}, " \
                                            f"alert {st.get('alert')}, notes " \
                                            f"{[(h.get('reprotect') or {}).get('note') for h in st['hosts'].values()]}"
        time.sleep(1.0)


def test_a_crash_loop_backs_off_stops_and_says_why_then_reprotect_heals(tmp_path):
    trigger = tmp_path / "break-secondaries"
    broken = make_broken_qemu(tmp_path / "qemu", qemu_install().system, trigger=trigger)
    env = {"COSERVER_QEMU": str(broken)}
    guest = build_lab_guest()
    workdir = tmp_path / "lab"
    disks = {h: workdir / h / "disk.qcow2" for h in HOSTS}
    disks["cs1"].parent.mkdir(parents=True)
    guest.new_data_disk(disks["cs1"])
    spec = write_lab_spec(tmp_path / "pgdb.toml", prefix=PREFIX, profile="dl380-gen10", guest=guest, disks=disks,
                          name="pgdb")
    try:
        coserver("lab", "up", "--prefix", PREFIX, "--workdir", str(workdir), "--spec", str(spec),
                 "--checkpoint-ms", "1000", env=env)
        st = lab_status()
        assert st["state"] == "protected" and st["ftserver"] == "pgdb"
        assert {h["ftserver"] for h in st["hosts"].values()} == {"pgdb"}

        trigger.touch()                       # from now on every new secondary aborts in COLO
        t0 = time.monotonic()
        coserver("lab", "fault", "kill-qemu", "--host", "cs2", "--prefix", PREFIX)
        # the alert comes with the last failed attempt; the survivor settles simplex a moment later
        st = wait_for("cannot protect", lambda s: s.get("alert") and s["state"] == "simplex", timeout=240)
        took = time.monotonic() - t0
        print(f"\nalert after {took:.0f} s: {st['alert']}")
        assert st["alert"].startswith("cannot protect: ") and MESSAGE.split(": ", 1)[1][:40] in st["alert"]
        assert st["state"] == "simplex" and st["primary"] == "cs1"
        attempts = st["hosts"]["cs2"]["reprotect"]["failed_attempts"]
        assert attempts == 5, st["hosts"]["cs2"]["reprotect"]
        # the rejoining side's attempts start further and further apart: 5, 10, 20, 40 s at least
        starts = [h["at"] for h in st["hosts"]["cs2"]["history"] if h["to"] == "starting"][-5:]
        gaps = [round(b - a, 1) for a, b in pairwise(starts)]
        print(f"gaps between attempts: {gaps} s")
        assert len(gaps) == 4 and all(g >= want - 0.5 for g, want in zip(gaps, (5, 10, 20, 40), strict=True)), gaps
        time.sleep(8)                         # it stopped: no new attempt, still simplex, still the alert
        again = lab_status()
        assert again["hosts"]["cs2"]["reprotect"]["failed_attempts"] == 5 and again["alert"]
        assert "cannot protect" in lab_status()["alert"]
        text = coserver("lab", "status", "--prefix", PREFIX).stdout
        assert "ALERT: cannot protect" in text

        trigger.unlink()                      # the cause is gone: the operator asks again
        coserver("pair", "reprotect", "--prefix", PREFIX, env=env, timeout=200)
        st = wait_for("protected again", lambda s: s["state"] == "protected", timeout=120)
        assert st["ftserver"] == "pgdb"
    finally:
        coserver("lab", "down", "--prefix", PREFIX, check=False)
    nothing_left()
