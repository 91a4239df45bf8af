"""`coserver bench [--quick] [--out DIR]`: what fault tolerance costs and saves, in one run."""

from __future__ import annotations

import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path

import click

from coserver import log
from coserver.bench.failover import FAULTS
from coserver.bench.run import SECTIONS, BenchConfig, run


def _ints(ctx: click.Context, param: click.Parameter, value: str | None) -> list[int] | None:
    if value is None:
        return None
    try:
        out = [int(v) for v in value.split(",") if v.strip()]
    except ValueError as exc:
        raise click.BadParameter(f"{value!r}: comma-separated milliseconds, e.g. 200,1000,5000") from exc
    if not out or any(not 100 <= v <= 600_000 for v in out):
        raise click.BadParameter(f"{value!r}: each period must be 100..600000 ms")
    return out


def _names_of(what: str, choices: tuple[str, ...]) -> Callable[[click.Context, click.Parameter, str | None],
                                                               list[str] | None]:
    """A click callback for a comma-separated list of names, each one of `choices`."""
    def check(ctx: click.Context, param: click.Parameter, value: str | None) -> list[str] | None:
        if value is None:
            return None
        names = [v.strip() for v in value.split(",") if v.strip()]
        bad = [n for n in names if n not in choices]
        if bad or not names:
            raise click.BadParameter(f"unknown {what}(s) {', '.join(bad) or '(none)'}; choose from {', '.join(choices)}")
        return names
    return check


_sections = _names_of("section", tuple(SECTIONS))
_faults = _names_of("fault", FAULTS)


@click.command("bench")
@click.option("--quick", is_flag=True,
              help="3 trials per kill -9 fault and 2 per hang and power cut, one checkpoint period, one round, one "
                   "re-protection per order and RAM size, short windows.")
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), default=Path("bench-results"),
              show_default=True, help="Where bench.json, report.md and the PNG plots go.")
@click.option("--trials", type=click.IntRange(1, 1000), default=None,
              help="Trials per kill -9 fault [default: 10, quick 3].")
@click.option("--detect-trials", type=click.IntRange(1, 1000), default=None,
              help="Trials per hang and power-off fault (found by silence) [default: 5, quick 2].")
@click.option("--faults", callback=_faults, default=None, metavar="NAME,...",
              help=f"The failover section's faults [default: all: {', '.join(FAULTS)}].")
@click.option("--periods", callback=_ints, default=None, metavar="MS,MS,...",
              help="Checkpoint periods for the cost section [default: 200,1000,5000; quick 1000].")
@click.option("--sections", callback=_sections, default=None, metavar="NAME,...",
              help=f"Run only these sections: {', '.join(SECTIONS)}.")
@click.option("--prefix", default="bn", show_default=True,
              help="Lab prefix root; the sections use <prefix>f, <prefix>p, <prefix>u, <prefix>r, <prefix>s, "
                   "<prefix>o, <prefix>t, <prefix>e.")
def bench(quick: bool, out: Path, trials: int | None, detect_trials: int | None, faults: list[str] | None,
          periods: list[int] | None, sections: list[str] | None, prefix: str) -> None:
    """Benchmarks on the one-machine lab: failover gap (kill -9, hang, power cut), cost of protection, restart baseline,
    time to protect, controller overhead, TLS, entering COLO (stopped vs live order against guest
    RAM). Writes OUT/bench.json, OUT/report.md and PNG plots.

    Exit status 1 if a section could not be measured or an acknowledged write was lost;
    never because of a time."""
    cfg = BenchConfig.make(out.resolve(), quick, trials=trials, detect_trials=detect_trials, faults=faults,
                           periods_ms=periods, sections=sections, prefix=prefix)
    out.mkdir(parents=True, exist_ok=True)
    verbose = (click.get_current_context().find_root().params or {}).get("verbose", 0)
    if not verbose:
        log.configure("INFO", out.resolve() / "bench.log.jsonl")
    t0 = time.monotonic()

    def say(msg: str) -> None:
        click.echo(f"[{time.monotonic() - t0:6.0f} s] {msg}", err=True)

    command = "coserver " + shlex.join(sys.argv[1:]) if sys.argv[1:2] == ["bench"] else "coserver bench"
    data = run(cfg, say, command=command)
    click.echo(f"report: {cfg.out / 'report.md'}  ({data['seconds'] / 60:.1f} min)")
    lost = {k: v for k, v in data["lost"].items() if v}
    if lost:
        click.echo(f"coserver: error: acknowledged writes lost: {lost}", err=True)
    if not data["complete"]:
        click.echo("coserver: error: incomplete run (see the report)", err=True)
    if lost or not data["complete"]:
        sys.exit(1)
