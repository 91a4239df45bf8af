"""Every fault of the controller issue, with a client appending every 20 ms, on the real lab.

For each: nothing the client got an OK for is lost (read back with GET on the
survivor), the client's TCP connection survives, exactly one side runs the
guest after a failover and both (still protected) after a fault that must not
fail over; the client-visible gap is printed per trial. Faults that leave the
pair protected share one lab; each failover gets a fresh one.
"""

from __future__ import annotations

import json
import os

import pytest

from coserver.controller.faulttrial import run_trial, table
from coserver.controller.lab import Lab, LabOptions

from .labutil import coserver

pytestmark = [pytest.mark.qemu, pytest.mark.netns, pytest.mark.slow]

PREFIX = f"f{os.getpid() % 10000}"


@pytest.fixture
def fresh_lab(tmp_path):
    lab = Lab(PREFIX, tmp_path / "lab")
    try:
        lab.up(LabOptions(prefix=PREFIX, workdir=tmp_path / "lab", checkpoint_ms=1000))
        yield lab
    finally:
        lab.down()


def check(result) -> None:
    print("\n" + table([result]))
    assert result.lost == 0, result.problems
    assert result.ok, result.problems


def test_faults_that_must_not_fail_over_then_a_primary_kill(fresh_lab):
    """One lab: cut each link (and heal), kill each controller, then kill -9 the primary's QEMU."""
    for name in ("cut-link-1", "cut-link-2", "kill-controller-primary", "kill-controller-secondary"):
        r = run_trial(fresh_lab, name)
        check(r)
        assert r.primary_after == r.primary_before == "cs1"
    check(run_trial(fresh_lab, "kill-primary-qemu"))


@pytest.mark.parametrize("name", ["kill-secondary-qemu", "hang-primary-qemu", "hang-secondary-qemu",
                                  "cut-all-links"])
def test_fault_fails_over_and_loses_nothing(fresh_lab, name):
    r = run_trial(fresh_lab, name)
    check(r)
    if name == "cut-all-links":  # the witness kept the primary (it holds the lease); cs2 stood down
        assert r.survivor == "cs1"
        st = fresh_lab.status()
        assert st["hosts"]["cs2"]["state"] == "fenced" and not st["hosts"]["cs2"]["qemu_alive"]
        fresh_lab.fault("heal-all-links")  # never two primaries, also after the links heal
        import time
        time.sleep(3)
        st = fresh_lab.status()
        assert [h for h, e in st["hosts"].items() if e.get("qemu_alive")] == ["cs1"]
    expected = "cs2" if name in ("hang-primary-qemu",) else "cs1"
    assert r.survivor == expected


def test_fault_cli_json_and_bad_input_change_nothing(fresh_lab):
    before = fresh_lab.status()
    for args, needle in ((["kill-qemu", "--host", "cs9"], "cs9"), (["cut-link", "--link", "3"], "3"),
                         (["explode"], "explode")):
        proc = coserver("lab", "fault", *args, "--prefix", PREFIX, check=False)
        assert proc.returncode != 0 and needle in proc.stderr and "Traceback" not in proc.stderr
    proc = coserver("lab", "fault", "cut-link", "--prefix", PREFIX, check=False)  # --link missing
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "--link" in proc.stderr
    after = fresh_lab.status()
    assert (after["state"], after["primary"]) == (before["state"], before["primary"]) == ("protected", "cs1")
    out = json.loads(coserver("lab", "fault", "cut-link", "--link", "2", "--json", "--prefix", PREFIX).stdout)
    assert out["fault"] == "cut-link" and out["link"] == 2
    coserver("lab", "fault", "heal-link", "--link", "2", "--prefix", PREFIX)
    # an operator's manual failover
    proc = coserver("failover", "--to", "cs1", "--prefix", PREFIX, check=False)
    assert proc.returncode == 1 and "already runs" in proc.stderr
    out = json.loads(coserver("failover", "--to", "cs2", "--json", "--prefix", PREFIX).stdout)
    assert out["to"] == "cs2" and fresh_lab.status()["primary"] == "cs2"
