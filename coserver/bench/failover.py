"""Failover gap: each fault of a copy of the guest or of its host, under a client appending every 10 ms.

The faults (FAULTS): kill -9 of the primary's / the secondary's QEMU, a hang of either
(SIGSTOP: the process stays, QMP goes silent, nothing closes), and a power cut of either
host (its links dark first, then its supervisor, controller and QEMU killed at once:
`Lab.fault("power-off")`). Each trial gets a fresh protected lab (the guest as `coserver
lab up` makes it), starts a client appending every 10 ms, injects the fault, waits until
the survivor runs the guest alone, lets the client go on a little, then reads back every
acknowledged append. Per trial:
  outage_s     client-visible: the longest time without an OK, from the last OK
               before the fault on (the issue's "gap", last OK before to first OK
               after, is gap_s; it is shorter when one OK already on its way
               arrives just after the fault and the stall follows);
  detection_s  the fault to the survivor's controller entering failing_over;
  promotion_s  failing_over to simplex on the survivor (its own state history);
  to_ack_s     the fault to the client's next OK: the performance issue's measure ("from the
               fault to the client's next acknowledged append"), taken at the OK that ends the
               fault's outage (outage_end: an OK already released before the fault took effect,
               arriving a few ms after it, does not end it); outage_s is the longest silence from
               the last OK before the fault on: it also holds the silence already running when the
               fault came (a checkpoint under way, a reply colo-compare still held: silent_before_s)
               and, after a kill -9 of the primary, the pair's re-protection a second later;
  client_after_s  the survivor serving alone to the client's first OK after the fault:
               what the client's own TCP retransmission back-off adds;
  lost         acked appends not readable with GET on the survivor (must be 0).
Like lab.trials.run_trial, but it keeps the raw timings this
needs; the settle rule is the same (state simplex, exactly one guest running).
"""

from __future__ import annotations

import shutil
import time
from itertools import pairwise
from pathlib import Path
from typing import Any, Callable

from coserver.bench.site import fresh_dir
from coserver.bench.stats import summary
from coserver.errors import CoserverError
from coserver.images.guestclient import Writer, connect_journal, missing_acks
from coserver.lab.lab import Lab, LabOptions

#: Each fault: the lab fault it injects and the role of the copy it hits.
FAULT_ACTIONS: dict[str, tuple[str, str]] = {
    "kill-primary-qemu": ("kill-qemu", "primary"), "kill-secondary-qemu": ("kill-qemu", "secondary"),
    "hang-primary-qemu": ("hang-qemu", "primary"), "hang-secondary-qemu": ("hang-qemu", "secondary"),
    "power-off-primary": ("power-off", "primary"), "power-off-secondary": ("power-off", "secondary"),
}
FAULTS = tuple(FAULT_ACTIONS)
#: The faults a dead process announces (a closed socket, a pidfd), measured `trials` times; the others
#: (a hang, a power cut) are found by silence, take longer per trial and are measured `detect_trials` times.
KILL_FAULTS = tuple(f for f, (kind, _) in FAULT_ACTIONS.items() if kind == "kill-qemu")
#: The performance issue's goals, (p50, p99) in seconds, for the fault to the client's next acknowledged
#: append (to_ack_s).
GOALS_S: dict[str, tuple[float, float]] = {
    "kill-primary-qemu": (0.25, 0.40), "kill-secondary-qemu": (0.25, 0.40),
    "hang-primary-qemu": (1.0, 2.0), "hang-secondary-qemu": (1.0, 2.0),
    "power-off-primary": (1.0, 2.0), "power-off-secondary": (1.0, 2.0),
}
INTERVAL_S = 0.01


def trials_of(fault: str, trials: int, detect_trials: int) -> int:
    """How many trials a run makes of `fault`."""
    return trials if fault in KILL_FAULTS else detect_trials


def lab_options(prefix: str, workdir: Path, checkpoint_ms: int, insecure: bool = False) -> LabOptions:
    """A lab for one measurement: re-protection manual where the lab has the option (no
    second side coming back in the middle of a measurement); TLS unless `insecure`."""
    opts = LabOptions(prefix=prefix, workdir=workdir, checkpoint_ms=checkpoint_ms, insecure=insecure)
    if hasattr(opts, "reprotect"):
        opts.reprotect = "manual"
    return opts


def gaps(before: list[float], after: list[float]) -> tuple[float | None, float | None]:
    """(gap, outage) from the client's ack times before and after the fault.

    gap: the last OK before the fault to the first OK after. outage: the longest time without
    an OK from the last one before the fault on; larger than gap when an OK already on its way
    arrives just after the fault and the stall comes next."""
    if not before or not after:
        return None, None
    times = [max(before), *after]
    return round(after[0] - times[0], 3), round(max(b - a for a, b in pairwise(times)), 3)


#: A silence longer than this (five client intervals) between two OKs is an outage, not the client's pace.
OUTAGE_MIN_S = 0.05


def outage_end(before: list[float], after: list[float]) -> float | None:
    """The OK that ends the fault's outage: the first OK after the fault that follows a silence of more
    than OUTAGE_MIN_S (from the OK before it, or from the last one before the fault); an OK already
    released before the fault took effect arrives a few ms after it and does not end it. Later
    silences (the pair re-protecting itself after a failover) are not the fault's. None without an OK
    after the fault; the first one after it when no silence came at all."""
    if not after:
        return None
    prev = max(before) if before else None
    for ack in after:
        if prev is not None and ack - prev > OUTAGE_MIN_S:
            return ack
        prev = ack
    return after[0]


def _running(e: dict[str, Any]) -> bool:
    return bool(e.get("qemu_alive")) and e.get("role") in ("primary", "secondary", "simplex")


def _history_times(history: list[dict[str, Any]], t_fault: float) -> tuple[float | None, float | None, str]:
    """(detection, promotion, reason) from a controller's state history after the fault."""
    fo = next((h for h in history if h.get("to") == "failing_over" and h.get("at", 0) >= t_fault - 0.05), None)
    if fo is None:
        return None, None, ""
    done = next((h for h in history if h.get("to") == "simplex" and h.get("at", 0) >= fo["at"]), None)
    return (round(fo["at"] - t_fault, 3), round(done["at"] - fo["at"], 3) if done else None,
            str(done.get("reason", "")) if done else "")


def trial(lab: Lab, fault: str, *, before_s: float = 1.5, after_s: float = 1.0,
          settle_timeout_s: float = 30.0) -> dict[str, Any]:
    """One fault on a protected lab; the raw figures of it."""
    st = lab.status()
    if st["state"] != "protected":
        raise CoserverError(f"{fault}: the lab is {st['state']}, not protected")
    kind, role = FAULT_ACTIONS[fault]
    victim = st[role]
    g = st["guest"]
    writer = Writer(g["client_netns"], g["address"], g["port"], interval=INTERVAL_S, tag=fault).start()
    time.sleep(before_s)
    t0 = time.monotonic()
    t_wall = lab.fault(kind, victim)["at"]
    settled = None
    while time.monotonic() - t0 < settle_timeout_s:
        now = lab.status()
        if now["state"] == "simplex" and sum(_running(e) for e in now["hosts"].values()) == 1:
            settled = time.monotonic() - t0
            break
        time.sleep(0.1)
    time.sleep(after_s)
    res = writer.stop()
    st = lab.status()
    survivor = st["primary"]
    before = [a.acked for a in res.acks if a.acked < t0]
    after = [a.acked for a in res.acks if a.acked >= t0]
    gap, outage = gaps(before, after)
    history = st["hosts"].get(survivor or "", {}).get("history") or []
    detection, promotion, reason = _history_times(history, t_wall)
    # the survivor serving alone (on this clock) to the client's first OK after the fault
    served = outage_end(before, after)
    client_after = (round(served - (t0 + detection + promotion), 3)
                    if served is not None and detection is not None and promotion is not None else None)
    to_ack = round(served - t0, 3) if served is not None else None
    silent_before = round(t0 - max(before), 3) if before else None
    out: dict[str, Any] = {"fault": fault, "victim": victim, "survivor": survivor, "outage_s": outage,
                           "to_ack_s": to_ack, "silent_before_s": silent_before, "gap_s": gap,
                           "largest_gap_s": round(res.largest_gap(), 3), "detection_s": detection,
                           "promotion_s": promotion, "client_after_s": client_after,
                           "settle_s": round(settled, 3) if settled else None,
                           "acked": len(res.acks), "acked_after": len(after), "reconnects": res.reconnects,
                           "client_errors": len(res.errors), "failover_note": reason, "problems": []}
    try:
        with connect_journal(g["client_netns"], g["address"], g["port"]) as client:
            out["lost"] = len(missing_acks(client, res.acked))
    except CoserverError as exc:
        out["lost"] = None
        out["problems"].append(f"cannot read back on the survivor: {exc}")
    if settled is None:
        out["problems"].append(f"not simplex with one guest {settle_timeout_s:.0f} s after the fault")
    if gap is None:
        out["problems"].append("the client got no OK after the fault")
    if out["lost"]:
        out["problems"].append(f"{out['lost']} acknowledged appends lost")
    return out


def summarize(rows: list[dict[str, Any]], faults: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """Per fault, the trials' figures summarised (stats.summary) and the acked writes lost."""
    by_fault: dict[str, Any] = {}
    for fault in faults:
        rs = [r for r in rows if r["fault"] == fault]
        by_fault[fault] = {
            "trials": len(rs),
            "outage_s": summary(r.get("outage_s") for r in rs),
            "to_ack_s": summary(r.get("to_ack_s") for r in rs),
            "silent_before_s": summary(r.get("silent_before_s") for r in rs),
            "gap_s": summary(r.get("gap_s") for r in rs),
            "detection_s": summary(r.get("detection_s") for r in rs),
            "promotion_s": summary(r.get("promotion_s") for r in rs),
            "client_after_s": summary(r.get("client_after_s") for r in rs),
            "goal_s": list(GOALS_S[fault]),
            "lost": sum(r["lost"] for r in rs if r.get("lost") is not None),
            "unverified": sum(1 for r in rs if r.get("lost") is None),
            "problems": sum(1 for r in rs if r.get("problems")),
        }
    return by_fault


def run(base: Path, prefix: str, trials: int, checkpoint_ms: int, say: Callable[[str], None],
        faults: tuple[str, ...] = FAULTS, detect_trials: int | None = None) -> dict[str, Any]:
    """Of each fault, `trials` (kill -9) or `detect_trials` (hang, power cut) trials, the faults
    alternating, each trial on a fresh lab."""
    detect_trials = trials if detect_trials is None else detect_trials
    want = {f: trials_of(f, trials, detect_trials) for f in faults}
    total = sum(want.values())
    lab = Lab(prefix, base / prefix)
    rows: list[dict[str, Any]] = []
    try:
        for i in range(max(want.values(), default=0)):
            for fault in (f for f in faults if i < want[f]):
                workdir = fresh_dir(base, prefix)
                lab = Lab(prefix, workdir)
                try:
                    lab.up(lab_options(prefix, workdir, checkpoint_ms))
                    row = trial(lab, fault)
                except CoserverError as exc:
                    row = {"fault": fault, "lost": None, "problems": [f"trial could not run: {exc}"]}
                finally:
                    lab.down()
                row["trial"] = i + 1
                rows.append(row)
                gap = row.get("outage_s")
                say(f"failover {len(rows)}/{total}: {fault}: outage "
                    f"{'-' if gap is None else f'{gap * 1000:.0f} ms'}, detection {row.get('detection_s')} s, "
                    f"promotion {row.get('promotion_s')} s, lost {row.get('lost')}"
                    + (f"  [{'; '.join(row['problems'])}]" if row.get("problems") else ""))
    finally:
        lab.down()
        shutil.rmtree(base / prefix, ignore_errors=True)
    by_fault = summarize(rows, faults)
    return {"checkpoint_ms": checkpoint_ms, "client_interval_s": INTERVAL_S, "faults": list(faults),
            "trials_per_fault": want, "trials": rows, "by_fault": by_fault}
