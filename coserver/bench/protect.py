"""Entering COLO with the guest's RAM in use: the client's pause and the time to protect, in both orders.

The pair can enter COLO two ways (site key `protect`): "stopped", QEMU's documented order (the
guest is stopped for the whole RAM copy), and "live" (the RAM copied while the guest runs; it stops
only for the switchover). For each guest RAM size (256 MiB, 1 GiB) and each order, a fresh lab
(`reprotect = manual`, that order, that RAM) runs `trials` re-protections
(coserver.lab.protecttrial.run_protect_trial): the secondary is killed, the guest fills part of its
RAM and keeps dirtying it, then the pair is re-protected while a client appends every 10 ms. The
order that goes first alternates from one RAM size to the next.

Per (order, size): the medians of the entry pause (the client's longest wait while entering COLO:
the issue's goal is <= 150 ms), of the largest gap (which also holds the first periodic checkpoints)
and of the time to protect (REJOIN until both controllers say protected), the acked appends lost,
whether the disks were identical afterwards, and the client's reconnects (in the stopped order a
large guest stops for longer than the client's 5 s timeout: the client reconnects; that is a
figure of the run, not a failure of the section). Per size: the ratios stopped / live.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any, Callable

from coserver.bench.site import fresh_dir
from coserver.bench.stats import median, ratio
from coserver.errors import CoserverError
from coserver.lab.lab import Lab, LabOptions
from coserver.lab.protecttrial import run_protect_trial

ORDERS = ("stopped", "live")
#: (guest RAM, of which in use) in MiB: about what the lab guest can fill (more fails in its mmap)
SIZES = ((256, 144), (1024, 768))
DIRTY_MIB_S = 16
CLIENT_INTERVAL_S = 0.01
GOAL_ENTRY_GAP_S = 0.150
#: a lab that does not come up protected is recorded (a problem of the run) and made once more
LAB_UP_ATTEMPTS = 2
#: a trial's problem that is a fact of the order, not a fault: the client's connection broke and it reconnected
RECONNECT_PROBLEM = "the client reconnected"


def order_for(index: int) -> tuple[str, ...]:
    """The orders for the index-th RAM size: each goes first every other size."""
    return ORDERS if index % 2 == 0 else tuple(reversed(ORDERS))


def faults(row: dict[str, Any]) -> list[str]:
    """A trial's problems other than the client's reconnects."""
    return [p for p in row.get("problems", []) if not p.startswith(RECONNECT_PROBLEM)]


def aggregate(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The medians and totals of one (order, size)'s trials (rows with an `error` were not measured)."""
    ok = [r for r in rows if "error" not in r]
    disks = [r.get("disks_identical") for r in ok]
    return {
        "trials": len(ok), "failed": len(rows) - len(ok),
        "entry_gap_s": median(r.get("entry_gap_s") for r in ok),
        "largest_gap_s": median(r.get("largest_gap_s") for r in ok),
        "protect_s": median(r.get("protect_s") for r in ok),
        "entry_gap_all_s": [r.get("entry_gap_s") for r in ok],
        "protect_all_s": [r.get("protect_s") for r in ok],
        "lost": sum(int(r.get("lost") or 0) for r in ok),
        "reconnects": sum(int(r.get("reconnects") or 0) for r in ok),
        "disks_identical": all(d is True for d in disks) if disks else None,
    }


def summarize(rows: list[dict[str, Any]], sizes: tuple[tuple[int, int], ...] = SIZES) -> list[dict[str, Any]]:
    """Per RAM size: each order's aggregate and the ratios stopped / live."""
    out = []
    for mem, load in sizes:
        one: dict[str, Any] = {"memory_mib": mem, "memload_mib": load}
        for order in ORDERS:
            mine = [r for r in rows if r["order"] == order and r["memory_mib"] == mem]
            if mine:
                one[order] = aggregate(mine)
        a, b = one.get("stopped", {}), one.get("live", {})
        one["entry_gap_ratio"] = ratio(a.get("entry_gap_s"), b.get("entry_gap_s"))
        one["protect_ratio"] = ratio(a.get("protect_s"), b.get("protect_s"))
        out.append(one)
    return out


def _lab_options(prefix: str, workdir: Path, order: str, memory_mib: int, checkpoint_ms: int) -> LabOptions:
    return LabOptions(prefix=prefix, workdir=workdir, checkpoint_ms=checkpoint_ms, reprotect="manual",
                      protect=order, memory_mib=memory_mib)


def _say_row(say: Callable[[str], None], row: dict[str, Any]) -> None:
    head = f"protect {row['memory_mib']} MiB {row['order']} trial {row['trial']}"
    if "error" in row:
        say(f"{head}: could not run: {row['error']}")
        return
    say(f"{head}: entry pause {row['entry_gap_s'] * 1000:.0f} ms, largest gap {row['largest_gap_s'] * 1000:.0f} ms, "
        f"protected in {row['protect_s']:.1f} s, lost {row['lost']}, reconnects {row['reconnects']}, "
        f"disks identical {row['disks_identical']}" + (f"  [{'; '.join(faults(row))}]" if faults(row) else ""))


def run(base: Path, prefix: str, trials: int, checkpoint_ms: int, say: Callable[[str], None],
        sizes: tuple[tuple[int, int], ...] = SIZES, dirty_mib_s: int = DIRTY_MIB_S) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    problems: list[str] = []
    labs: list[dict[str, Any]] = []
    lab = Lab(prefix, base / prefix)
    try:
        for i, (mem, load) in enumerate(sizes):
            for order in order_for(i):
                up_error = ""
                for attempt in range(1, LAB_UP_ATTEMPTS + 1):
                    workdir = fresh_dir(base, prefix)
                    lab = Lab(prefix, workdir)
                    t0 = time.monotonic()
                    try:
                        lab.up(_lab_options(prefix, workdir, order, mem, checkpoint_ms))
                        up_error = ""
                        break
                    except CoserverError as exc:
                        up_error = f"lab up: {exc}"
                        problems.append(f"{mem} MiB {order}: {up_error} (attempt {attempt} of {LAB_UP_ATTEMPTS})")
                        say(f"protect: {problems[-1]}")
                        lab.down()
                if up_error:
                    rows += [{"order": order, "memory_mib": mem, "memload_mib": load, "trial": t + 1,
                              "error": up_error} for t in range(trials)]
                    continue
                labs.append({"order": order, "memory_mib": mem, "lab_up_s": round(time.monotonic() - t0, 1),
                             "attempt": attempt})
                try:
                    for t in range(trials):
                        try:
                            row = {**run_protect_trial(lab, memload_mib=load, dirty_mib_s=dirty_mib_s,
                                                       interval=CLIENT_INTERVAL_S).as_dict(), "trial": t + 1}
                            # the result reads the lab's site and spec: kept beside what was asked
                            row["site_order"], row["spec_memory_mib"] = row["order"], row["memory_mib"]
                            row["order"], row["memory_mib"] = order, mem
                            if (row["site_order"], row["spec_memory_mib"]) != (order, mem):
                                row["problems"].append(f"the lab ran order {row['site_order']} with "
                                                       f"{row['spec_memory_mib']} MiB, not {order} with {mem} MiB")
                        except CoserverError as exc:
                            row = {"order": order, "memory_mib": mem, "memload_mib": load, "trial": t + 1,
                                   "error": str(exc) or type(exc).__name__}
                            problems.append(f"{mem} MiB {order} trial {t + 1}: {row['error']}")
                        rows.append(row)
                        _say_row(say, row)
                        if "error" in row:
                            break  # the pair may be left unprotected: the next order's lab starts clean
                finally:
                    lab.down()
    finally:
        lab.down()
        shutil.rmtree(base / prefix, ignore_errors=True)
    return {"sizes": [{"memory_mib": m, "memload_mib": ld} for m, ld in sizes], "orders": list(ORDERS),
            "trials_per_order": trials, "dirty_mib_s": dirty_mib_s, "checkpoint_ms": checkpoint_ms,
            "client_interval_s": CLIENT_INTERVAL_S, "goal_entry_gap_s": GOAL_ENTRY_GAP_S,
            "labs": labs, "runs": rows, "problems": problems, "by_size": summarize(rows, sizes)}
