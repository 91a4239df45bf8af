"""`coserver doctor` and `coserver qemu select`: can this host run FT servers, with which QEMU?

    coserver doctor [--json] [--qemu PATH] [--no-selftest]
    coserver qemu select (--system | PATH) [--fresh]

doctor prints one line per check, then the self-test's PASS or FAIL per machine
type the profiles use (pc, q35) with the step and the reason, and for a failed
type the profiles this host cannot protect; exit status 0 only if all PASS.
qemu select runs the COLO self-test on a binary and, on PASS, records it as the
QEMU every coserver command uses.
"""

from __future__ import annotations

import json
import sys

import click

from coserver.colo.settings import SyncPorts
from coserver.doctor import hostcheck, qemuselect
from coserver.doctor.selftest import profile_machines, run_selftest
from coserver.images.accel import kvm_probe
from coserver.paths import SYSTEM_QEMU, install_for, qemu_install


def _say(msg: str) -> None:
    click.echo(f"  .. {msg}", err=True)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the checks and the self-test as JSON.")
@click.option("--qemu", "qemu_path", default=None, metavar="PATH",
              help="Check this QEMU binary instead of the selected one.")
@click.option("--no-selftest", is_flag=True, help="Skip the COLO self-test (host checks only; never PASS).")
def doctor(as_json: bool, qemu_path: str | None, no_selftest: bool) -> None:
    """Check this host and run the COLO self-test: PASS means this QEMU keeps a guest fault-tolerant."""
    qemu = install_for(qemu_path, "cli", "given with --qemu") if qemu_path else qemu_install()
    checks = hostcheck.qemu_checks(qemu)
    kvm = kvm_probe(qemu)
    checks.append(hostcheck.Check("kvm", kvm.usable, kvm.detail, required=False))
    accel = "kvm" if kvm.usable else "tcg"
    checks.append(hostcheck.Check("accelerator", True, f"{accel} will be used"))
    checks.append(hostcheck.netns_check())
    p = SyncPorts()
    checks.append(hostcheck.ports_check((p.mirror, p.compare, p.migration, p.nbd)))
    host_ok = all(c.ok for c in checks if c.required)
    reports = []
    if not as_json:
        for c in checks:
            mark = "ok  " if c.ok else ("FAIL" if c.required else "warn")
            click.echo(f"{mark} {c.name:<20} {c.detail}")
    machines = profile_machines()
    if host_ok and not no_selftest:
        for machine in machines:
            if not as_json:
                click.echo(f"self-test [{machine}]: a COLO pair of the lab guest on the {machine} machine "
                           f"in a private namespace (about 30 s)")
            report = run_selftest(qemu, accel=accel, machine=machine, tls=True, progress=None if as_json else _say)
            reports.append(report)
            if not as_json:
                click.echo(_report_line(report, machines[machine]) + f" — QEMU {qemu.version} ({qemu.system})")
    passed = host_ok and bool(reports) and all(r.passed for r in reports)
    cannot = sorted(p for r in reports if not r.passed for p in machines[r.machine])
    if as_json:
        click.echo(json.dumps({"result": "PASS" if passed else "FAIL",
                               "qemu": {"binary": str(qemu.system), "version": qemu.version,
                                        "source": qemu.source, "reason": qemu.reason},
                               "accel": accel, "checks": [c.as_dict() for c in checks],
                               "selftest": reports[0].as_dict() if reports else None,
                               "selftests": {r.machine: r.as_dict() | {"profiles": machines[r.machine]}
                                             for r in reports},
                               "profiles_unprotectable": cannot}, indent=2))
    elif not reports:
        why = "self-test skipped (--no-selftest)" if host_ok else "host checks failed: " + "; ".join(
            f"{c.name}: {c.detail}" for c in checks if c.required and not c.ok)
        click.echo(f"FAIL {why}")
    else:
        click.echo("PASS: every machine type" if passed else
                   f"FAIL: this host cannot protect the profiles {', '.join(cannot)}")
    sys.exit(0 if passed else 1)


def _report_line(report, profiles: list[str]) -> str:
    line = qemuselect.summarize(report.as_dict())
    if not report.passed:
        line += f" (cannot protect: {', '.join(profiles)})"
    return line


@click.group()
def qemu() -> None:
    """Choose the QEMU coserver runs (make setup uses this)."""


@qemu.command("select")
@click.argument("binary", required=False)
@click.option("--system", is_flag=True, help=f"Judge the system's {SYSTEM_QEMU}.")
@click.option("--fresh", is_flag=True, help="Ignore a cached verdict; run the self-test again.")
def qemu_select(binary: str | None, system: bool, fresh: bool) -> None:
    """Self-test BINARY (or the system QEMU); on PASS use it from now on. Exit 1 on FAIL."""
    if bool(binary) == system:
        raise click.UsageError("give either a QEMU binary path or --system")
    verdict = qemuselect.select(binary or SYSTEM_QEMU, use_cache=not fresh, progress=_say)
    cached = " (cached verdict)" if verdict.cached else ""
    click.echo(f"{verdict.summary}{cached} — QEMU {verdict.qemu.version} ({verdict.qemu.system})")
    if verdict.passed:
        click.echo(f"selected: {verdict.qemu.system}")
    sys.exit(0 if verdict.passed else 1)
