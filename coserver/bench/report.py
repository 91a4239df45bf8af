"""The Markdown report of a bench run, and the checks that it is complete and lost nothing.

Everything is read from the run's JSON (bench.json), so a report can be made
again from a saved run: `python -m coserver.bench.report bench-results/bench.json`;
with --readme it prints the excerpt the README carries (key table, cost, sync).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from coserver.bench.cost import STALL_FACTOR
from coserver.bench.failover import FAULTS, GOALS_S, trials_of

SECTIONS = ("failover", "cost", "restart", "sync", "overhead", "tls", "protect")
FAULT_TITLES = {"kill-primary-qemu": "kill -9 primary QEMU → secondary takes over",
                "kill-secondary-qemu": "kill -9 secondary QEMU → primary goes on alone",
                "hang-primary-qemu": "hang (SIGSTOP) primary QEMU → secondary takes over",
                "hang-secondary-qemu": "hang (SIGSTOP) secondary QEMU → primary goes on alone",
                "power-off-primary": "power cut of the primary's host → secondary takes over",
                "power-off-secondary": "power cut of the secondary's host → primary goes on alone"}
RESTART_TITLE = "restart baseline: kill -9 the guest, boot it on the disk replica"
PLOTS = {"failover_gaps.png": "Failover: client-visible gap, detection and promotion per trial",
         "cost_vs_period.png": "Cost of protection against the checkpoint period",
         "outage_ft_vs_restart.png": "Outage: coserver failover against restart on a replicated disk",
         "protect_vs_ram.png": "Entering COLO: the client's pause and the time to protect against guest RAM, "
                               "stopped vs live order"}
ORDER_TITLES = {"stopped": "stopped (QEMU's order)", "live": "live"}


# ---- checks ------------------------------------------------------------------------------
def incomplete(data: dict[str, Any]) -> list[str]:
    """What is missing for the run to answer the questions it was asked (empty: complete)."""
    out: list[str] = []
    cfg = data.get("config", {})
    for name in cfg.get("sections", SECTIONS):
        sec = data.get("sections", {}).get(name)
        if sec is None:
            out.append(f"section {name}: missing")
        elif "error" in sec:
            out.append(f"section {name}: {sec['error']}")
    sec = data.get("sections", {})
    if "failover" in sec and "by_fault" in sec["failover"]:
        for fault in sec["failover"].get("faults", list(sec["failover"]["by_fault"])):  # older runs: kill -9 only
            f = sec["failover"]["by_fault"].get(fault, {})
            want = trials_of(fault, cfg.get("trials", 1), cfg.get("detect_trials", cfg.get("trials", 1)))
            if f.get("outage_s", {}).get("n", 0) < want:
                out.append(f"failover {fault}: {f.get('outage_s', {}).get('n', 0)} of {want} trials measured")
            if f.get("unverified"):
                out.append(f"failover {fault}: {f['unverified']} trials not read back")
    if "cost" in sec and "by_period" in sec["cost"]:
        for p in sec["cost"]["by_period"]:
            for mode in ("unprotected", "protected"):
                if not p[mode].get("runs"):
                    out.append(f"cost {p['checkpoint_ms']} ms: no {mode} run")
    if "restart" in sec and "trials" in sec["restart"]:
        if sec["restart"]["outage_s"]["n"] < len(sec["restart"]["trials"]) or sec["restart"].get("unverified"):
            out.append("restart baseline: a trial was not measured or not read back")
    if "sync" in sec and "ratio" in sec["sync"] and sec["sync"]["ratio"] is None:
        out.append("sync: no ratio")
    if "overhead" in sec and "controller_cpu_s_per_min" in sec["overhead"]:
        if len(sec["overhead"]["controller_cpu_s_per_min"]) != 2:
            out.append("overhead: not both controllers measured")
    if "tls" in sec and "error" not in sec["tls"]:
        for mode in ("plaintext", "tls"):
            if mode not in sec["tls"]:
                out.append(f"tls: no {mode} run")
    if "protect" in sec and "by_size" in sec["protect"]:
        want = sec["protect"].get("trials_per_order", 1)
        for size in sec["protect"]["by_size"]:
            for order in ORDER_TITLES:
                n = size.get(order, {}).get("trials", 0)
                if n < want:
                    out.append(f"protect {size['memory_mib']} MiB {order}: {n} of {want} trials measured")
    return out


def losses(data: dict[str, Any]) -> dict[str, int]:
    """Acked writes lost, per fault and for the restart baseline."""
    sec = data.get("sections", {})
    out = {f: v.get("lost", 0) for f, v in sec.get("failover", {}).get("by_fault", {}).items()}
    if "lost" in sec.get("restart", {}):
        out["restart-baseline"] = sec["restart"]["lost"]
    if "by_size" in sec.get("protect", {}):
        out["protect"] = sum(one.get(o, {}).get("lost", 0) for one in sec["protect"]["by_size"] for o in ORDER_TITLES)
    return out


# ---- formatting --------------------------------------------------------------------------
def _ms(v: float | None) -> str:
    return "–" if v is None else f"{v * 1000:.0f} ms"


def _s(v: float | None, digits: int = 2) -> str:
    return "–" if v is None else f"{v:.{digits}f} s"


def _num(v: float | None, fmt: str = ".1f", unit: str = "") -> str:
    return "–" if v is None else f"{v:{fmt}}{unit}"


def _dur(v: float | None) -> str:
    """A duration in its natural unit."""
    if v is None:
        return "–"
    return _ms(v) if v < 1 else _s(v, 1)


def _others(data: dict[str, Any]) -> int:
    """The most QEMU processes seen while none of the bench's own ran (at section starts, between
    cost runs)."""
    m = data.get("machine", {})
    seen = [b.get("qemu_processes", 0) for b in m.get("at_sections", {}).values()]
    seen += [r.get("machine_before", {}).get("qemu_processes", 0)
             for r in data.get("sections", {}).get("cost", {}).get("runs", [])]
    seen += [m.get(k, {}).get("qemu_processes", 0) for k in ("at_start", "at_end")]
    return max(seen)


def _load(b: dict[str, Any] | None) -> str:
    if not b:
        return "–"
    return " ".join(f"{x:.2f}" for x in b["loadavg"]) + f" ({b['qemu_processes']} QEMU processes)"


def _trio(s: dict[str, Any], f=_dur) -> str:
    return f"{f(s.get('p50'))} / {f(s.get('p90'))} / {f(s.get('max'))}"


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|",
            *("| " + " | ".join(r) + " |" for r in rows)]


def _pair(s: dict[str, Any]) -> str:
    return f"{_dur(s.get('p50'))} / {_dur(s.get('p99'))}"


def _fault_goal(f: dict[str, Any], fault: str) -> tuple[tuple[float, float] | None, dict[str, Any], bool | None]:
    """The issue's (p50, p99) goal for this fault, the figure it judges (the fault to the client's next
    ack; older runs: the outage) and whether this run met it (None: no goal or no figure)."""
    goal = f.get("goal_s") or GOALS_S.get(fault)
    o = f.get("to_ack_s") or f.get("outage_s", {})
    if not goal or o.get("p50") is None or o.get("p99") is None:
        return goal, o, None
    return goal, o, o["p50"] <= goal[0] and o["p99"] <= goal[1]


def _goal(f: dict[str, Any], fault: str) -> str:
    """The issue's goal for this fault (p50 / p99) and whether this run met it."""
    goal, _, ok = _fault_goal(f, fault)
    if not goal:
        return "–"
    return f"≤ {_dur(goal[0])} / {_dur(goal[1])}: {'met' if ok else '**not met**'}"


def key_table(data: dict[str, Any]) -> list[str]:
    """For each fault and the baseline: the outage the client saw, against the goal, and the acked writes lost."""
    sec = data.get("sections", {})
    rows = []
    for fault in FAULTS:
        f = sec.get("failover", {}).get("by_fault", {}).get(fault)
        if f:
            rows.append([FAULT_TITLES[fault], _pair(f.get("to_ack_s", {})), _pair(f["outage_s"]),
                         _dur(f["outage_s"].get("max")), _goal(f, fault), str(f["lost"]), str(f["trials"])])
    r = sec.get("restart", {})
    if "outage_s" in r:
        rows.append([RESTART_TITLE, "–", _pair(r["outage_s"]), _dur(r["outage_s"].get("max")), "–", str(r["lost"]),
                     str(len(r["trials"]))])
    return _table(["fault", "fault → client's next ack p50 / p99", "client-visible outage p50 / p99", "max",
                   "goal (next ack p50 / p99)", "acked writes lost", "trials"], rows)


#: The performance issue's goals that are not per fault: the pinned cost at a 1 s period, the idle controller.
GOAL_THROUGHPUT_RATIO, GOAL_P99_RATIO, GOAL_PERIOD_MS, GOAL_CONTROLLER_CPU_S = 0.6, 3.0, 1000, 0.6


def _met(ok: bool | None) -> str:
    return "–" if ok is None else ("met" if ok else "**not met**")


def _worst_entry_gap(live: dict[str, Any]) -> float:
    """The live order's largest entry pause over its trials (the goal bounds every one of them)."""
    return float(max(live.get("entry_gap_all_s") or [live["entry_gap_s"]]))


def goals_table(data: dict[str, Any]) -> list[str]:
    """Every goal of the performance issue this run measured: the goal, the figure, met or not."""
    sec = data.get("sections", {})
    rows: list[list[str]] = []
    for size in sec.get("protect", {}).get("by_size", []):
        live = size.get("live", {})
        if live.get("entry_gap_s") is None:
            continue
        goal = sec["protect"]["goal_entry_gap_s"]
        worst = _worst_entry_gap(live)
        rows.append([f"entering COLO live, {size['memory_mib']} MiB RAM ({size['memload_mib']} MiB in use)",
                     f"client pause ≤ {_dur(goal)}", f"{_dur(live['entry_gap_s'])} (median), worst {_dur(worst)}",
                     _met(worst <= goal)])
    for fault, f in sec.get("failover", {}).get("by_fault", {}).items():
        goal, o, ok = _fault_goal(f, fault)
        if goal:
            rows.append([FAULT_TITLES[fault], f"fault → next ack p50 ≤ {_dur(goal[0])}, p99 ≤ {_dur(goal[1])}",
                         _pair(o), _met(ok)])
    pinned = {p["checkpoint_ms"]: p for p in sec.get("cost", {}).get("pinned_by_period", [])}.get(GOAL_PERIOD_MS)
    if pinned:
        t, q = pinned.get("throughput_ratio"), pinned.get("append_p99_ratio")
        rows.append([f"protected/unprotected appends/s, pinned, {GOAL_PERIOD_MS} ms period",
                     f"≥ {GOAL_THROUGHPUT_RATIO}", _num(t, ".2f"), _met(None if t is None else t >= GOAL_THROUGHPUT_RATIO)])
        rows.append([f"append latency p99 protected/unprotected, pinned, {GOAL_PERIOD_MS} ms period",
                     f"≤ {GOAL_P99_RATIO:g}×", _ratio(q), _met(None if q is None else q <= GOAL_P99_RATIO)])
    ctl = sec.get("overhead", {}).get("controller_cpu_s_per_min")
    if ctl:
        rows.append(["idle controller CPU", f"≤ {GOAL_CONTROLLER_CPU_S} s per minute each",
                     " and ".join(f"{v:.2f}" for v in ctl), _met(max(ctl) <= GOAL_CONTROLLER_CPU_S)])
    return _table(["goal of the performance issue", "goal", "this run", ""], rows) if rows else []


def _placement_lines(cost: dict[str, Any]) -> list[str]:
    """Shared against pinned, per period: the throughput ratio and the append p99 ratio side by side."""
    pinned = {p["checkpoint_ms"]: p for p in cost.get("pinned_by_period", [])}
    rows = []
    for s in cost.get("by_period", []):
        p = pinned.get(s["checkpoint_ms"])
        if p is None:
            continue
        rows.append([f"{s['checkpoint_ms']} ms",
                     f"{_num(s['throughput_ratio'], '.2f')}× → {_num(p['throughput_ratio'], '.2f')}×",
                     f"{_num(s.get('append_p99_ratio'), '.1f')}× → {_num(p.get('append_p99_ratio'), '.1f')}×"])
    return _table(["checkpoint period", "protected/unprotected appends/s, shared → pinned",
                   "protected/unprotected append p99, shared → pinned"], rows) if rows else []


STAGE_TITLES = {"stalls": "checkpoint stalls", "network_compare": "proxy hops + compare wait",
                "write_and_rest": "replicated write + rest"}


def _stage(st: dict[str, Any], k: str) -> str:
    share = st["share"].get(k)
    return f"{st[k + '_ms']:.2f}" + ("" if share is None else f" ({share * 100:.0f} %)")


def stage_table(cost: dict[str, Any]) -> list[str]:
    """Where a protected append's time goes, per placement and period (cost.stages)."""
    rows = []
    for key, name in (("by_period", "shared"), ("pinned_by_period", "pinned")):
        for p in cost.get(key, []):
            st = p.get("stages_ms_per_append")
            if not st:
                continue
            rows.append([f"{p['checkpoint_ms']} ms, {name}", f"{st['unprotected_ms']:.2f}",
                         f"{st['protected_ms']:.2f}", _stage(st, "stalls"),
                         f"{st['pause_ms']:.2f}" if "pause_ms" in st else "–",
                         f"{st['stalled_appends']} of {st['appends']}" if "stalled_appends" in st else "–",
                         _stage(st, "network_compare"), _stage(st, "write_and_rest"), STAGE_TITLES[st["largest"]]])
    return _table(["period, placement", "ms per append unprotected", "protected", "+ checkpoint stalls",
                   "of which QEMU's stop", "stalled appends", "+ proxy hops and compare wait",
                   "+ replicated write and the rest", "largest"], rows) if rows else []


def _cost_table(cost: dict[str, Any]) -> list[str]:
    rows = []
    for p in cost["by_period"]:
        a, b = p["unprotected"], p["protected"]
        ap = b.get("appends", {})
        rows.append([
            f"{p['checkpoint_ms']} ms",
            f"{_num(a['appends_per_s'], '.0f')} → {_num(b['appends_per_s'], '.0f')} "
            f"({_num(p['throughput_ratio'], '.2f')}×)",
            f"{_num(a['append_latency_ms']['p50'])} / {_num(a['append_latency_ms']['p99'])} → "
            f"{_num(b['append_latency_ms']['p50'])} / {_num(b['append_latency_ms']['p99'])}",
            f"{_num(a['probe_latency_ms']['p50'])} / {_num(a['probe_latency_ms']['p99'])} → "
            f"{_num(b['probe_latency_ms']['p50'])} / {_num(b['probe_latency_ms']['p99'])}",
            f"{_num(ap.get('checkpoints_per_s'), '.2f')} / {_num(b.get('probe', {}).get('checkpoints_per_s'), '.2f')}",
            f"{_num(ap.get('pause_ms', {}).get('p50'), '.0f')} / {_num(ap.get('pause_ms', {}).get('max'), '.0f')}",
            _num(ap["migration_bytes_per_checkpoint"] / 2**20, '.2f', ' MiB')
            if ap.get("migration_bytes_per_checkpoint") else "–",
            _num(ap.get("nbd_bytes_per_append", 0) / 1024, '.1f', ' KiB') if ap.get("nbd_bytes_per_append") else "–",
            f"{_num(a['qemu_cpu_s_per_s'], '.2f')} → {_num(b['qemu_cpu_s_per_s'], '.2f')}",
        ])
    return _table(["checkpoint period", "appends/s unprotected → protected (ratio)",
                   "append latency p50 / p99 ms", "request/response p50 / p99 ms",
                   "checkpoints/s (appends / probe)", "pause per checkpoint p50 / max ms",
                   "sent per checkpoint", "NBD per append", "QEMU CPU s/s"], rows)


def render(data: dict[str, Any], out_dir: Path | None = None) -> str:
    m, cfg, sec = data.get("machine", {}), data.get("config", {}), data.get("sections", {})
    L: list[str] = ["# coserver benchmark report", ""]
    L.append(f"Made by `{data.get('command', 'coserver bench')}` on {m.get('date_utc')} "
             f"in {data.get('seconds', 0) / 60:.1f} min{' (quick)' if cfg.get('quick') else ''}.")
    L.append("")
    L += _table(["machine", ""], [
        ["CPU", f"{m.get('cpu_model')} × {m.get('cpus')}"], ["memory", f"{m.get('memory_gib')} GiB"],
        ["OS / kernel", f"{m.get('os')} / {m.get('kernel')}"], ["virtualisation", str(m.get("virtualization"))],
        ["QEMU", f"{m.get('qemu_version')} ({m.get('qemu_binary')}, {m.get('qemu_source')})"],
        ["accelerator", str(m.get("accel"))],
        ["load average (1/5/15 min) at start / end", f"{_load(m.get('at_start'))} / {_load(m.get('at_end'))}"],
        ["coserver", f"{m.get('coserver')} {m.get('git_commit') or ''}{' (modified)' if m.get('git_dirty') else ''}"],
    ])
    shared = _others(data)
    if shared:
        L += ["", f"**The machine was shared:** {shared} QEMU process(es) of something else ran at some point "
              "between the bench's own runs; figures measured then include that load (see `machine` and "
              "`machine_before` in the JSON)."]
    L += ["", "Every part ran on one machine: the two CoServers are network namespaces, each guest "
          "copy a QEMU process; both hosts share the same CPUs, so every figure includes that contention.", ""]
    L += ["## Key figures: outage and acked writes lost, per fault", ""] + key_table(data) + [""]
    goals = goals_table(data)
    if goals:
        L += ["## Goals", ""] + goals + [""]
    bad = incomplete(data)
    if bad:
        L += ["**Incomplete run:** " + "; ".join(bad), ""]
    for png, title in PLOTS.items():
        if out_dir is None or (out_dir / png).exists():
            L += [f"![{title}]({png})", ""]

    f = sec.get("failover", {})
    L += ["## 1. Failover gap", ""]
    if "by_fault" in f:
        L += [f"Each fault on a fresh protected pair per trial (checkpoint period {f['checkpoint_ms']} ms), "
              f"a client appending every {f['client_interval_s'] * 1000:.0f} ms. Faults: kill -9 of a QEMU; a hang "
              "(SIGSTOP: the process stays, its sockets stay open, QMP goes silent); a power cut (the host's links "
              "go dark, then its controller and QEMU die at once). "
              "Next ack: the fault to the client's first OK after it (the goals' measure). "
              "Outage: the longest time the client got no OK, from the last OK before the fault on (it also holds "
              "the silence already running when the fault came: a checkpoint under way, a reply colo-compare "
              "still held for the secondary's copy; silent before). Gap: "
              "the last OK before the fault to the first OK after (shorter when an OK already on its way "
              "arrives just after the fault and the stall follows). Detection: the fault to the survivor's "
              "controller deciding (state failing_over). Promotion: from there to the survivor serving alone "
              "(state simplex). Client after: from there to the client's first OK, what its TCP "
              "retransmission back-off adds. Lost: acked appends not readable with GET on the survivor.", ""]
        rows = [[FAULT_TITLES[k], _trio(v.get("to_ack_s", {})), _trio(v["outage_s"]),
                 _trio(v.get("silent_before_s", {})), _trio(v["detection_s"]), _trio(v["promotion_s"]),
                 _trio(v.get("client_after_s", {})), _goal(v, k), str(v["lost"]), str(v["trials"])]
                for k, v in f["by_fault"].items()]
        L += _table(["fault", "next ack p50 / p90 / max", "outage p50 / p90 / max", "silent before p50 / p90 / max",
                     "detection p50 / p90 / max", "promotion p50 / p90 / max", "client after p50 / p90 / max",
                     "goal (next ack p50 / p99)", "lost", "trials"], rows) + [""]
        L += ["<details><summary>every trial</summary>", ""]
        L += _table(["#", "fault", "next ack", "outage", "silent before", "detection", "promotion", "client after",
                     "acked", "lost", "reconnects", "problems"],
                    [[str(r.get("trial")), r["fault"], _dur(r.get("to_ack_s")), _dur(r.get("outage_s")),
                      _dur(r.get("silent_before_s")),
                      _dur(r.get("detection_s")), _dur(r.get("promotion_s")), _dur(r.get("client_after_s")),
                      str(r.get("acked", "–")), str(r.get("lost")), str(r.get("reconnects", "–")),
                      "; ".join(r.get("problems", []))]
                     for r in f["trials"]])
        L += ["", "</details>", ""]
    elif "error" in f:
        L += [f"Not measured: {f['error']}", ""]

    c = sec.get("cost", {})
    L += ["## 2. Cost of protection", ""]
    if "by_period" in c:
        L += [f"The same guest (same hardware profile, same network path) alone on one QEMU (unprotected) and "
              f"as a COLO pair (protected), alternating A/B, {c['rounds']} round(s) per period, a fresh guest per "
              f"run. Workload per run: {c['append_s']:g} s of back-to-back appends (each acknowledged after "
              f"fsync), then {c['probe_s']:g} s of a request/response probe (COUNT, no disk, every "
              f"{c['probe_interval_s'] * 1000:.0f} ms). Checkpoints and the guest's pause per checkpoint come "
              "from the primary QEMU's own events (MIGRATION_PASS, STOP/RESUME); bytes per checkpoint from the "
              "kernel's byte counters of the migration connection; NBD per append from the NBD connection's.", ""]
        L += (["**Shared cores** (the QEMUs wherever the kernel runs them: on this one machine both CoServers "
               "compete for the same cores):", ""] if c.get("pinned_by_period") else []) + _cost_table(c) + [""]
        if c.get("pinned_by_period"):
            L += ["**Pinned** (each CoServer's QEMU on a core of its own, as on two hosts: the primary's and the "
                  "unprotected guest's on core 0, the secondary's on core 1; controllers and client not pinned):", ""]
            L += _cost_table({"by_period": c["pinned_by_period"]}) + [""]
            L += _placement_lines(c) + [""]
        stages = stage_table(c)
        if stages:
            L += ["**Where a protected append's time goes** (ms per append; the client appends back to back, so "
                  "the time per append is the window over the appends made). Checkpoint stalls: what the slow "
                  f"appends (over {STALL_FACTOR:g}× the protected median) took beyond the median, per append: "
                  "the checkpoints as the client sees them (the guest stopped, then replies colo-compare holds until the secondary's "
                  "copies come, sometimes a client retransmission); QEMU's own stop for the checkpoints (its "
                  "events) beside it. Proxy hops and compare wait: a request/response without disk (the probe's "
                  "p50), protected minus unprotected. Replicated write and the rest: the steady remainder, the "
                  "write's round trip over NBD to the secondary's disk and, on shared cores, the CPU the "
                  "secondary takes from the primary.", ""] + stages + [""]
        if c.get("problems"):
            L += ["Runs that failed: " + "; ".join(c["problems"]), ""]
    elif "error" in c:
        L += [f"Not measured: {c['error']}", ""]

    r = sec.get("restart", {})
    L += ["## 3. Restart-failover baseline (replicated disk, no lock-step)", ""]
    if "trials" in r:
        L += ["What a cluster that replicates the disk but not the running guest gives: the guest runs on cs1 "
              "with its disk a quorum of its own copy and cs2's copy over NBD (every write and flush on both "
              "before it completes: synchronous, like DRBD protocol C); kill -9 its QEMU, boot it again on cs2 "
              f"from cs2's copy. Detection: {r['detection']}; the restarted QEMU announces the guest's MAC "
              f"(as a cluster agent's gratuitous ARP would). Client: an append every "
              f"{r['client_interval_s'] * 1000:.0f} ms, {r['client_timeout_s']:g} s timeout, reconnecting.", ""]
        L += _table(["#", "outage", "gap", "detection", "guest answers after", "acked", "lost", "problems"],
                    [[str(t.get("trial")), _dur(t.get("outage_s")), _dur(t.get("gap_s")), _dur(t.get("detection_s")),
                      _dur(t.get("guest_answers_s")), str(t.get("acked", "–")), str(t.get("lost")),
                      "; ".join(t.get("problems", []))] for t in r["trials"]]) + [""]
    elif "error" in r:
        L += [f"Not measured: {r['error']}", ""]

    s = sec.get("sync", {})
    L += ["## 4. Time to protect", ""]
    if "repeats" in s:
        L += [f"Initial sync of a {s['disk_bytes'] / 2**30:.0f} GiB disk ({s['content']}) of a running guest to "
              "a blank secondary (coserver's mirror until in step, then the switch into COLO), against "
              "`qemu-img convert` of the same bytes to a blank target exported by the same NBD server over the "
              "same sync link, in the same run (then once more over the now allocated target). Each repeat on "
              "fresh QEMUs and disks.", ""]

        def copy(r: dict[str, Any], target: str) -> str:
            c = next((c for c in r.get("raw_copies", []) if c["target"] == target), None)
            return f"{c['seconds']:.2f} s ({c['mib_per_s']:.0f} MiB/s)" if c else "–"

        rows = [[str(i + 1), copy(r, "blank"), copy(r, "overwrite"),
                 f"{_s(r.get('sync_s'))} ({_num(r.get('sync_mib_per_s'), '.0f', ' MiB/s')})", _s(r.get("protect_s")),
                 _num(r.get("ratio"), ".2f")] for i, r in enumerate(s["repeats"])]
        rows.append(["median", _s(s.get("raw_copy_s")), "", _s(s.get("sync_s")), _s(s.get("protect_s")),
                     f"**{_num(s.get('ratio'), '.2f')}**"])
        L += _table(["#", "raw copy, blank target", "raw copy, overwrite", "coserver initial sync",
                     "protected after", "ratio sync / raw copy"], rows) + [""]
    elif "error" in s:
        L += [f"Not measured: {s['error']}", ""]

    o = sec.get("overhead", {})
    L += ["## 5. Controller overhead", ""]
    if "cpu_s_per_min" in o:
        L += [f"A protected pair (checkpoint period {o['checkpoint_ms']} ms), idle guest, no client; CPU time "
              f"(user + system) over {o['window_s']:.0f} s.", ""]
        L += _table(["process", "CPU s per minute", "% of one core"],
                    [[k, f"{v:.2f}", f"{v / 60 * 100:.1f} %"] for k, v in o["cpu_s_per_min"].items()]) + [""]
        if "monitoring_extra_cpu_s_per_min" in o:
            fmt = lambda vs: ", ".join(f"{v:.2f}" for v in vs)  # noqa: E731
            L += [f"What watching costs the controllers ({o['burst']} requests in a burst each): a /metrics "
                  f"scrape {fmt(o['cpu_ms_per_scrape'])} ms of CPU, a status request {fmt(o['cpu_ms_per_status'])} "
                  "ms; with Prometheus scraping every 15 s and the status page open (a status request every 2 s): "
                  + ", ".join(f"{v:+.3f}" for v in o["monitoring_extra_cpu_s_per_min"])
                  + " CPU s per minute per controller (bound: 0.1).", ""]
    elif "error" in o:
        L += [f"Not measured: {o['error']}", ""]

    L += tls_section(sec.get("tls", {}))
    L += protect_section(sec.get("protect", {}))
    L += ["## Sections' run times", ""]
    L += _table(["section", "seconds"], [[k, f"{v:.0f}"] for k, v in data.get("section_seconds", {}).items()])
    L += ["", f"Every raw figure: `{data.get('json_name', 'bench.json')}`.", ""]
    return "\n".join(L)


def tls_section(t: dict[str, Any]) -> list[str]:
    """Section 6: the same protected pair in plain TCP and with TLS, side by side, and the ratios."""
    L = ["## 6. TLS on the replication streams", ""]
    if "plaintext" in t and "tls" in t:
        L += [f"The same protected pair (checkpoint period {t['checkpoint_ms']} ms), {t['rounds']} round(s) each "
              "way, alternating: `lab up --insecure` (plain TCP) against the default (TLS 1.3 on the COLO "
              "migration, NBD and the proxy chardevs, each side admitting only the other's certificate).", ""]

        def row(name: str, key: Any) -> list[str]:
            a, b = key(t["plaintext"]), key(t["tls"])
            return [name, _num(a, ".1f"), _num(b, ".1f"), _num(b / a if a and b else None, ".2f")]
        L += _table(["", "plain TCP", "TLS", "TLS / plain"], [
            row("fsync'ed appends/s", lambda s: s["appends_per_s"]),
            row("append latency p50 ms", lambda s: s["append_latency_ms"]["p50"]),
            row("probe latency p50 ms", lambda s: s["probe_latency_ms"]["p50"]),
            row("pause per checkpoint p50 ms", lambda s: s["appends"]["pause_ms"]["p50"]),
            row("sent per checkpoint KiB", lambda s: (s["appends"]["migration_bytes_per_checkpoint"] or 0) / 1024),
            row("lab up until protected s", lambda s: s["lab_up_s"]),
        ]) + [""]
    elif "error" in t:
        L += [f"Not measured: {t['error']}", ""]
    for p in t.get("problems", []):
        L.append(f"- problem: {p}")
    return L


def _yes(v: bool | None) -> str:
    return "–" if v is None else ("yes" if v else "**no**")


def _ratio(v: float | None) -> str:
    return "–" if v is None else f"{v:.1f}×" if v >= 10 else f"{v:.2f}×"


def protect_rows(p: dict[str, Any]) -> list[list[str]]:
    """Per RAM size: the entry pause and the time to protect, stopped → live, and the ratios."""
    rows = []
    for size in p.get("by_size", []):
        a, b = size.get("stopped", {}), size.get("live", {})
        rows.append([f"{size['memory_mib']} MiB ({size['memload_mib']} MiB in use)",
                     f"{_dur(a.get('entry_gap_s'))} → {_dur(b.get('entry_gap_s'))} ({_ratio(size.get('entry_gap_ratio'))})",
                     f"{_s(a.get('protect_s'), 1)} → {_s(b.get('protect_s'), 1)} ({_ratio(size.get('protect_ratio'))})"])
    return rows


PROTECT_HEAD = ["guest RAM", "pause entering COLO, stopped → live (ratio)", "time to protect, stopped → live (ratio)"]


def protect_section(p: dict[str, Any]) -> list[str]:
    """Section 7: entering COLO in both orders against guest RAM, side by side, and the ratios."""
    L = ["## 7. Entering COLO: the pause and the time to protect against guest RAM", ""]
    if "by_size" in p:
        cp = p["checkpoint_ms"]
        L += ["The two orders of entering COLO (site key `protect`): **stopped**, QEMU's documented order (the guest "
              "stopped for the whole RAM copy), and **live** (the RAM copied while the guest runs; it stops only for "
              f"the switchover). Per guest RAM size and order a fresh lab pair (checkpoint period {cp} ms, "
              f"re-protection manual), {p['trials_per_order']} re-protection(s) each, the order that goes first "
              "alternating from one size to the next. Each: the secondary's QEMU killed, the guest fills part of its "
              f"RAM and keeps dirtying it at {p['dirty_mib_s']} MiB/s, then `pair reprotect` while a client appends "
              f"every {p['client_interval_s'] * 1000:.0f} ms (5 s timeout, reconnecting). **Entry pause**: the "
              "client's longest wait between two acks that began between the rejoin request and 0.5 s after both "
              f"controllers said protected (the goal: ≤ {p['goal_entry_gap_s'] * 1000:.0f} ms). **Largest gap**: "
              "the same over the whole window, which also holds the first periodic checkpoints. **Time to "
              "protect**: the rejoin request until both controllers said protected. Disks identical: both hosts' "
              "disks compared block by block after a quiet period. Medians over the trials.", ""]
        rows = []
        for size in p["by_size"]:
            for order in ORDER_TITLES:
                a = size.get(order)
                if a is None:
                    continue
                rows.append([f"{size['memory_mib']} MiB ({size['memload_mib']} MiB in use)", ORDER_TITLES[order],
                             _dur(a["entry_gap_s"]), _dur(a["largest_gap_s"]), _s(a["protect_s"], 1), str(a["lost"]),
                             _yes(a["disks_identical"]), str(a["reconnects"]),
                             f"{a['trials']}" + (f" ({a['failed']} failed)" if a.get("failed") else "")])
        L += _table(["guest RAM", "order", "entry pause p50", "largest gap p50", "time to protect p50",
                     "acked lost", "disks identical", "client reconnects", "trials"], rows) + [""]
        L += _table(PROTECT_HEAD, protect_rows(p)) + [""]
        live = [(size["memory_mib"], size["live"]["entry_gap_s"], _worst_entry_gap(size["live"]))
                for size in p["by_size"] if size.get("live", {}).get("entry_gap_s") is not None]
        if live:   # the goal bounds the largest pause: judged by the worst trial, as in the goals table
            goal = p["goal_entry_gap_s"]
            L += [f"Live order against the goal (≤ {goal * 1000:.0f} ms, every trial): "
                  + ", ".join(f"{m} MiB median {_dur(g)}, worst {_dur(w)} ({'within' if w <= goal else 'over'})"
                              for m, g, w in live) + ".", ""]
        broke = [f"{size['memory_mib']} MiB {order} {size[order]['reconnects']}" for size in p["by_size"]
                 for order in ORDER_TITLES if size.get(order, {}).get("reconnects")]
        if broke:
            L += ["The client's connection broke and it reconnected (the guest stopped for longer than its 5 s "
                  "timeout; the pause then includes the reconnection): " + ", ".join(broke) + " time(s).", ""]
        L += ["<details><summary>every trial</summary>", ""]
        trial_rows = []
        for r in p.get("runs", []):
            gaps = ", ".join(f"{g * 1000:.0f} ms at {t:.1f} s" if g < 1 else f"{g:.1f} s at {t:.1f} s"
                             for t, g in r.get("gaps", []))
            trial_rows.append([f"{r['memory_mib']} MiB", r["order"], str(r.get("trial")), _dur(r.get("entry_gap_s")),
                               _dur(r.get("largest_gap_s")), _s(r.get("protect_s"), 1), str(r.get("acked", "–")),
                               str(r.get("lost", "–")), str(r.get("reconnects", "–")), _yes(r.get("disks_identical")),
                               gaps or "–", r.get("error") or "; ".join(r.get("problems", []))])
        L += _table(["guest RAM", "order", "#", "entry pause", "largest gap", "time to protect", "acked", "lost",
                     "reconnects", "disks identical", "client gaps > 100 ms (after the rejoin request)",
                     "problems"], trial_rows)
        L += ["", "</details>", ""]
    elif "error" in p:
        L += [f"Not measured: {p['error']}", ""]
    for prob in p.get("problems", []):
        L.append(f"- problem: {prob}")
    if p.get("problems"):
        L.append("")
    return L


def readme_excerpt(data: dict[str, Any], plot: str = "docs/bench/outage_ft_vs_restart.png",
                   protect_plot: str = "docs/bench/protect_vs_ram.png") -> str:
    """The README's copy of a run: its command and machine, the key table, one plot, the cost in
    short, time to protect, the controllers' CPU, and entering COLO in both orders (with its plot)."""
    m, sec = data.get("machine", {}), data.get("sections", {})
    L = [f"`{data.get('command')}` on {m.get('date_utc', '?')[:10]}: {m.get('cpu_model')} × {m.get('cpus')} "
         f"({m.get('virtualization') or 'bare metal'}; both CoServers share these cores), "
         f"QEMU {m.get('qemu_version')}, {str(m.get('accel')).upper()}, coserver {m.get('git_commit')}, "
         f"{data.get('seconds', 0) / 60:.0f} min.", ""]
    shared = _others(data)
    if shared:
        L += [f"(The machine was shared with up to {shared} other QEMU processes during part of this run: see the "
              "report.)", ""]
    L += key_table(data) + ["", f"![{PLOTS['outage_ft_vs_restart.png']}]({plot})", ""]
    goals = goals_table(data)
    if goals:
        L += ["The performance issue's goals against this run:", ""] + goals + [""]
    c = sec.get("cost", {})
    if c.get("by_period"):
        rows = []
        for p in c["by_period"]:
            a, b = p["unprotected"], p["protected"]
            ap = b.get("appends", {})
            mig = ap.get("migration_bytes_per_checkpoint")
            rows.append([f"{p['checkpoint_ms']} ms",
                         f"{_num(a['appends_per_s'], '.0f')} → {_num(b['appends_per_s'], '.0f')} "
                         f"({_num(p['throughput_ratio'], '.2f')}×)",
                         f"{_num(a['append_latency_ms']['p50'])} / {_num(a['append_latency_ms']['p99'])} → "
                         f"{_num(b['append_latency_ms']['p50'])} / {_num(b['append_latency_ms']['p99'])}",
                         _num(ap.get("pause_ms", {}).get("p50"), ".0f", " ms"),
                         _num(mig / 2**20, ".1f", " MiB") if mig else "–"])
        L += _table(["checkpoint period", "fsync'ed appends/s unprotected → protected",
                     "append latency p50 / p99 ms", "pause per checkpoint", "sent per checkpoint"], rows) + [""]
        if c.get("pinned_by_period"):
            L += ["Each CoServer's QEMU on a core of its own (as on two hosts) against shared cores:", ""]
            L += _placement_lines(c) + [""]
        stages = stage_table(c)
        if stages:
            L += ["Where a protected append's time goes (ms per append; checkpoint stalls: what the appends slower "
                  f"than {STALL_FACTOR:g}× the median took beyond it):", ""] + stages + [""]
    s, o = sec.get("sync", {}), sec.get("overhead", {})
    if s.get("ratio") is not None:
        L.append(f"Time to protect a {s['disk_bytes'] / 2**30:.0f} GiB disk: initial sync {_s(s['sync_s'])} "
                 f"(protected after {_s(s['protect_s'])}) against {_s(s['raw_copy_s'])} for `qemu-img convert` of "
                 f"the same bytes over the same path: ratio {s['ratio']:.2f}.")
        L.append("")
    if o.get("controller_cpu_s_per_min"):
        L.append("Controllers of an idle protected pair: "
                 + " and ".join(f"{v:.1f}" for v in o["controller_cpu_s_per_min"]) + " CPU s per minute.")
    p = sec.get("protect", {})
    if p.get("by_size"):
        L += [""] if L[-1] else []
        L += [f"Entering COLO with the guest's RAM in use (dirtied at {p['dirty_mib_s']} MiB/s) while a client "
              "appends every 10 ms: the client's pause and the time to protect, QEMU's order (guest stopped for the "
              f"RAM copy) against the live one, medians of {p['trials_per_order']} trial(s):", ""]
        L += _table(PROTECT_HEAD, protect_rows(p)) + ["", f"![{PLOTS['protect_vs_ram.png']}]({protect_plot})"]
    return "\n".join(L) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = list(argv if argv is not None else sys.argv[1:])
    readme = "--readme" in args
    args = [a for a in args if a != "--readme"]
    if len(args) != 1:
        print("usage: python -m coserver.bench.report [--readme] BENCH_JSON", file=sys.stderr)
        return 2
    path = Path(args[0])
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        print(f"coserver.bench.report: error: cannot read {path}: {exc}", file=sys.stderr)
        return 2
    if readme:
        print(readme_excerpt(data), end="")
    else:
        (path.parent / "report.md").write_text(render(data, path.parent))
    return 0


if __name__ == "__main__":
    sys.exit(main())
