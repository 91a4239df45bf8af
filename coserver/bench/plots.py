"""PNG plots of a bench run (matplotlib, no display needed): one function per plot.

failover_gaps.png        outage, detection and promotion of every failover trial, per fault;
cost_vs_period.png       throughput and latency, unprotected and protected, against the
                         checkpoint period;
outage_ft_vs_restart.png the client-visible outage of each fault and of the restart
                         baseline (log scale), with the acked writes lost;
protect_vs_ram.png       entering COLO, stopped and live order, against guest RAM: the client's
                         pause (log scale, with the goal) and the time to protect.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after matplotlib.use("Agg"): no display on these machines

from coserver.bench.failover import FAULTS  # noqa: E402 - below the backend choice above

DPI = 100
SHORT = {"kill-primary-qemu": "kill -9 primary QEMU", "kill-secondary-qemu": "kill -9 secondary QEMU",
         "hang-primary-qemu": "hang primary QEMU", "hang-secondary-qemu": "hang secondary QEMU",
         "power-off-primary": "power cut, primary host", "power-off-secondary": "power cut, secondary host"}


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def failover_gaps(failover: dict[str, Any], path: Path) -> Path:
    """Per fault, every trial's fault → next ack and its parts: detection, promotion, the client's wait."""
    faults = [f for f in FAULTS if any(r["fault"] == f for r in failover["trials"])]
    fig, ax = plt.subplots(figsize=(max(7.0, 1.7 * len(faults)), 4.0))
    metrics = (("to_ack_s", "fault → next ack"), ("detection_s", "detection"), ("promotion_s", "promotion"),
               ("client_after_s", "client after promotion (TCP back-off)"))
    colors = ("tab:red", "tab:blue", "tab:green", "tab:purple")
    for i, fault in enumerate(faults):
        rows = [r for r in failover["trials"] if r["fault"] == fault]
        for j, (key, name) in enumerate(metrics):
            x = i * 5 + j
            ys = [max(r[key], 0.0) * 1000 for r in rows if r.get(key) is not None]
            if ys:
                ax.boxplot([ys], positions=[x], widths=0.6, showfliers=False, medianprops={"color": colors[j]})
                jitter = [x + 0.15 * ((k % 5) - 2) / 2 for k in range(len(ys))]
                ax.scatter(jitter, ys, s=12, color=colors[j], alpha=0.7, zorder=3, label=name if i == 0 else None)
    ax.set_xticks([i * 5 + 1.5 for i in range(len(faults))], [SHORT[f].replace(", ", ",\n") for f in faults],
                  fontsize=8)
    ax.set_ylabel("ms (linear below 100)")
    ax.set_yscale("symlog", linthresh=100)
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=7, loc="upper left")
    ax.set_title(f"Failover, every trial (checkpoint period {failover['checkpoint_ms']} ms)", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def cost_vs_period(cost: dict[str, Any], path: Path) -> Path:
    per = cost["by_period"]
    xs = [p["checkpoint_ms"] for p in per]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.6))
    ax1.plot(xs, [p["protected"]["appends_per_s"] for p in per], "o-", color="tab:red", label="protected (COLO)")
    ax1.plot(xs, [p["unprotected"]["appends_per_s"] for p in per], "s--", color="tab:gray",
             label="unprotected (same run)")
    ax1.set_ylabel("fsync'ed appends / s")
    ax1.set_ylim(0, ax1.get_ylim()[1] * 1.25)
    series = (("append_latency_ms", "p99", "tab:red", "o"), ("append_latency_ms", "p50", "tab:orange", "o"),
              ("probe_latency_ms", "p99", "tab:purple", "^"), ("probe_latency_ms", "p50", "tab:blue", "^"))
    for key, q, color, marker in series:
        name = "append" if key.startswith("append") else "request/response"
        ax2.plot(xs, [p["protected"][key][q] for p in per], marker + "-", color=color, label=f"{name} {q}")
        ax2.plot(xs, [p["unprotected"][key][q] for p in per], marker + "--", color=color, alpha=0.45)
    ax2.plot([], [], "k-", label="protected")
    ax2.plot([], [], "k--", alpha=0.45, label="unprotected")
    ax2.set_ylabel("latency, ms")
    ax2.set_yscale("log")
    for ax in (ax1, ax2):
        ax.set_xscale("log")
        ax.set_xticks(xs, [f"{x} ms" for x in xs])
        ax.minorticks_off()
        ax.set_xlabel("checkpoint period")
        ax.grid(alpha=0.3)
    ax1.legend(fontsize=7)
    lo_, hi_ = ax2.get_ylim()
    ax2.set_ylim(lo_, hi_ * 12)  # room above the lines for the legend
    ax2.legend(fontsize=7, ncol=3, loc="upper center")
    fig.suptitle("Cost of protection against the checkpoint period", fontsize=10)
    return _save(fig, path)


def outage_ft_vs_restart(failover: dict[str, Any] | None, restart: dict[str, Any] | None, path: Path) -> Path:
    names, meds, lo, hi, lost = [], [], [], [], []
    for fault in FAULTS:
        f = (failover or {}).get("by_fault", {}).get(fault)
        if f and f["outage_s"]["n"]:
            names.append(f"coserver: {SHORT[fault]}")
            meds.append(f["outage_s"]["p50"])
            lo.append(f["outage_s"]["min"])
            hi.append(f["outage_s"]["max"])
            lost.append(f["lost"])
    if restart and restart.get("outage_s", {}).get("n"):
        o = restart["outage_s"]
        names.append("restart on replicated disk")
        meds.append(o["p50"])
        lo.append(o["min"])
        hi.append(o["max"])
        lost.append(restart["lost"])
    fig, ax = plt.subplots(figsize=(7, 1.2 + 0.4 * len(names)))
    ys = list(range(len(names)))
    colors = ["tab:green"] * (len(names) - 1) + ["tab:orange"] if names and names[-1].startswith("restart") \
        else ["tab:green"] * len(names)
    ax.barh(ys, meds, xerr=[[m - a for m, a in zip(meds, lo, strict=True)], [b - m for m, b in zip(meds, hi, strict=True)]],
            color=colors, capsize=4)
    for y, m, b, n in zip(ys, meds, hi, lost, strict=True):
        ax.text(b * 1.15, y, f"{m * 1000:.0f} ms, lost {n}" if m < 1 else f"{m:.1f} s, lost {n}",
                va="center", fontsize=8)
    ax.set_yticks(ys, names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlim(min(lo + [0.05]) * 0.5, max(hi + [1]) * 6)
    ax.set_xlabel("client-visible outage, s (median, bar: min–max)")
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


ORDER_STYLE = {"stopped": ("tab:orange", "s--", "stopped (QEMU's order)"), "live": ("tab:green", "o-", "live")}


def protect_vs_ram(protect: dict[str, Any], path: Path) -> Path:
    """Left: the entry pause (ms, log) against guest RAM per order, each trial a dot, the median a
    line, the goal dashed; right: the time to protect, the same way."""
    by_size = protect["by_size"]
    xs_all = [s["memory_mib"] for s in by_size]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.6))
    for order, (color, style, name) in ORDER_STYLE.items():
        for ax, key, scale in ((ax1, "entry_gap", 1000.0), (ax2, "protect", 1.0)):
            pts = [(s["memory_mib"], s[order][f"{key}_s"] * scale) for s in by_size
                   if s.get(order, {}).get(f"{key}_s") is not None]
            if pts:
                ax.plot([x for x, _ in pts], [y for _, y in pts], style, color=color, label=name)
                for s in by_size:
                    ys = [v * scale for v in s.get(order, {}).get(f"{key}_all_s", []) if v is not None]
                    ax.scatter([s["memory_mib"]] * len(ys), ys, s=14, color=color, alpha=0.5, zorder=3)
                for x, y in pts:  # labels outside the lines: left of the first size, right of the others
                    first = x == min(xs_all)
                    ax.annotate(f"{y:.0f} ms" if key == "entry_gap" and y < 1000 else
                                f"{y / 1000:.1f} s" if key == "entry_gap" else f"{y:.1f} s",
                                (x, y), textcoords="offset points", xytext=(-8 if first else 8, -3),
                                ha="right" if first else "left", fontsize=7, color=color)
    goal = protect.get("goal_entry_gap_s")
    if goal:
        ax1.axhline(goal * 1000, color="tab:gray", linestyle=":", linewidth=1,
                    label=f"goal ≤ {goal * 1000:.0f} ms")
    ax1.set_yscale("log")
    lo_, hi_ = ax1.get_ylim()
    ax1.set_ylim(lo_ / 1.5, hi_ * 2.5)  # room for the labels and the legend
    lo_, hi_ = ax1.get_ylim()
    ticks = [t for t in (10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000, 20_000, 50_000) if lo_ <= t <= hi_]
    ax1.set_yticks(ticks, [f"{t:g}" for t in ticks])
    ax1.set_ylabel("client's pause entering COLO, ms")
    ax2.set_ylabel("time to protect, s")
    ax2.set_ylim(bottom=0, top=max(ax2.get_ylim()[1], 1.0) * 1.15)
    loads = {s["memory_mib"]: s["memload_mib"] for s in by_size}
    for ax in (ax1, ax2):
        ax.set_xscale("log", base=2)
        ax.set_xticks(xs_all, [f"{x} MiB\n({loads[x]} in use)" for x in xs_all], fontsize=8)
        ax.minorticks_off()
        ax.set_xlim(min(xs_all) / 1.6, max(xs_all) * 1.6)
        ax.set_xlabel("guest RAM")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"Entering COLO with the RAM in use (dirtied at {protect['dirty_mib_s']} MiB/s), a client "
                 f"appending every {protect['client_interval_s'] * 1000:.0f} ms; medians of "
                 f"{protect['trials_per_order']} trial(s)", fontsize=9)
    return _save(fig, path)


def _has_protect(protect: dict[str, Any]) -> bool:
    return any(s.get(o, {}).get("trials") for s in protect.get("by_size", []) for o in ORDER_STYLE)


def make_all(data: dict[str, Any], out: Path) -> list[Path]:
    sec = data.get("sections", {})
    made = []
    if "trials" in sec.get("failover", {}):
        made.append(failover_gaps(sec["failover"], out / "failover_gaps.png"))
    if sec.get("cost", {}).get("by_period"):
        made.append(cost_vs_period(sec["cost"], out / "cost_vs_period.png"))
    if "by_fault" in sec.get("failover", {}) or "outage_s" in sec.get("restart", {}):
        made.append(outage_ft_vs_restart(sec.get("failover"), sec.get("restart"), out / "outage_ft_vs_restart.png"))
    if _has_protect(sec.get("protect", {})):
        made.append(protect_vs_ram(sec["protect"], out / "protect_vs_ram.png"))
    return made
