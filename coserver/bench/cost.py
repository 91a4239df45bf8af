"""Cost of protection: the same workload on one QEMU and on a COLO pair, alternating A/B.

For each checkpoint period, `rounds` rounds of A (unprotected: the lab guest
alone on cs1, started with exactly the lab primary's command line, on the same
network path) and B (protected: `Lab.up` with that period), the order swapped
every round so neither side always runs first. Each run is a fresh guest; its
window is the workload of bench.workload (fsync'ed appends, then a COUNT
latency probe). For B the bench also reads, per phase:
  * checkpoints and the guest's pause per checkpoint from the primary QEMU's own
    events (MIGRATION_PASS, STOP/RESUME: colo.status.CheckpointWatch, on the
    launcher's private QMP socket, so the controller's session is untouched);
  * bytes the primary sent on the migration stream (the checkpoints), on NBD
    (the disk writes) and on the packet mirror, from the kernel's TCP counters;
  * the controllers' own checkpoint count, as a cross-check.
Both sides: CPU seconds used by the QEMU process(es) during the window.

Two placements (`placements`): "shared", the QEMUs wherever the kernel runs them (on this one
machine both CoServers then compete for the same cores, which two hosts never do), and "pinned",
each CoServer's QEMU on a core of its own (the primary's and the unprotected guest's on core 0,
the secondary's on core 1), as on two hosts; the controllers and the client are not pinned.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable

from coserver.bench import machine, workload
from coserver.bench.failover import lab_options
from coserver.bench.site import Site, fresh_dir
from coserver.bench.stats import median, percentile, ratio, summary
from coserver.colo.status import CheckpointWatch
from coserver.errors import CoserverError
from coserver.lab.lab import Lab
from coserver.lab.net import GUEST_ADDRESS
from coserver.lab.spec import GUEST_PORT
from coserver.qmp.session import QmpSession
from coserver.sys.proc import pin_threads

SETTLE_S = 2.0


def _phases(ns: str, append_s: float, probe_s: float, tag: str) -> list[tuple[str, Callable[[], dict]]]:
    return [("appends", lambda: workload.append_phase(ns, GUEST_ADDRESS, GUEST_PORT, append_s, tag)),
            ("probe", lambda: workload.probe_phase(ns, GUEST_ADDRESS, GUEST_PORT, probe_s))]


PRIMARY_CORE, SECONDARY_CORE = 0, 1
PLACEMENTS = ("shared", "pinned")


def unprotected_run(base: Path, prefix: str, append_s: float, probe_s: float, tag: str,
                    pinned: bool = False) -> dict[str, Any]:
    site = Site(prefix, fresh_dir(base, prefix))
    try:
        site.create()
        assert site.guest is not None
        site.guest.new_data_disk(site.disk("cs1"))
        proc = site.start_simplex("cs1")
        if pinned and proc.pid:
            pin_threads(proc.pid, {PRIMARY_CORE})
        boot = site.wait_guest(proc)
        time.sleep(SETTLE_S)
        cpu0 = workload.cpu_seconds(proc.pid)
        t0 = time.monotonic()
        phases = {name: fn() for name, fn in _phases(site.client_ns, append_s, probe_s, tag)}
        took = time.monotonic() - t0
        cpu1 = workload.cpu_seconds(proc.pid)
        return {"mode": "unprotected", "guest_boot_s": round(boot, 2), "window_s": round(took, 2),
                "qemu_cpu_s": round(cpu1 - cpu0, 2) if cpu0 is not None and cpu1 is not None else None,
                "phases": phases}
    finally:
        site.down()


async def _measure_protected(lab: Lab, ctl: Path, pids: list[int], append_s: float, probe_s: float,
                             tag: str) -> dict[str, Any]:
    ns_primary = lab.net.ns(lab.status()["primary"] or "cs1")
    ports = lab.sync_ports()   # the server's slot, as its controllers use
    async with await QmpSession.connect(ctl, name="bench-watch") as qmp:
        watch = CheckpointWatch(qmp)
        watch.start()
        await asyncio.sleep(SETTLE_S)
        cpu0 = [workload.cpu_seconds(p) for p in pids]
        phases: dict[str, Any] = {}
        t_window = time.monotonic()
        for name, fn in _phases(lab.net.ns("client"), append_s, probe_s, tag):
            c0, p0 = watch.count, len(watch.pauses)
            ctl0 = lab.status()["checkpoints"]
            net0 = await asyncio.to_thread(workload.tcp_bytes, ns_primary, ports)
            res = await asyncio.to_thread(fn)
            net1 = await asyncio.to_thread(workload.tcp_bytes, ns_primary, ports)
            c1 = watch.count
            sent = workload.bytes_delta(net0, net1)
            n = c1 - c0
            res.update(checkpoints=n, checkpoints_per_s=round(n / res["seconds"], 3),
                       controller_checkpoints=lab.status()["checkpoints"] - ctl0,
                       pause_ms=[round(p * 1000, 3) for p in watch.pauses[p0:]],
                       bytes_sent=sent,
                       migration_bytes_per_checkpoint=round(sent["migration"] / n) if n else None)
            phases[name] = res
        took = time.monotonic() - t_window
        cpu1 = [workload.cpu_seconds(p) for p in pids]
        await watch.stop()
    cpu = [b - a for a, b in zip(cpu0, cpu1, strict=True) if a is not None and b is not None]
    return {"window_s": round(took, 2), "qemu_cpu_s": round(sum(cpu), 2) if len(cpu) == len(pids) else None,
            "phases": phases}


def protected_run(base: Path, prefix: str, period_ms: int, append_s: float, probe_s: float,
                  tag: str, insecure: bool = False, pinned: bool = False) -> dict[str, Any]:
    workdir = fresh_dir(base, prefix)
    lab = Lab(prefix, workdir)
    try:
        t0 = time.monotonic()
        lab.up(lab_options(prefix, workdir, period_ms, insecure=insecure))
        up_s = time.monotonic() - t0
        st = lab.status()
        primary = lab.qemu(st["primary"])
        if pinned:
            for role, core in (("primary", PRIMARY_CORE), ("secondary", SECONDARY_CORE)):
                pid = st["hosts"][st[role]].get("qemu_pid")
                if not pid:
                    raise CoserverError(f"the {role}'s QEMU has no pid to pin")
                pin_threads(pid, {core})
        pids = [e["qemu_pid"] for e in st["hosts"].values() if e.get("qemu_pid")]
        out = asyncio.run(_measure_protected(lab, primary.ctl_path, pids, append_s, probe_s, tag))
        after = lab.status()
        if after["state"] != "protected":
            raise CoserverError(f"the pair was {after['state']} after the window, not protected")
        return {"mode": "protected", "checkpoint_ms": period_ms, "lab_up_s": round(up_s, 2), **out}
    finally:
        lab.down()


def phase_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    ap = [r["phases"]["appends"] for r in runs]
    pr = [r["phases"]["probe"] for r in runs]
    out: dict[str, Any] = {
        "runs": len(runs),
        "appends_per_s": median(a["ops_per_s"] for a in ap),
        "append_latency_ms": summary((x for a in ap for x in a["latency_ms"]), 2),
        "probe_latency_ms": summary((x for p in pr for x in p["latency_ms"]), 2),
        "qemu_cpu_s_per_s": median(r["qemu_cpu_s"] / r["window_s"] for r in runs if r.get("qemu_cpu_s") is not None),
    }
    if runs and runs[0]["mode"] == "protected":
        for name, ph in (("appends", ap), ("probe", pr)):
            secs = sum(p["seconds"] for p in ph)
            n = sum(p["checkpoints"] for p in ph)
            mig = sum(p["bytes_sent"]["migration"] for p in ph)
            out[name] = {
                "checkpoints": n, "checkpoints_per_s": round(n / secs, 3) if secs else None,
                "pause_ms": summary((x for p in ph for x in p["pause_ms"]), 2),
                "migration_bytes_per_checkpoint": round(mig / n) if n else None,
                "nbd_bytes_per_s": round(sum(p["bytes_sent"]["nbd"] for p in ph) / secs) if secs else None,
                "mirror_bytes_per_s": round(sum(p["bytes_sent"]["mirror"] for p in ph) / secs) if secs else None,
            }
        nbd = sum(p["bytes_sent"]["nbd"] for p in ap)
        ops = sum(p["ops"] for p in ap)
        out["appends"]["nbd_bytes_per_append"] = round(nbd / ops) if ops else None
    return out


def run(base: Path, prefix: str, periods: list[int], rounds: int, append_s: float, probe_s: float,
        say: Callable[[str], None], placements: tuple[str, ...] = PLACEMENTS) -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    problems: list[str] = []
    if "pinned" in placements and len(os.sched_getaffinity(0)) < 2:
        problems.append("pinned: not measured, this machine offers fewer than 2 CPUs to pin the two QEMUs to")
        placements = tuple(p for p in placements if p != "pinned")
    try:
        for period in periods:
            for r in range(rounds):
                order = ("unprotected", "protected") if r % 2 == 0 else ("protected", "unprotected")
                for placement in placements:
                    for mode in order:
                        tag = f"cost-{period}-{r}-{placement[0]}{mode[0]}"
                        others = machine.busy()  # between runs: every QEMU seen is someone else's
                        pinned = placement == "pinned"
                        try:
                            if mode == "unprotected":
                                run_ = unprotected_run(base, f"{prefix}u", append_s, probe_s, tag, pinned=pinned)
                            else:
                                run_ = protected_run(base, f"{prefix}p", period, append_s, probe_s, tag,
                                                     pinned=pinned)
                        except CoserverError as exc:
                            problems.append(f"period {period} ms round {r + 1} {placement} {mode}: {exc}")
                            say(f"cost: {problems[-1]}")
                            continue
                        run_.update(period_block_ms=period, round=r + 1, machine_before=others, placement=placement)
                        runs.append(run_)
                        ap, pr = run_["phases"]["appends"], run_["phases"]["probe"]
                        say(f"cost {period} ms round {r + 1} {placement} {mode}: {ap['ops_per_s']:.0f} appends/s, "
                            f"append p50 {percentile(ap['latency_ms'], 50) or 0:.1f} ms, probe p50 "
                            f"{percentile(pr['latency_ms'], 50) or 0:.1f} ms"
                            + (f", {ap['checkpoints'] + pr['checkpoints']} checkpoints" if mode == "protected" else ""))
    finally:
        for p in (f"{prefix}u", f"{prefix}p"):
            Lab(p, base / p).down()
            shutil.rmtree(base / p, ignore_errors=True)
    out: dict[str, Any] = {"periods_ms": periods, "rounds": rounds, "append_s": append_s, "probe_s": probe_s,
                           "probe_interval_s": 0.01, "placements": list(placements), "runs": runs,
                           "problems": problems}
    for placement in placements:
        key = "by_period" if placement == "shared" else f"{placement}_by_period"
        out[key] = _by_period([r for r in runs if r.get("placement", "shared") == placement], periods)
    return out


#: An append slower than this many times the protected median is held up by something that comes and
#: goes (a checkpoint, a reply colo-compare holds, a retransmission), not by the steady per-append path.
STALL_FACTOR = 3.0


def stages(unprotected: list[dict[str, Any]], protected: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Where a protected append's time goes, in ms per append (the client appends back to back, so
    time per append is the window over the appends made):
      unprotected      the same append on one QEMU;
      stalls           what the slow appends (over STALL_FACTOR x the protected median) took beyond the
                       median: the checkpoints as the client sees them: the guest stopped, then its
                       replies held until the secondary's copies come, a client retransmission;
      pause            of that, QEMU's own stop for the checkpoints (its events), per append;
      network_compare  a request/response without disk (the probe, p50) protected minus unprotected:
                       the proxy hops (mirror, redirector) and colo-compare's wait for the
                       secondary's copy of the reply;
      write_and_rest   the remainder: the steady per-append cost of the disk write replicated over
                       NBD to the secondary and whatever else the pair costs (on shared cores: the
                       secondary's CPU).
    None without both sides measured."""
    ua = [r["phases"]["appends"] for r in unprotected]
    pa = [r["phases"]["appends"] for r in protected]
    u_ops, p_ops = sum(a["ops"] for a in ua), sum(a["ops"] for a in pa)
    u_probe = median(x for r in unprotected for x in r["phases"]["probe"]["latency_ms"])
    p_probe = median(x for r in protected for x in r["phases"]["probe"]["latency_ms"])
    p_lat = [x for a in pa for x in a.get("latency_ms", [])]
    p_median = median(p_lat)
    if not u_ops or not p_ops or u_probe is None or p_probe is None or p_median is None:
        return None
    per_u = 1000 * sum(a["seconds"] for a in ua) / u_ops
    per_p = 1000 * sum(a["seconds"] for a in pa) / p_ops
    slow = [x for x in p_lat if x > STALL_FACTOR * p_median]
    stalls = sum(x - p_median for x in slow) / p_ops
    pause = sum(sum(a.get("pause_ms", [])) for a in pa) / p_ops
    network = max(0.0, p_probe - u_probe)
    rest = per_p - per_u - stalls - network
    parts = {"stalls": stalls, "network_compare": network, "write_and_rest": rest}
    extra = per_p - per_u
    return {"unprotected_ms": round(per_u, 3), "protected_ms": round(per_p, 3), "extra_ms": round(extra, 3),
            **{f"{k}_ms": round(v, 3) for k, v in parts.items()}, "pause_ms": round(pause, 3),
            "stalled_appends": len(slow), "appends": p_ops, "stall_factor": STALL_FACTOR,
            "share": {k: round(v / extra, 3) if extra > 0 else None for k, v in parts.items()},
            "largest": max(parts, key=lambda k: parts[k])}


def _by_period(runs: list[dict[str, Any]], periods: list[int]) -> list[dict[str, Any]]:
    """Per period: each side's summary and the protected/unprotected ratios (the tail's too)."""
    by_period = []
    for period in periods:
        a = [r for r in runs if r["period_block_ms"] == period and r["mode"] == "unprotected"]
        b = [r for r in runs if r["period_block_ms"] == period and r["mode"] == "protected"]
        sa, sb = phase_summary(a), phase_summary(b)
        by_period.append({
            "checkpoint_ms": period, "unprotected": sa, "protected": sb,
            "throughput_ratio": ratio(sb["appends_per_s"], sa["appends_per_s"]),
            "append_p50_ratio": ratio(sb["append_latency_ms"]["p50"], sa["append_latency_ms"]["p50"]),
            "append_p99_ratio": ratio(sb["append_latency_ms"]["p99"], sa["append_latency_ms"]["p99"]),
            "probe_p50_ratio": ratio(sb["probe_latency_ms"]["p50"], sa["probe_latency_ms"]["p50"]),
            "stages_ms_per_append": stages(a, b),
        })
    return by_period
