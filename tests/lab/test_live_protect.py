"""Entering COLO live with the guest's RAM in use, a client writing.

The lab (reprotect manual) runs the default order (site key `protect = "live"`); the stopped order
is protected under load, with the same checks, by the bench's protect section, which
tests/bench/test_bench_quick.py runs in CI. The guest fills 192 of its 384 MiB and keeps
dirtying it; the secondary is killed and the pair re-protected while the client appends every
10 ms (coserver.lab.protecttrial). What must hold: every acknowledged append is there, the client
never lost its connection, and after a quiet period both hosts' disks hold the same blocks (a write
made between the disk switch and the first checkpoint reaching one disk only would show here).
The pause itself is a figure of the bench (`coserver bench`, section protect), printed here.
"""

from __future__ import annotations

import os

import pytest

from coserver.lab.lab import Lab, LabOptions
from coserver.lab.protecttrial import run_protect_trial

pytestmark = [pytest.mark.qemu, pytest.mark.netns, pytest.mark.slow]


@pytest.mark.parametrize("order", ["live"])
def test_reprotection_under_memory_load_keeps_every_ack_and_the_disks_equal(tmp_path, order):
    prefix = f"lp{order[0]}{os.getpid() % 1000}"
    lab = Lab(prefix, tmp_path / "lab")
    try:
        lab.up(LabOptions(prefix=prefix, workdir=tmp_path / "lab", reprotect="manual", protect=order,
                          memory_mib=384, checkpoint_ms=2000))
        assert lab.site().protect == order
        r = run_protect_trial(lab, memload_mib=192, dirty_mib_s=16)
        print(f"\n{order}: largest client gap {r.largest_gap_s * 1000:.0f} ms, protected in {r.protect_s:.1f} s, "
              f"{r.acked} acks, lost {r.lost}, disks identical {r.disks_identical}")
        assert r.ok, r.problems
        assert r.acked > 100
    finally:
        lab.down()
