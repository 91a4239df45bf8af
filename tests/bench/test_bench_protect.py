"""The bench's protect section without a lab: its figures, the ratios, the report, the plot and the
completeness check, from synthetic trial results; the run's order and error handling with the lab and
the trial replaced (pure orchestration)."""

from __future__ import annotations

from coserver.bench import plots, protect
from coserver.bench.report import incomplete, losses, protect_section, readme_excerpt, render
from coserver.bench.run import SECTIONS, BenchConfig
from coserver.errors import CoserverError
from coserver.lab.protecttrial import ProtectTrialResult


def _row(order: str, mem: int, entry: float, largest: float, prot: float, trial: int = 1, lost: int = 0,
         reconnects: int = 0, identical: bool | None = True) -> dict:
    r = ProtectTrialResult(order=order, memory_mib=mem, memload_mib=144 if mem == 256 else 768, dirty_mib_s=16,
                           acked=500, lost=lost, reconnects=reconnects, largest_gap_s=largest, entry_gap_s=entry,
                           protect_s=prot, disks_identical=identical, gaps=[(1.0, entry)])
    if reconnects:
        r.problems.append(f"the client reconnected {reconnects} times")
    return {**r.as_dict(), "trial": trial}


def _section(rows: list[dict], trials: int = 1) -> dict:
    return {"sizes": [{"memory_mib": m, "memload_mib": ld} for m, ld in protect.SIZES], "orders": list(protect.ORDERS),
            "trials_per_order": trials, "dirty_mib_s": 16, "checkpoint_ms": 2000, "client_interval_s": 0.01,
            "goal_entry_gap_s": 0.15, "labs": [], "runs": rows, "problems": [], "by_size": protect.summarize(rows)}


ROWS = [_row("stopped", 256, 1.2, 1.3, 4.0), _row("live", 256, 0.13, 0.2, 3.0),
        _row("live", 1024, 0.15, 0.4, 12.0), _row("stopped", 1024, 7.0, 7.1, 16.0, reconnects=1)]


def _data(**sections):
    return {"config": {"sections": list(sections), "trials": 1}, "machine": {}, "sections": sections}


def test_medians_totals_and_the_stopped_over_live_ratios():
    rows = [_row("live", 256, 0.1, 0.2, 3.0, 1), _row("live", 256, 0.3, 0.5, 5.0, 2, lost=1),
            _row("live", 256, 0.2, 0.3, 4.0, 3, identical=False),
            _row("stopped", 256, 2.0, 2.0, 8.0, 1), _row("stopped", 256, 1.0, 1.0, 6.0, 2, reconnects=2),
            {"order": "stopped", "memory_mib": 256, "memload_mib": 144, "trial": 3, "error": "boom"}]
    (s256, s1024) = protect.summarize(rows)
    live, stopped = s256["live"], s256["stopped"]
    assert (live["entry_gap_s"], live["largest_gap_s"], live["protect_s"]) == (0.2, 0.3, 4.0)
    assert live["lost"] == 1 and live["disks_identical"] is False and live["trials"] == 3
    assert stopped["trials"] == 2 and stopped["failed"] == 1 and stopped["reconnects"] == 2
    assert stopped["entry_gap_s"] == 1.5 and stopped["disks_identical"] is True
    assert s256["entry_gap_ratio"] == 7.5 and s256["protect_ratio"] == 1.75
    # nothing measured at 1 GiB: no aggregate, no ratio
    assert "live" not in s1024 and s1024["entry_gap_ratio"] is None and s1024["protect_ratio"] is None


def test_a_reconnect_is_a_fact_of_the_run_not_a_fault():
    row = _row("stopped", 1024, 7.0, 7.1, 16.0, reconnects=1)
    assert row["problems"] and protect.faults(row) == []
    data = _data(protect=_section(ROWS))
    assert incomplete(data) == [] and losses(data) == {"protect": 0}
    text = "\n".join(protect_section(data["sections"]["protect"]))
    assert "reconnected" in text and "1024 MiB stopped 1" in text


def test_the_report_has_the_table_the_ratios_and_every_trial():
    data = _data(protect=_section(ROWS))
    text = render(data)
    assert "## 7. Entering COLO" in text and "Incomplete run" not in text
    assert "| 256 MiB (144 MiB in use) | stopped (QEMU's order) | 1.2 s | 1.3 s | 4.0 s | 0 | yes | 0 | 1 |" in text
    assert "| 1024 MiB (768 MiB in use) | live | 150 ms | 400 ms | 12.0 s | 0 | yes | 0 | 1 |" in text
    # the ratios stopped / live: 1.2 / 0.13 = 9.23, 7.0 / 0.15 = 46.7; 4 / 3, 16 / 12
    assert "| 256 MiB (144 MiB in use) | 1.2 s → 130 ms (9.23×) | 4.0 s → 3.0 s (1.33×) |" in text
    assert "| 1024 MiB (768 MiB in use) | 7.0 s → 150 ms (46.7×) | 16.0 s → 12.0 s (1.33×) |" in text
    assert "256 MiB median 130 ms, worst 130 ms (within), 1024 MiB median 150 ms, worst 150 ms (within)" in text
    # the goal bounds the largest pause: a median within it with one trial over it is "over"
    rows = ROWS + [_row("live", 1024, 0.14, 0.2, 12.0, trial=2), _row("live", 1024, 0.16, 0.2, 12.0, trial=3)]
    text = "\n".join(protect_section(_section(rows, trials=3)))
    assert "1024 MiB median 150 ms, worst 160 ms (over)" in text
    assert "<summary>every trial</summary>" in text and "7.0 s at 1.0 s" in text
    readme = readme_excerpt(data)
    assert "7.0 s → 150 ms (46.7×)" in readme and "docs/bench/protect_vs_ram.png" in readme


def test_a_failed_or_missing_protect_section_is_reported_as_such():
    data = _data(protect={"error": "lab up: no KVM"})
    assert incomplete(data) == ["section protect: lab up: no KVM"]
    text = render(data)
    assert "Incomplete run" in text and "Not measured: lab up: no KVM" in text
    assert incomplete({"config": {"sections": ["protect"]}, "sections": {}}) == ["section protect: missing"]
    assert losses(data) == {}


def test_an_order_without_a_measured_trial_makes_the_run_incomplete():
    rows = [r for r in ROWS if not (r["order"] == "stopped" and r["memory_mib"] == 1024)]
    rows.append({"order": "stopped", "memory_mib": 1024, "memload_mib": 768, "trial": 1, "error": "lab up: timeout"})
    sec = _section(rows)
    sec["problems"] = ["1024 MiB stopped: lab up: timeout"]
    data = _data(protect=sec)
    assert incomplete(data) == ["protect 1024 MiB stopped: 0 of 1 trials measured"]
    text = render(data)
    assert "| 1024 MiB (768 MiB in use) | – → 150 ms (–) |" in text
    assert "- problem: 1024 MiB stopped: lab up: timeout" in text and "lab up: timeout" in text
    # fewer trials than asked counts too
    assert incomplete(_data(protect=_section(ROWS, trials=3)))[0] == "protect 256 MiB stopped: 1 of 3 trials measured"


def test_lost_acks_count_as_losses_and_differing_disks_are_shown():
    rows = [*ROWS[:3], _row("stopped", 1024, 7.0, 7.1, 16.0, lost=2, identical=False)]
    data = _data(protect=_section(rows))
    assert losses(data) == {"protect": 2}
    assert "| 2 | **no** |" in render(data)


def test_the_plot_is_made_beside_the_others_and_listed(tmp_path):
    data = _data(protect=_section(ROWS))
    made = plots.make_all(data, tmp_path)
    assert made == [tmp_path / "protect_vs_ram.png"] and made[0].stat().st_size > 5000
    assert "![Entering COLO" in render(data, tmp_path)
    # nothing measured: no plot
    assert plots.make_all(_data(protect={"error": "x"}), tmp_path / "none") == []


def test_config_quick_values_and_the_prefix():
    assert "protect" in SECTIONS
    q, full = BenchConfig.make(None, True), BenchConfig.make(None, False)
    assert (q.protect_trials, full.protect_trials) == (1, 3)
    assert "bne" in full.prefixes() and len(set(full.prefixes())) == len(full.prefixes())


class FakeLab:
    made: list[FakeLab] = []
    ups: list[tuple[str, int]] = []

    def __init__(self, prefix, workdir):
        self.prefix, self.opts, self.downs = prefix, None, 0
        FakeLab.made.append(self)

    def up(self, opts):
        self.opts = opts
        FakeLab.ups.append((opts.protect, opts.memory_mib))
        if opts.memory_mib == 1024 and opts.protect == "stopped":
            raise CoserverError("not protected after 180 s")
        if opts.memory_mib == 1024 and FakeLab.ups.count(("live", 1024)) == 1:
            raise CoserverError("broken pipe")

    def down(self):
        self.downs += 1


def test_run_alternates_orders_records_failures_and_always_downs_its_labs(tmp_path, monkeypatch):
    FakeLab.made, FakeLab.ups = [], []
    calls: list[tuple[str, int, int]] = []

    def trial(lab, *, memload_mib, dirty_mib_s, interval):
        calls.append((lab.opts.protect, lab.opts.memory_mib, memload_mib))
        if len(calls) == 2:
            raise CoserverError("not protected again after 300 s")
        return ProtectTrialResult(order=lab.opts.protect, memory_mib=lab.opts.memory_mib, memload_mib=memload_mib,
                                  dirty_mib_s=dirty_mib_s, entry_gap_s=0.1, largest_gap_s=0.2, protect_s=5.0,
                                  disks_identical=True, ok=True)

    monkeypatch.setattr(protect, "Lab", FakeLab)
    monkeypatch.setattr(protect, "run_protect_trial", trial)
    said: list[str] = []
    out = protect.run(tmp_path, "bne", 2, 2000, said.append)
    # the first order alternates per size; a lab that does not come up is made once more
    assert FakeLab.ups == [("stopped", 256), ("live", 256), ("live", 1024), ("live", 1024), ("stopped", 1024),
                           ("stopped", 1024)]
    assert [(r["order"], r["memory_mib"], r["attempt"]) for r in out["labs"]] == [
        ("stopped", 256, 1), ("live", 256, 1), ("live", 1024, 2)]
    assert all(lab.opts.reprotect == "manual" for lab in FakeLab.made if lab.opts)
    assert all(lab.downs >= 1 for lab in FakeLab.made if lab.opts)
    # the 256 MiB stopped lab: trial 1 ran, trial 2 raised and ended that lab's trials; the run went on
    assert calls == [("stopped", 256, 144), ("stopped", 256, 144), ("live", 256, 144), ("live", 256, 144),
                     ("live", 1024, 768), ("live", 1024, 768)]
    assert out["problems"] == ["256 MiB stopped trial 2: not protected again after 300 s",
                               "1024 MiB live: lab up: broken pipe (attempt 1 of 2)",
                               "1024 MiB stopped: lab up: not protected after 180 s (attempt 1 of 2)",
                               "1024 MiB stopped: lab up: not protected after 180 s (attempt 2 of 2)"]
    s256, s1024 = out["by_size"]
    assert s256["stopped"]["trials"] == 1 and s256["stopped"]["failed"] == 1 and s256["live"]["trials"] == 2
    assert (s1024["stopped"]["trials"], s1024["stopped"]["failed"], s1024["stopped"]["entry_gap_s"]) == (0, 2, None)
    assert s1024["entry_gap_ratio"] is None
    assert incomplete(_data(protect=out)) == ["protect 256 MiB stopped: 1 of 2 trials measured",
                                              "protect 1024 MiB stopped: 0 of 2 trials measured"]
    assert any("could not run" in s for s in said)
