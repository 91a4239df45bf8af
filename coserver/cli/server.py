"""`coserver server start|stop|enable|disable|status NAME`: an FT server's life, run by its controllers.

    coserver server start NAME [--prefix P]     the controllers start the guest and protect it
    coserver server stop NAME [--prefix P]      shut the guest down (ACPI, then a timeout); both sides stop
    coserver server enable|disable NAME         start it when the hosts boot, or not
    coserver server status NAME [--json]        the pair's state as its controllers report it

Starting is the controllers' work (controller/lifecycle.py): the host that ran the guest
last (or, the first time, the site's preferred CoServer) starts it alone with the witness's
grant, the other joins as its secondary, and the pair protects itself exactly as it
re-protects after a failure. The lab (--prefix) is the site these commands talk to today.
"""

from __future__ import annotations

import json

import click

from coserver.cli.pair import lab_pair, pair_options, prefix_option
from coserver.lab.lab import Lab, LabError


def _check_name(prefix: str, name: str) -> None:
    served = Lab(prefix).status().get("ftserver")
    if served and served != name:
        raise LabError(f"no FT server {name!r} on lab {prefix!r} (it runs {served!r})")


@click.group()
def server() -> None:
    """An FT server's life: start, stop, enable at boot, status."""


@server.command("start")
@click.argument("name")
@pair_options
def server_start(name: str, prefix: str, timeout: float, as_json: bool) -> None:
    """Start NAME: the controllers start the guest and protect it; return when protected."""
    _check_name(prefix, name)
    out = lab_pair(prefix, as_json).start(timeout)
    click.echo(json.dumps(out) if as_json else f"{name}: protected in {out['seconds']} s: primary {out['primary']}, "
                                               f"secondary {out['secondary']}")


@server.command("stop")
@click.argument("name")
@pair_options
def server_stop(name: str, prefix: str, timeout: float, as_json: bool) -> None:
    """Stop NAME cleanly on both hosts (ACPI power button, then a timeout); no failover."""
    _check_name(prefix, name)
    out = lab_pair(prefix, as_json).stop(timeout)
    click.echo(json.dumps(out) if as_json else f"{name}: stopped in {out['seconds']} s")


def _enable(name: str, prefix: str, on: bool) -> None:
    _check_name(prefix, name)
    click.echo(json.dumps(lab_pair(prefix, True).enable(on)))


@server.command("enable")
@click.argument("name")
@prefix_option
def server_enable(name: str, prefix: str) -> None:
    """Start NAME when its hosts boot."""
    _enable(name, prefix, True)


@server.command("disable")
@click.argument("name")
@prefix_option
def server_disable(name: str, prefix: str) -> None:
    """Do not start NAME when its hosts boot (a running server keeps running)."""
    _enable(name, prefix, False)


@server.command("status")
@click.argument("name")
@prefix_option
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def server_status(name: str, prefix: str, as_json: bool) -> None:
    """NAME's state as its controllers report it."""
    _check_name(prefix, name)
    st = Lab(prefix).status()
    if as_json:
        click.echo(json.dumps(st, indent=2))
        return
    click.echo(f"{name}: {st['state'].upper()} primary={st['primary'] or '-'} secondary={st['secondary'] or '-'}"
               + (f"  ALERT: {st['alert']}" if st.get("alert") else ""))
    for host, e in sorted(st["hosts"].items()):
        desired = e.get("desired") or {}
        click.echo(f"  {host:<4} role={e.get('role')} state={e.get('state')} wants={'run' if desired.get('run') else 'stop'}"
                   f" enabled={desired.get('enabled')}")
