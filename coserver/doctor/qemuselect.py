"""Choose the QEMU coserver runs: the one that passes the COLO self-test.

`make setup` asks select() about the system QEMU first; when that fails it
builds the pinned, patched QEMU and asks again about the build. Verdicts are
cached per binary identity (path, size, mtime, version), accelerator and
machine type, so a second `make setup` does not boot guests to learn what it
knew. A QEMU passes only if it passes on every machine type the profiles use.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from coserver import log
from coserver.doctor.selftest import SelfTestReport, profile_machines, run_selftest
from coserver.images.accel import choose_accel
from coserver.paths import QemuInstall, cache_dir, install_for, record_selection

_log = log.get("qemuselect")


def _verdicts_file() -> Path:
    return cache_dir() / "selftest-verdicts.json"


def binary_identity(qemu: QemuInstall, accel: str, machine: str = "pc") -> str:
    st = os.stat(qemu.system)
    return f"{qemu.system}|{st.st_size}|{int(st.st_mtime)}|{qemu.version}|{accel}|{machine}|tls"


def _load() -> dict:
    try:
        return json.loads(_verdicts_file().read_text())
    except (OSError, ValueError):
        return {}


def cached_verdict(qemu: QemuInstall, accel: str, machine: str = "pc") -> dict | None:
    return _load().get(binary_identity(qemu, accel, machine))


def _store(qemu: QemuInstall, accel: str, report: SelfTestReport) -> None:
    data = _load()
    data[binary_identity(qemu, accel, report.machine)] = {**report.as_dict(),
                                                          "when": time.strftime("%Y-%m-%d %H:%M:%S")}
    path = _verdicts_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


@dataclass
class Verdict:
    qemu: QemuInstall
    accel: str
    passed: bool
    summary: str
    cached: bool


def judge(qemu: QemuInstall, *, use_cache: bool = True, progress=None) -> Verdict:
    """Run (or recall) the COLO self-test for this QEMU on every machine type the profiles use.

    Stops at the first machine type that fails: the QEMU is not selected either way."""
    accel = choose_accel(qemu)
    results: list[dict] = []
    all_cached = True
    say = progress or (lambda msg: None)
    for machine in profile_machines():
        hit = cached_verdict(qemu, accel, machine) if use_cache else None
        if hit is None:
            all_cached = False
            # with TLS, as every site runs it (issue 14): a QEMU without GnuTLS cannot protect anything
            report = run_selftest(qemu, accel=accel, machine=machine, tls=True,
                                  progress=lambda msg, m=machine: say(f"[{m}] {msg}"))
            _store(qemu, accel, report)
            hit = report.as_dict()
        results.append(hit)
        if not hit["passed"]:
            break
    passed = all(r["passed"] for r in results)
    return Verdict(qemu, accel, passed, "; ".join(summarize(r) for r in results), cached=all_cached)


def summarize(r: dict) -> str:
    machine = r.get("machine", "pc")
    if r["passed"]:
        return (f"PASS {machine}: {r['checkpoints']} checkpoints in {r['colo_seconds']} s at {r['checkpoint_ms']} ms, "
                f"{r['appends_acked']} appends acked, {r['appends_lost']} lost after failover "
                f"(gap {r['failover_gap_s']} s), {r['accel']}{', TLS' if r.get('tls') else ''}")
    return f"FAIL {machine} at '{r['step']}': {r['reason']}"


def select(binary: str, *, use_cache: bool = True, progress=None) -> Verdict:
    """Self-test `binary`; on PASS record it as the QEMU every coserver command uses."""
    qemu = install_for(binary, "candidate", "being judged by the COLO self-test")
    verdict = judge(qemu, use_cache=use_cache, progress=progress)
    if verdict.passed:
        others = [v for k, v in _load().items() if not v.get("passed") and not k.startswith(f"{qemu.system}|")]
        why = f"QEMU {qemu.version} passed the COLO self-test ({verdict.summary})"
        if others:
            last = others[-1]
            why += f"; {last['qemu_binary']} (QEMU {last['qemu_version']}) failed it: {summarize(last)}"
        record_selection(qemu.system, why)
        _log.info("qemu.selected", binary=str(qemu.system), reason=why)
    return verdict
