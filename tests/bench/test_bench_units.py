"""The bench's pure parts: statistics, the gap/outage rule, the report's completeness check."""

from __future__ import annotations

import pytest

from coserver.bench.failover import gaps, outage_end
from coserver.bench.report import goals_table, incomplete, key_table, losses, render
from coserver.bench.run import BenchConfig
from coserver.bench.stats import percentile, ratio, summary


def test_percentiles_interpolate_and_ignore_missing():
    assert percentile([], 50) is None
    assert percentile([3.0], 99) == 3.0
    assert percentile([1, 2, 3, 4], 50) == 2.5
    s = summary([None, 1.0, 2.0, 3.0])
    assert s["n"] == 3 and s["p50"] == 2.0 and s["max"] == 3.0
    assert ratio(1, 0) is None and ratio(1, 4) == 0.25


def test_outage_is_the_longest_silence_from_the_last_ok_before_the_fault():
    # an OK already on its way arrives 0.02 s after the fault, then 0.3 s of silence
    gap, outage = gaps([0.9, 0.95], [1.0, 1.3, 1.31])
    assert gap == pytest.approx(0.05) and outage == pytest.approx(0.3)
    assert gaps([], [1.0]) == (None, None)


def test_the_next_ack_is_the_one_that_ends_the_outage():
    # the fault at 0.985: an OK released before it took effect arrives at 0.99; the outage ends at 1.3
    assert outage_end([0.97, 0.98], [0.99, 1.3, 1.31]) == 1.3
    assert outage_end([0.9, 0.95], [1.2, 1.21]) == 1.2   # the usual case: the first OK after the fault
    # a failover's outage ends at 1.25; the pair's re-protection pauses the client longer, later: not the fault's
    assert outage_end([0.9, 0.95], [1.25, 1.26, 1.27, 2.0, 2.01]) == 1.25
    assert outage_end([0.9, 0.95], [0.96, 0.97]) == 0.96   # no silence at all: the first OK
    assert outage_end([0.9], []) is None
    assert outage_end([], [1.0]) == 1.0


def _data(**sections):
    return {"config": {"sections": list(sections), "trials": 1}, "machine": {}, "sections": sections}


def test_a_failed_section_makes_the_run_incomplete_and_is_reported():
    data = _data(sync={"error": "qemu-img: boom"})
    assert incomplete(data) == ["section sync: qemu-img: boom"]
    text = render(data)
    assert "Incomplete run" in text and "Not measured: qemu-img: boom" in text


def test_key_table_has_the_outage_and_the_losses_of_each_fault_and_the_baseline():
    agg = {"trials": 1, "lost": 0, "unverified": 0, "outage_s": summary([0.3]), "gap_s": summary([0.3]),
           "detection_s": summary([0.1]), "promotion_s": summary([0.05])}
    data = _data(failover={"by_fault": {"kill-primary-qemu": agg, "kill-secondary-qemu": agg}},
                 restart={"outage_s": summary([9.0]), "lost": 2, "trials": [{}], "unverified": 0})
    rows = key_table(data)
    assert len(rows) == 5 and "300 ms" in rows[2] and "9.0 s" in rows[4] and "| 2 |" in rows[4]
    assert losses(data) == {"kill-primary-qemu": 0, "kill-secondary-qemu": 0, "restart-baseline": 2}


def test_quick_config_is_small_and_overrides_win():
    q = BenchConfig.make(None, True)
    assert (q.trials, q.periods_ms, q.cost_rounds) == (3, [1000], 1)
    full = BenchConfig.make(None, False, trials=4)
    assert full.trials == 4 and full.periods_ms == [200, 1000, 5000]


def test_report_of_a_missing_or_broken_json_is_one_line(tmp_path, capsys):
    from coserver.bench.report import main

    bad = tmp_path / "bench.json"
    bad.write_text("{")
    assert main([str(tmp_path / "none.json")]) == 2 and main([str(bad)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all(e.startswith("coserver.bench.report: error: cannot read") for e in err)


def test_pin_threads_moves_every_thread_of_a_real_process():
    """The bench's pinned placement: every thread of the process on the given core."""
    import os
    import subprocess
    import sys

    from coserver.sys.proc import ProcessError, pin_threads

    code = "import threading, time\nfor _ in range(3): threading.Thread(target=time.sleep, args=(30,)).start()\ntime.sleep(30)"
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        import time
        deadline = time.monotonic() + 10
        while len(os.listdir(f"/proc/{proc.pid}/task")) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        core = min(os.sched_getaffinity(0))
        assert pin_threads(proc.pid, {core}) == 4
        assert all(os.sched_getaffinity(int(t)) == {core} for t in os.listdir(f"/proc/{proc.pid}/task"))
    finally:
        proc.kill()
        proc.wait()
    with pytest.raises(ProcessError, match="cannot list its threads"):
        pin_threads(proc.pid, {0})


def _period(ratio_: float, p99: float) -> dict:
    side = {"appends_per_s": 100.0, "append_latency_ms": summary([1.0, p99]), "probe_latency_ms": summary([1.0]),
            "qemu_cpu_s_per_s": 1.0}
    return {"checkpoint_ms": 1000, "unprotected": side, "protected": side, "throughput_ratio": ratio_,
            "append_p50_ratio": 1.0, "append_p99_ratio": p99, "probe_p50_ratio": 1.0}


def test_the_cost_report_puts_shared_and_pinned_side_by_side():
    cost = {"rounds": 1, "append_s": 5.0, "probe_s": 3.0, "probe_interval_s": 0.01, "placements": ["shared", "pinned"],
            "by_period": [_period(0.29, 12.0)], "pinned_by_period": [_period(0.61, 2.5)], "runs": [], "problems": []}
    text = render(_data(cost=cost))
    assert "**Pinned**" in text and "**Shared cores**" in text
    assert "0.29× → 0.61×" in text and "12.0× → 2.5×" in text


def _fault(outages: list[float]) -> dict:
    return {"trials": len(outages), "lost": 0, "unverified": 0, "outage_s": summary(outages), "to_ack_s": summary(outages),
            "gap_s": summary(outages), "detection_s": summary([0.1]), "promotion_s": summary([0.05]),
            "client_after_s": summary([0.1])}


def test_each_fault_is_judged_against_its_goal_at_p50_and_p99():
    data = _data(failover={"faults": ["kill-primary-qemu", "hang-primary-qemu"],
                           "by_fault": {"kill-primary-qemu": _fault([0.2, 0.22]),      # within 250 / 400 ms
                                        "hang-primary-qemu": _fault([0.9, 2.5])}})     # p99 over 2 s
    rows = key_table(data)
    assert "met" in rows[2] and "not met" not in rows[2]
    assert "**not met**" in rows[3] and "hang (SIGSTOP) primary QEMU" in rows[3]
    goals = "\n".join(goals_table(data))
    assert "next ack p50 ≤ 1.0 s, p99 ≤ 2.0 s" in goals and goals.count("**not met**") == 1


def test_hangs_and_power_cuts_count_their_own_trials_for_completeness():
    data = _data(failover={"faults": ["kill-primary-qemu", "power-off-primary"],
                           "by_fault": {"kill-primary-qemu": _fault([0.2, 0.2, 0.2]),
                                        "power-off-primary": _fault([4.0])}})
    data["config"].update(trials=3, detect_trials=2)
    assert incomplete(data) == ["failover power-off-primary: 1 of 2 trials measured"]
    data["sections"]["failover"]["by_fault"]["power-off-primary"] = _fault([4.0, 4.2])
    assert incomplete(data) == []
    assert BenchConfig.make(None, True).detect_trials == 2 and BenchConfig.make(None, False).detect_trials == 5


def _run(mode: str, ops: int, seconds: float, probe_ms: float, pauses_ms: list[float],
         latency_ms: list[float]) -> dict:
    return {"mode": mode, "phases": {"appends": {"ops": ops, "seconds": seconds, "pause_ms": pauses_ms,
                                                 "latency_ms": latency_ms},
                                     "probe": {"latency_ms": [probe_ms] * 5}}}


def test_a_protected_appends_time_is_split_into_stages_that_add_up():
    from coserver.bench.cost import stages

    # unprotected: 500 appends in 1 s (2 ms each); protected: 200 in 1 s (5 ms each): 198 at 4 ms and two
    # stalled ones of 104 ms (100 ms beyond the median each: 1 ms per append), QEMU stopped 60 ms in all;
    # the probe 0.5 ms slower: 1 ms stalls + 0.5 ms path + 1.5 ms the rest per append
    lat = [4.0] * 198 + [104.0, 104.0]
    st = stages([_run("unprotected", 500, 1.0, 1.0, [], [2.0] * 500)],
                [_run("protected", 200, 1.0, 1.5, [30.0, 30.0], lat)])
    assert st is not None
    assert (st["unprotected_ms"], st["protected_ms"], st["extra_ms"]) == (2.0, 5.0, 3.0)
    assert (st["stalls_ms"], st["network_compare_ms"], st["write_and_rest_ms"]) == (1.0, 0.5, 1.5)
    assert st["pause_ms"] == 0.3 and st["stalled_appends"] == 2
    assert st["largest"] == "write_and_rest" and st["share"]["stalls"] == pytest.approx(0.333, abs=0.001)
    assert stages([], [_run("protected", 200, 1.0, 1.5, [], lat)]) is None
