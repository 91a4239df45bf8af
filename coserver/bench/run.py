"""One bench run: every section in turn, then bench.json, report.md and the plots.

Each section runs on labs/sites of its own prefix (<prefix>f, <prefix>p, ...;
never the user's default lab `cs`) under a private temp directory, and removes
them whatever happens. A section that fails is recorded with its error and
the run goes on with the next; the run is complete only when every section
measured what it should (report.incomplete) — timings never fail it.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from coserver.bench import cost, failover, machine, overhead, protect, report, restart, sync, tlscost
from coserver.errors import CoserverError
from coserver.lab.lab import Lab

SECTIONS = report.SECTIONS


@dataclass
class BenchConfig:
    out: Path
    quick: bool = False
    trials: int = 10
    #: trials of each hang and power cut (found by silence, not by a dead process: longer per trial)
    detect_trials: int = 5
    #: the failover section's faults (failover.FAULTS)
    faults: list[str] = field(default_factory=lambda: list(failover.FAULTS))
    periods_ms: list[int] = field(default_factory=lambda: [200, 1000, 5000])
    sections: list[str] = field(default_factory=lambda: list(SECTIONS))
    prefix: str = "bn"
    failover_checkpoint_ms: int = 1000
    cost_rounds: int = 3
    #: the cost section's QEMU placements: shared cores, and each CoServer's QEMU on a core of its own
    cost_placements: list[str] = field(default_factory=lambda: list(cost.PLACEMENTS))
    append_s: float = 15.0
    probe_s: float = 8.0
    restart_trials: int = 3
    sync_repeats: int = 3
    overhead_window_s: float = 60.0
    tls_rounds: int = 3
    protect_trials: int = 3
    protect_checkpoint_ms: int = 2000

    @classmethod
    def make(cls, out: Path, quick: bool, **overrides: Any) -> BenchConfig:
        base = cls(out=out, quick=quick)
        if quick:
            base = cls(out=out, quick=True, trials=3, detect_trials=2, periods_ms=[1000], cost_rounds=1, append_s=5.0,
                       probe_s=3.0, restart_trials=1, sync_repeats=1, overhead_window_s=20.0, tls_rounds=1,
                       protect_trials=1)
        for k, v in overrides.items():
            if v is not None:
                setattr(base, k, v)
        return base

    def prefixes(self) -> list[str]:
        return [f"{self.prefix}{s}" for s in ("f", "p", "u", "r", "s", "o", "t", "e")]


def clean_leftovers(cfg: BenchConfig) -> None:
    """Labs of these prefixes left by a run that was killed: remove them first."""
    for p in cfg.prefixes():
        lab = Lab(p)
        if lab.net.existing() or lab.registry_file.exists():
            lab.down()


def run(cfg: BenchConfig, say: Callable[[str], None], command: str = "coserver bench") -> dict[str, Any]:
    cfg.out.mkdir(parents=True, exist_ok=True)
    t_start = time.monotonic()
    data: dict[str, Any] = {"command": command, "config": {**asdict(cfg), "out": str(cfg.out)},
                            "machine": machine.describe(), "sections": {}, "section_seconds": {},
                            "json_name": "bench.json"}
    say(f"machine: {data['machine'].get('cpu_model')} x{data['machine'].get('cpus')}, QEMU "
        f"{data['machine'].get('qemu_version')}, {data['machine'].get('accel')}")
    clean_leftovers(cfg)
    base = Path(tempfile.mkdtemp(prefix="csbench-", dir="/var/tmp"))
    p = cfg.prefix
    jobs: dict[str, Callable[[], dict[str, Any]]] = {
        "failover": lambda: failover.run(base, f"{p}f", cfg.trials, cfg.failover_checkpoint_ms, say,
                                         tuple(cfg.faults), cfg.detect_trials),
        "cost": lambda: cost.run(base, p, cfg.periods_ms, cfg.cost_rounds, cfg.append_s, cfg.probe_s, say,
                                 tuple(cfg.cost_placements)),
        "restart": lambda: restart.run(base, f"{p}r", cfg.restart_trials, say),
        "sync": lambda: sync.run(base, f"{p}s", cfg.sync_repeats, say),
        "overhead": lambda: overhead.run(base, f"{p}o", cfg.overhead_window_s, cfg.failover_checkpoint_ms, say),
        "tls": lambda: tlscost.run(base, f"{p}t", cfg.tls_rounds, cfg.failover_checkpoint_ms, cfg.append_s,
                                   cfg.probe_s, say),
        "protect": lambda: protect.run(base, f"{p}e", cfg.protect_trials, cfg.protect_checkpoint_ms, say),
    }
    try:
        for name in cfg.sections:
            t0 = time.monotonic()
            data["machine"].setdefault("at_sections", {})[name] = machine.busy()  # none of ours run now
            say(f"== {name}")
            try:
                data["sections"][name] = jobs[name]()
            except (CoserverError, OSError) as exc:
                data["sections"][name] = {"error": str(exc) or type(exc).__name__}
                say(f"{name}: FAILED: {exc}")
            data["section_seconds"][name] = round(time.monotonic() - t0, 1)
            write(data, cfg.out, t_start)  # a partial run still leaves its figures behind
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return write(data, cfg.out, t_start, final=True)


def write(data: dict[str, Any], out: Path, t_start: float, final: bool = False) -> dict[str, Any]:
    data["seconds"] = round(time.monotonic() - t_start, 1)
    if final:
        data["machine"]["at_end"] = machine.busy()
    data["complete"] = not report.incomplete(data)
    data["lost"] = report.losses(data)
    tmp = out / "bench.json.tmp"
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    tmp.replace(out / "bench.json")
    if final:
        from coserver.bench import plots  # matplotlib: only when plotting, not on every `coserver` start

        plots.make_all(data, out)
        (out / "report.md").write_text(report.render(data, out))
    return data
