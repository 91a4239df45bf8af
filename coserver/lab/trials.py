"""Fault trials on the lab: inject one fault while a client writes, measure what the client saw.

One trial: a client appends every `interval` s (default 20 ms); after a
quiet start the fault is injected; the trial waits until the pair settles in
the expected outcome (a failover, or none for a cut link or a killed
controller), lets the client write a little longer, then checks:
  * nothing lost: every acknowledged append reads back with GET on the survivor;
  * the client's TCP connection survived (reconnects) and the largest gap
    between two acks (the client-visible outage);
  * exactly one side runs the guest after a failover, both (still protected)
    after a fault that must not fail over.
`make test-faults TRIALS=N` runs N trials of every fault and prints the table;
the fault tests and the benchmarks use run_trial() too.

A profile trial (run_load_trial, `--profiles`) is the "protected under load"
check every hardware profile and device set must pass: the pair stays
protected while a client writes through at least N checkpoints (each loads
the primary's device state into the running secondary, the path that broke
q35), then the primary's QEMU is killed and every acknowledged append must
read back on the survivor.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any, Callable

from coserver import log
from coserver.errors import CoserverError
from coserver.hardware import profile_names
from coserver.images.guestclient import Writer, connect_journal, missing_acks
from coserver.lab.guestconsole import ConsoleWatch
from coserver.lab.lab import BACKENDS, Lab, LabOptions
from coserver.lab.spec import DEVICE_SETS

#: name -> (lab fault, which host: "primary"|"secondary"|None, link, failover expected, undo fault)
FAULTS: dict[str, tuple[str, str | None, int | None, bool, str | None]] = {
    "kill-primary-qemu": ("kill-qemu", "primary", None, True, None),
    "kill-secondary-qemu": ("kill-qemu", "secondary", None, True, None),
    # SIGTERM (an operator's kill, a service manager): QEMU says SHUTDOWN and COLO_EXIT on its way out
    "term-primary-qemu": ("term-qemu", "primary", None, True, None),
    "hang-primary-qemu": ("hang-qemu", "primary", None, True, None),
    "hang-secondary-qemu": ("hang-qemu", "secondary", None, True, None),
    "cut-link-1": ("cut-link", None, 1, False, "heal-link"),
    "cut-link-2": ("cut-link", None, 2, False, "heal-link"),
    "cut-all-links": ("cut-all-links", None, None, True, None),
    "power-off-primary": ("power-off", "primary", None, True, "power-on"),
    "power-off-secondary": ("power-off", "secondary", None, True, "power-on"),
    "kill-controller-primary": ("kill-controller", "primary", None, False, None),
    "kill-controller-secondary": ("kill-controller", "secondary", None, False, None),
    "witness-down": ("witness-down", None, None, False, "witness-up"),
    "cut-witness-primary": ("cut-witness", "primary", None, False, "heal-witness"),
    "freeze-primary": ("freeze", "primary", None, True, None),
    "freeze-secondary": ("freeze", "secondary", None, True, None),
    "stall-replication": ("stall-replication", None, None, True, "heal-replication"),
    "disk-error-primary": ("disk-error", "primary", None, True, None),
    "disk-error-secondary": ("disk-error", "secondary", None, True, None),
    # the libvirt backend (lab up --backend libvirt): an operator's `virsh destroy`, libvirtd restarted
    "destroy-primary-domain": ("destroy-domain", "primary", None, True, None),
    "restart-libvirtd-primary": ("sequence", "primary", None, False, None),
    # two faults in a row (SEQUENCES): the combinations that could make two primaries
    "cut-witness-then-kill-secondary": ("sequence", "primary", None, True, "heal-witness"),
    "witness-down-then-kill-primary": ("sequence", None, None, True, None),
    "fill-disk-secondary-then-kill-primary": ("sequence", "secondary", None, True, "heal-disk"),
}
#: A "sequence" fault's steps: (lab fault, on which host, seconds to wait after it, how many sides may
#: serve the guest at the end of that wait, None: not checked).
SEQUENCES: dict[str, list[tuple[str, str | None, float, int | None]]] = {
    # the primary cannot reach the witness, then its replica dies: it goes on alone (the secondary's
    # own report that its QEMU is dead is the evidence), never both, never neither for long
    "cut-witness-then-kill-secondary": [("cut-witness", "primary", 1.0, 1), ("kill-qemu", "secondary", 0.0, None)],
    # no witness, then the primary dies: nobody may promote without a grant; the secondary waits (and
    # alerts) until the witness is back, then takes over with nothing lost
    "witness-down-then-kill-primary": [("witness-down", None, 1.0, 1), ("kill-qemu", "primary", 2.5, 0),
                                       ("witness-up", None, 0.0, None)],
    # the secondary's state/log file system is full: it keeps watching, and still takes over
    "fill-disk-secondary-then-kill-primary": [("fill-disk", "secondary", 2.0, 1), ("kill-qemu", "primary", 0.0, None)],
    # libvirtd dies on the primary and comes back: the QEMUs are not libvirtd's children; nothing moves
    "restart-libvirtd-primary": [("kill-libvirtd", "primary", 1.0, 1), ("start-libvirtd", "primary", 0.0, None)],
}
#: The faults that need the libvirt backend (lab up --backend libvirt).
LIBVIRT_FAULTS = ("destroy-primary-domain", "restart-libvirtd-primary")
#: What `--backend libvirt` runs unless --faults says: libvirt's own faults and the ones whose handling
#: the backend changes (who sees a QEMU die, who kills it, what a power cut takes with it).
LIBVIRT_DEFAULT_FAULTS = ("kill-primary-qemu", "kill-secondary-qemu", "hang-primary-qemu", *LIBVIRT_FAULTS,
                          "power-off-primary")


def default_faults(backend: str) -> list[str]:
    """The faults a trial run on `backend` covers by default."""
    if backend == "libvirt":
        return list(LIBVIRT_DEFAULT_FAULTS)
    return [n for n in FAULTS if n not in LIBVIRT_FAULTS]
#: How long, after the pair settled, the LAN switch is watched for frames from both CoServers.
UPLINK_WINDOW_S = 2.0


class TrialError(CoserverError):
    """A trial could not be run (the lab was not protected to begin with)."""


@dataclass
class TrialResult:
    fault: str
    host: str | None
    link: int | None
    failover_expected: bool
    acked: int = 0
    lost: int = 0
    reconnects: int = 0
    client_errors: int = 0
    gap_s: float = 0.0            # the largest gap between acks that began before the pair settled
    later_gap_s: float = 0.0      # the largest after it (e.g. the pause of an automatic re-protection)
    settle_s: float | None = None
    survivor: str | None = None
    serving: int = 0              # sides serving the guest once settled (primary or simplex): must be 1
    state_after: str = ""
    primary_before: str | None = None
    primary_after: str | None = None
    controller_restarted: bool | None = None
    served_after: bool | None = None   # the client had a reply after the pair settled
    #: CoServers whose LAN uplink carried frames in the window after settling (from outside: must be one)
    uplinks_sending: list[str] = field(default_factory=list)
    #: where the LAN switch sent the guest's MAC, and each uplink's frame count, at every change from the
    #: fault on ("+4.1s cs1 cs1=691 cs2=1190"): shown when the client lost its connection, to tell a
    #: switch pointing at the old primary from a guest that did not answer
    switch_log: list[str] = field(default_factory=list)
    ok: bool = False
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class SwitchWatch:
    """Samples, from a thread, which port the LAN switch sends the guest's MAC to and how many frames
    each CoServer's uplink sent, every `every` s; keeps the changes (TrialResult.switch_log)."""

    def __init__(self, lab: Lab, mac: str, t0: float, every: float = 0.25) -> None:
        self.lab, self.mac, self.t0, self.every = lab, mac, t0, every
        self.log: list[str] = []
        self._frames: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="switch-watch", daemon=True)

    def start(self) -> SwitchWatch:
        self._thread.start()
        return self

    def stop(self) -> list[str]:
        self._stop.set()
        self._thread.join(timeout=10)
        return self.log

    def _run(self) -> None:
        last: tuple[str | None, tuple[str, ...]] | None = None
        while not self._stop.is_set():
            try:
                port = self.lab.net.switch_port(self.mac)
                frames = self.lab.net.uplink_frames()
            except (CoserverError, OSError, subprocess.SubprocessError):
                port, frames = None, {}
            sending = tuple(sorted(h for h, n in frames.items()
                                   if last is not None and n > self._frames.get(h, n)))
            if last is None or port != last[0] or sending != last[1]:
                counts = " ".join(f"{h}={n}" for h, n in sorted(frames.items()))
                self.log.append(f"+{time.monotonic() - self.t0:.1f}s {port or 'unlearnt'} {counts}")
            last, self._frames = (port, sending), frames
            self._stop.wait(self.every)


def _serving(host_status: dict[str, Any]) -> bool:
    """This side runs the guest as the one clients talk to (a secondary only shadows it)."""
    return bool(host_status.get("qemu_alive")) and host_status.get("role") in ("primary", "simplex")


#: A hung primary is declared dead after 1.5 s of QMP silence; with the client's TCP retransmission
#: back-off (0.2, 0.6, 1.4, 3.0, 6.2 s after the lost segment) the reply may come ~6 s after the
#: hang on a slow machine (CI once saw 5+ s). 5 s, the old timeout, made that a "reconnect".
#: Faults that keep the guest away longer (a 6 s freeze plus the 2 s promotion wait; no witness until
#: it is back) land between retransmissions that are 6 and 13 s apart by then, with an RTO that TCG's
#: checkpoint pauses inflate: the reply came 15.2 s after the request once, and a 15 s client gave up
#: on a connection the survivor still served. 30 s is what common clients allow.
CLIENT_TIMEOUT_S = 30.0


def run_trial(lab: Lab, name: str, *, interval: float = 0.02, before_s: float = 2.0, settle_timeout_s: float = 30.0,
              after_s: float = 3.0, say: Callable[[str], None] | None = None) -> TrialResult:
    """One trial of fault `name` (a key of FAULTS) on a protected lab."""
    kind, which, link, failover, undo = FAULTS[name]
    st = lab.status()
    if st["state"] != "protected":
        raise TrialError(f"trial {name}: the lab is {st['state']}, not protected")
    host = st[which] if which else None
    r = TrialResult(fault=name, host=host, link=link, failover_expected=failover, primary_before=st["primary"])
    g = st["guest"]
    console = ConsoleWatch(lab)
    old_controller = st["hosts"][host]["controller_pid"] if kind == "kill-controller" and host else None
    # A request waits up to CLIENT_TIMEOUT_S before the client gives up on the connection: what the
    # trial checks is that the server side kept the TCP connection, not how patient one client is.
    writer = Writer(g["client_netns"], g["address"], g["port"], interval=interval, tag=name,
                    timeout=CLIENT_TIMEOUT_S).start()
    time.sleep(before_s)
    t_fault, t_fault_wall = time.monotonic(), time.time()
    watch = SwitchWatch(lab, g["mac"], t_fault).start()
    if kind == "sequence":
        _run_steps(lab, name, st, r, say)
    else:
        lab.fault(kind, host, link)
        if say:
            say(f"{name}: injected {kind}" + (f" on {host}" if host else "") + (f" link {link}" if link else ""))
    settled, at_settle = _wait_settled(lab, failover, t_fault, t_fault_wall, settle_timeout_s, kind, host,
                                       old_controller)
    r.settle_s = round(settled - t_fault, 2) if settled else None
    r.serving = sum(_serving(e) for e in at_settle["hosts"].values())
    r.survivor = at_settle["primary"]
    before_frames = lab.net.uplink_frames()
    time.sleep(max(after_s, UPLINK_WINDOW_S))
    after_frames = lab.net.uplink_frames()
    if settled is not None:
        want = st[expected_survivor(name)]
        if r.survivor != want:
            r.problems.append(f"{r.survivor} serves the guest; {want} should")
        # the client is served again (its TCP back-off may take a few seconds)
        deadline = time.monotonic() + CLIENT_TIMEOUT_S
        while time.monotonic() < deadline and not (writer.result.acks and writer.result.acks[-1].acked > settled):
            time.sleep(0.1)
        r.served_after = bool(writer.result.acks) and writer.result.acks[-1].acked > settled
    r.uplinks_sending = sorted(h for h in after_frames if after_frames[h] > before_frames.get(h, 0))
    if undo:
        lab.fault(undo, host, link)
        deadline = time.monotonic() + settle_timeout_s
        while time.monotonic() < deadline:  # healed: both back to protected, all links heard
            hosts = lab.status()["hosts"].values()
            if all(e.get("state") == "protected" for e in hosts):
                break
            time.sleep(0.2)
        else:
            r.problems.append(f"not protected again {settle_timeout_s:.0f} s after {undo}")
    res = writer.stop()
    r.switch_log = watch.stop()
    acks_after = [a for a in res.acks if a.acked >= t_fault - 1.0]
    r.acked, r.reconnects, r.client_errors = len(res.acks), res.reconnects, len(res.errors)
    times = [a.acked for a in acks_after]
    gaps = list(pairwise(times))
    cut = settled if settled is not None else float("inf")
    r.gap_s = round(max((b - a for a, b in gaps if a <= cut), default=float("inf")), 3)
    r.later_gap_s = round(max((b - a for a, b in gaps if a > cut), default=0.0), 3)
    st = lab.status()
    r.state_after, r.primary_after = st["state"], st["primary"]
    if kind == "kill-controller" and host:
        new_pid = st["hosts"][host].get("controller_pid")
        r.controller_restarted = bool(new_pid) and new_pid != old_controller
    try:
        with connect_journal(g["client_netns"], g["address"], g["port"]) as client:
            r.lost = len(missing_acks(client, res.acked))
    except CoserverError as exc:
        r.lost = len(res.acks)
        r.problems.append(f"cannot read back on the survivor: {exc}")
    r.problems += [f"the guest crashed on {c}" for c in console.crashes()[:3]]
    _judge(r)
    return r


#: Who serves the guest after a sequence (single faults: see expected_survivor).
SEQUENCE_SURVIVOR = {"cut-witness-then-kill-secondary": "primary", "witness-down-then-kill-primary": "secondary",
                     "fill-disk-secondary-then-kill-primary": "secondary", "restart-libvirtd-primary": "primary"}


def expected_survivor(name: str) -> str:
    """Which side ("primary"/"secondary" before the fault) serves the guest once fault `name` settled."""
    kind, which, _, failover, _ = FAULTS[name]
    if kind == "sequence":
        return SEQUENCE_SURVIVOR[name]
    return "secondary" if failover and which == "primary" else "primary"


def _run_steps(lab: Lab, name: str, before: dict[str, Any], r: TrialResult,
               say: Callable[[str], None] | None) -> None:
    """Inject SEQUENCES[name] step by step; a step's serving count that is off is a problem of r."""
    for kind, which, wait_s, serving in SEQUENCES[name]:
        host = before[which] if which else None
        lab.fault(kind, host, None)
        if say:
            say(f"{name}: injected {kind}" + (f" on {host}" if host else ""))
        time.sleep(wait_s)
        if serving is not None:
            now = sum(_serving(e) for e in lab.status()["hosts"].values())
            if now != serving:
                r.problems.append(f"{now} sides served the guest {wait_s:g} s after {kind} (want {serving})")


def _wait_settled(lab: Lab, failover: bool, t0: float, t0_wall: float, timeout: float, kind: str,
                  host: str | None, old_controller: int | None) -> tuple[float | None, dict[str, Any]]:
    """Until the expected end state is reached: (monotonic time it was reached or None, that status).

    A failover is read from the survivor's own state history (its move to simplex after the
    fault, with its time stamp), so it is seen even when re-protection follows within a poll.
    """
    time.sleep(0.3)
    st = lab.status()
    while time.monotonic() - t0 < timeout:
        st = lab.status()
        if failover:
            moved = [t["at"] for e in st["hosts"].values() for t in (e.get("history") or [])
                     if t.get("to") == "simplex" and t.get("at", 0) >= t0_wall]
            if moved and sum(_serving(e) for e in st["hosts"].values()) == 1:
                return t0 + (min(moved) - t0_wall), st
        elif st["state"] == "protected":
            if kind == "cut-link":  # detected: both controllers call the pair degraded
                if all(e.get("state") == "degraded" for e in st["hosts"].values()):
                    return time.monotonic(), st
            elif kind != "kill-controller":
                return time.monotonic(), st
            else:
                pid = st["hosts"].get(host or "", {}).get("controller_pid")
                if pid and pid != old_controller and "error" not in st["hosts"][host]:
                    return time.monotonic(), st
        time.sleep(0.2)
    return None, st


def _judge(r: TrialResult) -> None:
    p = r.problems
    if r.lost:
        p.append(f"{r.lost} acknowledged appends lost")
    if r.settle_s is None:
        p.append("did not settle in the expected state")
    if r.serving != 1:
        p.append(f"{r.serving} sides serve the guest (want exactly 1)")
    if len(r.uplinks_sending) > 1:
        p.append(f"guest frames from both CoServers' uplinks after settling ({', '.join(r.uplinks_sending)})")
    if not r.failover_expected and (r.state_after != "protected" or r.primary_after != r.primary_before):
        p.append(f"failed over though it must not: {r.state_after}, primary {r.primary_after}")
    if r.reconnects:
        p.append(f"the client had to reconnect {r.reconnects} times")
    if r.served_after is False:
        p.append(f"the client got no reply within {CLIENT_TIMEOUT_S:g} s after the pair settled")
    if (r.reconnects or r.served_after is False) and r.switch_log:
        p.append(f"LAN switch from the fault on: {'; '.join(r.switch_log[:40])}")
    if r.controller_restarted is False:
        p.append("the controller did not come back")
    r.ok = not p


@dataclass
class LoadTrialResult:
    """One profile/device set kept protected under load, then its primary killed."""

    profile: str
    devices: str
    checkpoints: int = 0          # checkpoints the primary counted while the client wrote
    load_s: float = 0.0
    stayed_protected: bool = False
    failover: TrialResult | None = None
    acked: int = 0
    lost: int = 0
    ok: bool = False
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_load_trial(lab: Lab, profile: str, devices: str, *, checkpoints: int = 20, interval: float = 0.05,
                   say: Callable[[str], None] | None = None) -> LoadTrialResult:
    """On a protected lab: a client writes until `checkpoints` more have passed with the pair protected
    the whole time, then the primary's QEMU is killed (run_trial); every ack must read back."""
    r = LoadTrialResult(profile=profile, devices=devices)
    st = lab.status()
    if st["state"] != "protected":
        raise TrialError(f"load trial {profile}/{devices}: the lab is {st['state']}, not protected")
    g = st["guest"]
    period_s = max(st.get("checkpoint_ms") or 1000, 100) / 1000
    start = int(st["checkpoints"] or 0)
    console = ConsoleWatch(lab)
    writer = Writer(g["client_netns"], g["address"], g["port"], interval=interval, tag=f"load-{profile}").start()
    t0 = time.monotonic()
    deadline = t0 + checkpoints * period_s * 3 + 30
    try:
        while True:
            st = lab.status()
            r.checkpoints = int(st["checkpoints"] or 0) - start
            if st["state"] != "protected":
                r.problems.append(f"left protection after {r.checkpoints} checkpoints under load: {st['state']}"
                                  + (f" ({st['alert']})" if st.get("alert") else ""))
                break
            if r.checkpoints >= checkpoints:
                r.stayed_protected = True
                break
            if time.monotonic() > deadline:
                r.problems.append(f"only {r.checkpoints} of {checkpoints} checkpoints in "
                                  f"{time.monotonic() - t0:.0f} s")
                break
            time.sleep(0.5)
    finally:
        r.load_s = round(time.monotonic() - t0, 1)
        load = writer.stop()
    # a copy that crashed under load (the secondary, repaired by the next checkpoint, is seen only here)
    r.problems += [f"the guest crashed under load on {c}" for c in console.crashes()[:3]]
    if say:
        say(f"{profile}/{devices}: {r.checkpoints} checkpoints in {r.load_s} s under load, "
            f"{len(load.acks)} appends acked")
    if r.stayed_protected:
        r.failover = run_trial(lab, "kill-primary-qemu", interval=interval, say=say)
        r.problems += r.failover.problems
    g = lab.status()["guest"]
    try:
        with connect_journal(g["client_netns"], g["address"], g["port"]) as client:
            r.lost = len(missing_acks(client, load.acked)) + (r.failover.lost if r.failover else 0)
    except CoserverError as exc:
        r.lost = len(load.acks)
        r.problems.append(f"cannot read back: {exc}")
    r.acked = len(load.acks) + (r.failover.acked if r.failover else 0)
    if r.lost and not any("lost" in p for p in r.problems):
        r.problems.append(f"{r.lost} acknowledged appends lost")
    r.ok = r.stayed_protected and not r.problems and r.lost == 0
    return r


def load_table(results: list[LoadTrialResult]) -> str:
    lines = [f"{'profile':<12} {'devices':<9} {'ckpts':>5} {'load s':>6} {'acked':>6} {'lost':>5} "
             f"{'gap ms':>7} {'survivor':<8} result"]
    for r in results:
        f = r.failover
        lines.append(f"{r.profile:<12} {r.devices:<9} {r.checkpoints:5d} {r.load_s:6.1f} {r.acked:6d} {r.lost:5d} "
                     f"{(f.gap_s * 1000 if f else float('nan')):7.0f} {((f.survivor if f else None) or '-'):<8} "
                     f"{'ok' if r.ok else 'FAIL: ' + '; '.join(r.problems)}")
    return "\n".join(lines)


def table(results: list[TrialResult]) -> str:
    lines = [f"{'fault':<26} {'host':<5} {'gap ms':>7} {'later ms':>8} {'settle s':>8} {'acked':>6} {'lost':>5} "
             f"{'reconn':>6} {'survivor':<8} result"]
    for r in results:
        lines.append(f"{r.fault:<26} {(r.host or '-'):<5} {r.gap_s * 1000:7.0f} {r.later_gap_s * 1000:8.0f} "
                     f"{(r.settle_s if r.settle_s is not None else float('nan')):8.2f} {r.acked:6d} {r.lost:5d} "
                     f"{r.reconnects:6d} {(r.survivor or '-'):<8} {'ok' if r.ok else 'FAIL: ' + '; '.join(r.problems)}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="coserver-fault-trials", description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1)
    parser.add_argument("--faults", default=None, help="comma-separated subset of: " + ", ".join(FAULTS)
                        + " (default: every fault the backend has)")
    parser.add_argument("--backend", default="qemu", choices=BACKENDS,
                        help="who runs the QEMUs (libvirt: a libvirtd per lab host)")
    parser.add_argument("--prefix", default="ft")
    parser.add_argument("--checkpoint-ms", type=int, default=1000)
    parser.add_argument("--json", type=Path, default=None, help="also write every result here")
    parser.add_argument("--profiles", default=None, metavar="all|NAME,...",
                        help="instead of the faults: keep each profile protected under load with each "
                             "device set, then kill its primary")
    parser.add_argument("--devices", default=",".join(DEVICE_SETS), help="device sets for --profiles")
    parser.add_argument("--checkpoints", type=int, default=20, help="checkpoints under load per profile trial")
    args = parser.parse_args(argv)
    log.configure("ERROR")
    if args.profiles:
        return _profile_trials(args)
    names = ([f.strip() for f in args.faults.split(",") if f.strip()] if args.faults
             else default_faults(args.backend))
    bad = [n for n in names if n not in FAULTS]
    if bad:
        print(f"coserver-fault-trials: error: unknown fault(s) {', '.join(bad)}", file=sys.stderr)
        return 2
    needs_libvirt = [n for n in names if n in LIBVIRT_FAULTS and args.backend != "libvirt"]
    if needs_libvirt:
        print(f"coserver-fault-trials: error: {', '.join(needs_libvirt)} need --backend libvirt", file=sys.stderr)
        return 2
    lab = Lab(args.prefix)
    results: list[TrialResult] = []
    try:
        for _round in range(args.trials):
            for name in names:
                lab.down()
                lab.up(LabOptions(prefix=args.prefix, checkpoint_ms=args.checkpoint_ms, backend=args.backend))
                r = run_trial(lab, name, say=lambda m: print(f"  .. {m}", file=sys.stderr, flush=True))
                results.append(r)
                print(table([r]).splitlines()[1], flush=True)
    finally:
        lab.down()
    return _report(results, table(results), args.json)


def _profile_trials(args: argparse.Namespace) -> int:
    names = profile_names() if args.profiles == "all" else [p.strip() for p in args.profiles.split(",") if p]
    devices = [d.strip() for d in args.devices.split(",") if d.strip()]
    bad = [n for n in names if n not in profile_names()] + [d for d in devices if d not in DEVICE_SETS]
    if bad:
        print(f"coserver-fault-trials: error: unknown profile(s) or device set(s): {', '.join(bad)}",
              file=sys.stderr)
        return 2
    lab = Lab(args.prefix)
    results: list[LoadTrialResult] = []
    say = lambda m: print(f"  .. {m}", file=sys.stderr, flush=True)  # noqa: E731
    try:
        for _ in range(args.trials):
            for name in names:
                for dev in devices:
                    lab.down()
                    try:
                        lab.up(LabOptions(prefix=args.prefix, checkpoint_ms=args.checkpoint_ms, profile=name,
                                          devices=dev))
                        r = run_load_trial(lab, name, dev, checkpoints=args.checkpoints, say=say)
                    except CoserverError as exc:
                        r = LoadTrialResult(profile=name, devices=dev, problems=[f"lab up: {exc}"])
                    results.append(r)
                    print(load_table([r]).splitlines()[1], flush=True)
    finally:
        lab.down()
    return _report(results, load_table(results), args.json)


def _report(results: Sequence[TrialResult | LoadTrialResult], text: str, json_path: Path | None) -> int:
    """The closing table, every result as JSON if asked; exit status 0 only if every trial was ok."""
    print()
    print(text)
    if json_path:
        json_path.write_text(json.dumps([r.as_dict() for r in results], indent=2) + "\n")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
