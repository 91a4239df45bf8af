"""The bench's pure parts: statistics, the gap/outage rule, the report's completeness check."""

from __future__ import annotations

import pytest

from coserver.bench.failover import gaps
from coserver.bench.report import incomplete, key_table, losses, render
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
