"""PNG plots of a bench run (matplotlib, no display needed): one function per plot.

failover_gaps.png        outage, detection and promotion of every failover trial, per fault;
cost_vs_period.png       throughput and latency, unprotected and protected, against the
                         checkpoint period;
outage_ft_vs_restart.png the client-visible outage of each fault and of the restart
                         baseline (log scale), with the acked writes lost.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after matplotlib.use("Agg"): no display on these machines

from coserver.bench.failover import FAULTS  # noqa: E402 - below the backend choice above

DPI = 100
SHORT = {"kill-primary-qemu": "kill primary", "kill-secondary-qemu": "kill secondary"}


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def failover_gaps(failover: dict[str, Any], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 3.6))
    metrics = (("outage_s", "client outage"), ("detection_s", "detection"), ("promotion_s", "promotion"))
    colors = ("tab:red", "tab:blue", "tab:green")
    ticks, labels = [], []
    for i, fault in enumerate(FAULTS):
        rows = [r for r in failover["trials"] if r["fault"] == fault]
        for j, (key, name) in enumerate(metrics):
            x = i * 4 + j
            ys = [r[key] * 1000 for r in rows if r.get(key) is not None]
            if ys:
                ax.boxplot([ys], positions=[x], widths=0.6, showfliers=False,
                           medianprops={"color": colors[j]})
                jitter = [x + 0.15 * ((k % 5) - 2) / 2 for k in range(len(ys))]
                ax.scatter(jitter, ys, s=12, color=colors[j], alpha=0.7, zorder=3)
            ticks.append(x)
            labels.append(f"{name}\n{SHORT[fault]}")
    ax.set_xticks(ticks, labels, fontsize=8)
    ax.set_ylabel("ms")
    ax.set_ylim(bottom=0)
    ax.set_title(f"Failover, {failover['trials'] and max(r.get('trial', 0) for r in failover['trials'])} trials "
                 f"per fault, checkpoint period {failover['checkpoint_ms']} ms", fontsize=10)
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
            names.append(f"coserver: {SHORT[fault]} QEMU")
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
    fig, ax = plt.subplots(figsize=(7, 2.6))
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


def make_all(data: dict[str, Any], out: Path) -> list[Path]:
    sec = data.get("sections", {})
    made = []
    if "trials" in sec.get("failover", {}):
        made.append(failover_gaps(sec["failover"], out / "failover_gaps.png"))
    if sec.get("cost", {}).get("by_period"):
        made.append(cost_vs_period(sec["cost"], out / "cost_vs_period.png"))
    if "by_fault" in sec.get("failover", {}) or "outage_s" in sec.get("restart", {}):
        made.append(outage_ft_vs_restart(sec.get("failover"), sec.get("restart"), out / "outage_ft_vs_restart.png"))
    return made
