"""`coserver server start|stop|enable|disable|status NAME`: an FT server's life, run by its controllers.

    coserver server start NAME [--site F | --prefix P]   the controllers start the guest and protect it
    coserver server stop NAME [--site F | --prefix P]    shut the guest down (ACPI, then a timeout); both stop
    coserver server enable|disable NAME                  start it when the hosts boot, or not
    coserver server status NAME [--json]                 the pair's state as its controllers report it

Starting is the controllers' work (controller/lifecycle.py): the host that ran the guest
last (or, the first time, the site's preferred CoServer) starts it alone with the witness's
grant, the other joins as its secondary, and the pair protects itself exactly as it
re-protects after a failure. On a CoServer (a site file) the commands reach this host's
controller and the peer's (cli.target); with --prefix they talk to the lab's.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from coserver.cli.pair import F, json_option, timeout_option
from coserver.cli.target import lab_prefix_option, one_line_errors, pair_client, site_option


def life_options(command: F) -> F:
    """NAME, --site, --prefix (the lab), --timeout and --json."""
    return click.argument("name")(site_option(lab_prefix_option(timeout_option(json_option(command)))))


@click.group()
def server() -> None:
    """An FT server's life: start, stop, enable at boot, status."""


@server.command("start")
@life_options
@one_line_errors
def server_start(name: str, site_file: Path | None, prefix: str | None, timeout: float, as_json: bool) -> None:
    """Start NAME: the controllers start the guest and protect it; return when protected."""
    out = pair_client(name, site_file, prefix, as_json, "server start").start(timeout)
    click.echo(json.dumps(out) if as_json else f"{name}: protected in {out['seconds']} s: primary {out['primary']}, "
                                               f"secondary {out['secondary']}")


@server.command("stop")
@life_options
@one_line_errors
def server_stop(name: str, site_file: Path | None, prefix: str | None, timeout: float, as_json: bool) -> None:
    """Stop NAME cleanly on both hosts (ACPI power button, then a timeout); no failover."""
    out = pair_client(name, site_file, prefix, as_json, "server stop").stop(timeout)
    click.echo(json.dumps(out) if as_json else f"{name}: stopped in {out['seconds']} s")


def _enable(name: str, site_file: Path | None, prefix: str | None, on: bool) -> None:
    command = "server enable" if on else "server disable"
    click.echo(json.dumps(pair_client(name, site_file, prefix, True, command).enable(on)))


@server.command("enable")
@click.argument("name")
@site_option
@lab_prefix_option
@one_line_errors
def server_enable(name: str, site_file: Path | None, prefix: str | None) -> None:
    """Start NAME when its hosts boot."""
    _enable(name, site_file, prefix, True)


@server.command("disable")
@click.argument("name")
@site_option
@lab_prefix_option
@one_line_errors
def server_disable(name: str, site_file: Path | None, prefix: str | None) -> None:
    """Do not start NAME when its hosts boot (a running server keeps running)."""
    _enable(name, site_file, prefix, False)


@server.command("status")
@click.argument("name")
@site_option
@lab_prefix_option
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@one_line_errors
def server_status(name: str, site_file: Path | None, prefix: str | None, as_json: bool) -> None:
    """NAME's state as its controllers report it."""
    st = pair_client(name, site_file, prefix, as_json, "server status").status()
    if as_json:
        click.echo(json.dumps(st, indent=2))
        return
    click.echo(f"{name}: {st['state'].upper()} primary={st['primary'] or '-'} secondary={st['secondary'] or '-'}"
               + (f"  ALERT: {st['alert']}" if st.get("alert") else ""))
    for host, e in sorted(st["hosts"].items()):
        desired = e.get("desired") or {}
        click.echo(f"  {host:<4} role={e.get('role')} state={e.get('state')} wants={'run' if desired.get('run') else 'stop'}"
                   f" enabled={desired.get('enabled')}")
