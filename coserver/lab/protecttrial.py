"""What entering COLO costs a client: one re-protection of a lab pair whose guest has RAM in use.

The lab must run with `reprotect = manual` (so the trial decides when the pair re-enters COLO).
One trial:
  1. the pair is protected; the secondary's QEMU is killed: the primary goes on alone (simplex);
  2. the guest fills `memload_mib` of its RAM and keeps dirtying it at `dirty_mib_s` (the
     journal's MEMLOAD: what a database's cache costs a migration);
  3. a client appends every `interval` s; `pair reprotect` (the REJOIN request to the lost
     side): a fresh secondary, the disk mirrored, the RAM copied, the switch into COLO;
  4. once both controllers say protected and `checkpoints` more checkpoints came, the client
     stops: its largest gap between two acks is the pause the protection cost it (the
     checkpoints after the entry are inside the window too, so it is an upper bound);
  5. every acked append is read back, then (the load stopped, the client gone, two more
     checkpoints) the two hosts' disks are compared block by block (`qemu-img compare -U`).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

from coserver.errors import CoserverError
from coserver.hardware.spec import load_spec
from coserver.images import qemu_img
from coserver.images.guestclient import Writer, connect_journal, missing_acks
from coserver.lab.lab import Lab

#: How long after the pair was seen protected (status is polled every 0.1 s) a gap still counts as
#: entering COLO: covers the switchover and an immediate checkpoint, not the first periodic one.
ENTRY_TAIL_S = 0.5


class ProtectTrialError(CoserverError):
    """A protection trial could not be run (the lab was not protected, or not manual)."""


@dataclass
class ProtectTrialResult:
    order: str                    # the site's protect order: live | stopped
    memory_mib: int               # the guest's RAM
    memload_mib: int              # of which in use (filled, non-zero)
    dirty_mib_s: int              # and dirtied this fast
    acked: int = 0
    lost: int = 0
    reconnects: int = 0
    largest_gap_s: float = 0.0    # the client's longest wait between two acks from REJOIN to protected + checkpoints
    #: the longest wait that began before the pair was protected + ENTRY_TAIL_S: the pause of entering COLO
    #: (the switchover, and a checkpoint the first compared packets may force), not the periodic checkpoints
    entry_gap_s: float = 0.0
    protect_s: float = 0.0        # REJOIN until both controllers said protected
    disks_identical: bool | None = None
    #: every client gap over 100 ms: (its start in s after REJOIN, its length in s)
    gaps: list[tuple[float, float]] = field(default_factory=list)
    rejoin_at: str = ""           # wall clock of REJOIN (UTC, ISO): to find the steps in the controllers' logs
    ok: bool = False
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _guest(lab: Lab) -> dict[str, Any]:
    g: dict[str, Any] = lab.status()["guest"]
    return g


def _wait(lab: Lab, what: str, ok: Any, timeout: float) -> dict[str, Any]:
    end = time.monotonic() + timeout
    while True:
        st = lab.status()
        if ok(st):
            return st
        if time.monotonic() > end:
            raise ProtectTrialError(f"not {what} after {timeout:.0f} s: the pair is {st['state']}")
        time.sleep(0.1)


def _protected(st: dict[str, Any]) -> bool:
    return bool(st["state"] == "protected" and all(h.get("state") == "protected" for h in st["hosts"].values()))


#: Seconds the trial's client waits for an answer before it reconnects (a reconnect is a problem).
CLIENT_TIMEOUT_S = 30.0


def run_protect_trial(lab: Lab, *, memload_mib: int, dirty_mib_s: int = 16, interval: float = 0.01,
                      checkpoints: int = 2, timeout_s: float = 300.0) -> ProtectTrialResult:
    """One re-protection under a memory load and a writing client (module doc); never raises on a
    bad outcome: it is in the result's problems."""
    st = _wait(lab, "protected", _protected, 60)
    site = lab.site()
    spec_memory = load_spec(Path(st["spec"])).memory_mib
    r = ProtectTrialResult(order=site.protect, memory_mib=spec_memory, memload_mib=memload_mib,
                           dirty_mib_s=dirty_mib_s)
    if site.reprotect != "manual":
        raise ProtectTrialError("the protection trial needs a lab with --reprotect manual")
    g = _guest(lab)
    primary, secondary = st["primary"], st["secondary"]
    lab.fault("kill-qemu", secondary)
    _wait(lab, "simplex", lambda s: s["state"] == "simplex" and s["primary"] == primary, 60)
    if memload_mib:
        with connect_journal(g["client_netns"], g["address"], g["port"], timeout=20) as c:
            c.wait_memload(memload_mib, dirty_mib_s, timeout=timeout_s)
    time.sleep(1.0)
    # the client waits as TCP clients do (not the Writer's default 5 s): the stopped order freezes the guest
    # for the whole RAM copy (7 s at 1 GiB), which is the figure measured (largest gap), not a client failure
    writer = Writer(g["client_netns"], g["address"], g["port"], interval=interval, tag=f"p{time.monotonic():.0f}",
                    timeout=CLIENT_TIMEOUT_S)
    writer.start()
    try:
        time.sleep(1.0)
        t0 = time.monotonic()
        r.rejoin_at = datetime.now(UTC).isoformat()
        lab.ask(secondary, {"cmd": "rejoin"})
        st = _wait(lab, "protected again", _protected, timeout_s)
        t_protected = time.monotonic()
        r.protect_s = round(t_protected - t0, 2)
        base = int(st.get("checkpoints") or 0)
        _wait(lab, f"{checkpoints} checkpoints into COLO",
              lambda s: int(s.get("checkpoints") or 0) >= base + checkpoints, 60)
    finally:
        res = writer.stop()
    r.acked, r.reconnects = len(res.acks), res.reconnects
    r.largest_gap_s = round(res.largest_gap(), 3)
    r.entry_gap_s = round(max((b.acked - a.acked for a, b in pairwise(res.acks)
                               if t0 <= a.acked <= t_protected + ENTRY_TAIL_S), default=0.0), 3)
    r.gaps = [(round(a.acked - t0, 3), round(b.acked - a.acked, 3))
              for a, b in pairwise(res.acks) if b.acked - a.acked > 0.1]
    with connect_journal(g["client_netns"], g["address"], g["port"], timeout=20) as c:
        r.lost = len(missing_acks(c, res.acked))
        if memload_mib:
            c.memload(0)
    r.disks_identical = _disks_identical(lab, primary, secondary)
    if r.lost:
        r.problems.append(f"{r.lost} acknowledged appends lost")
    if r.reconnects:
        r.problems.append(f"the client reconnected {r.reconnects} times")
    if not r.disks_identical:
        r.problems.append(f"the disks of {primary} and {secondary} differ after a quiet period")
    r.ok = not r.problems
    return r


def _disks_identical(lab: Lab, primary: str, secondary: str) -> bool:
    """With nothing writing and two checkpoints passed, the secondary's disk file (which the
    primary's writes reach over NBD; its own go to overlays emptied at each checkpoint) holds
    the same blocks as the primary's."""
    st = lab.status()
    base = int(st.get("checkpoints") or 0)
    _wait(lab, "two quiet checkpoints", lambda s: int(s.get("checkpoints") or 0) >= base + 2, 60)
    disk = load_spec(Path(st["spec"])).disks[0]
    return qemu_img.same_content(_path(disk.paths[primary]), _path(disk.paths[secondary]), force_share=True)


def _path(value: Any) -> Path:
    return Path(getattr(value, "value", value))
