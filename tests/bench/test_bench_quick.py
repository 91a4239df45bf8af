"""`coserver bench --quick` for real on the lab: the report is complete and no acknowledged write was
lost. Nothing here judges a time: the figures are the report's business.

The whole quick bench takes about 15 minutes here, a third of the suite: CI runs it with one trial of
each kill -9 and without the protect section (entering COLO at 256 MiB and 1 GiB, ~3 minutes; the live
entry has its own lab test, test_live_protect) nor the hangs and power cuts (each has its fault trial in
tests/lab/test_faults.py); `make test-faults` runs all of it (COSERVER_BENCH_QUICK_FULL=1): three trials
per kill -9, two per hang and power cut.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from coserver.bench.failover import FAULTS
from coserver.sys import netns

pytestmark = [pytest.mark.qemu, pytest.mark.netns, pytest.mark.slow]

PREFIX = f"q{os.getpid() % 10000}"
FAULT_ROWS = ("kill -9 primary QEMU", "kill -9 secondary QEMU", "restart baseline")
FULL = os.environ.get("COSERVER_BENCH_QUICK_FULL") == "1"
ALL_SECTIONS = {"failover", "cost", "restart", "sync", "overhead", "tls", "protect"}
#: What CI runs: every section but protect, one trial per fault.
CI_SECTIONS = ALL_SECTIONS - {"protect"}


def test_quick_bench_report_is_complete_and_nothing_was_lost(tmp_path):
    out = tmp_path / "bench"
    wanted = ALL_SECTIONS if FULL else CI_SECTIONS
    trials = {"kill": 3, "other": 2} if FULL else {"kill": 1}
    subset = [] if FULL else ["--trials", "1", "--sections", ",".join(sorted(wanted)),
                              "--faults", "kill-primary-qemu,kill-secondary-qemu"]
    proc = subprocess.run([sys.executable, "-m", "coserver.cli.main", "bench", "--quick", "--out", str(out),
                           "--prefix", PREFIX, *subset], capture_output=True, text=True, timeout=1500,
                          env={**os.environ, "COSERVER_ACCEL": "tcg"})
    print(proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 0, proc.stderr[-2000:]

    data = json.loads((out / "bench.json").read_text())
    assert data["complete"], data
    sections = data["sections"]
    assert set(sections) == wanted
    assert not [name for name, sec in sections.items() if "error" in sec]

    # every acknowledged write survived, for each fault and for the baseline
    faults = FAULTS if FULL else ("kill-primary-qemu", "kill-secondary-qemu")
    lost = {**dict.fromkeys(faults, 0), "restart-baseline": 0}
    assert data["lost"] == ({**lost, "protect": 0} if FULL else lost)
    assert set(sections["failover"]["by_fault"]) == set(faults)
    for fault, agg in sections["failover"]["by_fault"].items():
        n = trials["kill" if fault.startswith("kill") else "other"]
        assert agg["trials"] == n and agg["outage_s"]["n"] == n and agg["unverified"] == 0, (fault, agg)
        assert agg["detection_s"]["n"] == n and agg["promotion_s"]["n"] == n, (fault, agg)
    assert all(t["lost"] == 0 and t["acked"] > 0 for t in sections["failover"]["trials"])
    assert all(t["lost"] == 0 and t["acked_after"] > 0 for t in sections["restart"]["trials"])

    # the cost section measured both sides and the checkpoints
    (period,) = sections["cost"]["by_period"]
    assert period["unprotected"]["appends_per_s"] > 0 and period["protected"]["appends_per_s"] > 0
    assert period["throughput_ratio"] is not None
    # ... and with each CoServer's QEMU pinned to a core of its own, as on two hosts
    (pinned,) = sections["cost"]["pinned_by_period"]
    assert pinned["throughput_ratio"] is not None and pinned["protected"]["appends"]["checkpoints"] > 0
    assert {r["placement"] for r in sections["cost"]["runs"]} == {"shared", "pinned"}
    assert period["protected"]["appends"]["checkpoints"] > 0
    assert period["protected"]["appends"]["pause_ms"]["n"] > 0
    assert period["protected"]["appends"]["migration_bytes_per_checkpoint"] > 0
    assert sections["sync"]["ratio"] is not None and sections["sync"]["raw_copy_s"] > 0
    assert len(sections["overhead"]["controller_cpu_s_per_min"]) == 2
    # what watching costs: both controllers measured per scrape and per status request
    assert len(sections["overhead"]["cpu_ms_per_scrape"]) == 2 and len(sections["overhead"]["cpu_ms_per_status"]) == 2
    assert len(sections["overhead"]["monitoring_extra_cpu_s_per_min"]) == 2
    # plain TCP against TLS, side by side, each protected and checkpointing
    tls = sections["tls"]
    for mode in ("plaintext", "tls"):
        assert tls[mode]["appends_per_s"] > 0 and tls[mode]["appends"]["checkpoints"] > 0, (mode, tls[mode])
    assert tls["throughput_ratio"] is not None and tls["lab_up_ratio"] is not None
    # entering COLO in both orders at both RAM sizes, one trial each, disks identical after
    for size in sections.get("protect", {}).get("by_size", []):
        for order in ("stopped", "live"):
            agg = size[order]
            assert agg["trials"] == 1 and agg["lost"] == 0 and agg["disks_identical"], (size["memory_mib"], order, agg)
            assert agg["entry_gap_s"] > 0 and agg["protect_s"] > 0
        assert size["entry_gap_ratio"] is not None and size["protect_ratio"] is not None
    assert (out / "protect_vs_ram.png").exists() == FULL

    # the report names the machine and has every table; the plots are real PNGs
    report = (out / "report.md").read_text()
    m = data["machine"]
    for text in (m["qemu_version"], m["accel"], m["cpu_model"], "acked writes lost", *FAULT_ROWS,
                 "## 2. Cost of protection", "## 4. Time to protect", "## 5. Controller overhead",
                 "## 6. TLS on the replication streams"):
        assert text in report, text
    assert "Incomplete run" not in report
    for png in ("failover_gaps.png", "cost_vs_period.png", "outage_ft_vs_restart.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
        assert f"]({png})" in report

    # and the bench left no lab behind
    assert netns.list_namespaces(PREFIX) == []
