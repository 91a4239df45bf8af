"""`coserver reprotect|switchover NAME` and `coserver host maintenance on|off HOST`: the pair heals itself.

    coserver reprotect NAME                 re-protect now (needed with reprotect = "manual")
    coserver switchover NAME                move the primary role to the other CoServer, planned
    coserver host maintenance on|off HOST   take HOST out of every pair on purpose / bring it back

Each waits until the pair is protected again (or HOST is out) and prints how long
each phase took; progress of a disk re-sync is shown while it runs. The work is
pair.client.PairClient's. On a site (cli.target says when) they run on either CoServer and
reach both controllers; `host maintenance` does every FT server of the site, one line each,
and exits 1 if any of them failed.

The lab's forms stay: `coserver pair reprotect|switchover [--prefix P]` and
`coserver host maintenance on|off --host H [--prefix P]`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from coserver.cli.target import (
    answering,
    check_host,
    lab_prefix_option,
    local_host,
    one_line_errors,
    pair_client,
    say,
    server_names,
    site_option,
    site_pair,
    use_site,
)
from coserver.errors import CoserverError
from coserver.lab.lab import DEFAULT_PREFIX, HOSTS, Lab, LabError
from coserver.pair.client import PairClient, PairError
from coserver.site import load_site

prefix_option = click.option("--prefix", default=DEFAULT_PREFIX, show_default=True, help="The lab's prefix.")
timeout_option = click.option("--timeout", type=float, default=300.0, show_default=True,
                              help="Seconds to wait for the pair to be protected again.")
json_option = click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
F = TypeVar("F", bound=Callable[..., Any])


def pair_options(command: F) -> F:
    """--prefix, --timeout and --json: what every command here takes."""
    return prefix_option(timeout_option(json_option(command)))


def lab_pair(prefix: str, as_json: bool) -> PairClient:
    """The pair client for the lab at `prefix`."""
    return PairClient(Lab(prefix), HOSTS, say(as_json))


def site_options(command: F) -> F:
    """NAME (optional), --site, --prefix (the lab), --timeout and --json: reprotect and switchover."""
    return click.argument("name", required=False)(site_option(lab_prefix_option(timeout_option(json_option(command)))))


def _reprotect(name: str | None, site_file: Path | None, prefix: str | None, timeout: float, as_json: bool) -> None:
    out = pair_client(name, site_file, prefix, as_json, "reprotect").reprotect(timeout)
    click.echo(json.dumps(out) if as_json else f"{name + ': ' if name else ''}protected again in {out['seconds']} s: "
                                               f"primary {out['primary']}, secondary {out['secondary']}")


def _switchover(name: str | None, site_file: Path | None, prefix: str | None, timeout: float, as_json: bool) -> None:
    out = pair_client(name, site_file, prefix, as_json, "switchover").switchover(timeout)
    click.echo(json.dumps(out) if as_json else
               f"{name + ': ' if name else ''}switchover {out['from']} -> {out['to']}: took over in "
               f"{out['takeover_s']} s, protected again (secondary {out['secondary']}) after {out['protected_s']} s")


@click.command("reprotect")
@site_options
@one_line_errors
def reprotect(name: str | None, site_file: Path | None, prefix: str | None, timeout: float, as_json: bool) -> None:
    """Bring FT server NAME's failed CoServer back as the secondary and re-enter COLO."""
    _reprotect(name, site_file, prefix, timeout, as_json)


@click.command("switchover")
@site_options
@one_line_errors
def switchover(name: str | None, site_file: Path | None, prefix: str | None, timeout: float, as_json: bool) -> None:
    """Move FT server NAME's primary role to the other CoServer on purpose (planned maintenance)."""
    _switchover(name, site_file, prefix, timeout, as_json)


@click.group()
def pair() -> None:
    """The pair as a whole: re-protection and planned switchover (also `coserver reprotect|switchover NAME`)."""


@pair.command("reprotect")
@site_options
@one_line_errors
def pair_reprotect(name: str | None, site_file: Path | None, prefix: str | None, timeout: float,
                   as_json: bool) -> None:
    """Bring the failed CoServer back as the secondary and re-enter COLO."""
    _reprotect(name, site_file, prefix, timeout, as_json)


@pair.command("switchover")
@site_options
@one_line_errors
def pair_switchover(name: str | None, site_file: Path | None, prefix: str | None, timeout: float,
                    as_json: bool) -> None:
    """Move the primary role to the other CoServer on purpose (planned maintenance)."""
    _switchover(name, site_file, prefix, timeout, as_json)


@click.group()
def host() -> None:
    """One CoServer: maintenance mode."""


def _maintenance_line(name: str, host_name: str, on: bool, out: dict[str, Any]) -> str:
    if not out.get("ok"):
        return f"{name}: error: {out['error']}"
    if out.get("primary") is None:
        return f"{name}: {host_name} {'in maintenance' if on else 'back'} (the server runs nowhere: {out['state']})"
    if on:
        return f"{name}: {host_name} is in maintenance; {out['primary']} runs the guest ({out['state']}) " \
               f"after {out['seconds']} s"
    return f"{name}: {host_name} is back: protected again after {out['seconds']} s (primary {out['primary']}, " \
           f"secondary {out['secondary']})"


def _site_maintenance(site_file: Path | None, host_name: str, on: bool, timeout: float, as_json: bool) -> None:
    """HOST in or out of maintenance for every FT server of the site, one after the other."""
    site = load_site(site_file)
    check_host(site, host_name, "host maintenance")
    me = local_host(site)
    results: dict[str, dict[str, Any]] = {}
    for name in server_names(site):
        try:
            pair = site_pair(site, name, me)
            answering(pair)
            results[name] = PairClient(pair, pair.hosts, say(as_json)).maintenance(host_name, on, timeout)
        except CoserverError as exc:
            results[name] = {"ok": False, "error": " ".join(str(exc).split())}
        if not as_json:
            click.echo(_maintenance_line(name, host_name, on, results[name]))
    failed = sorted(n for n, r in results.items() if not r.get("ok"))
    if as_json:
        click.echo(json.dumps({"ok": not failed, "host": host_name, "maintenance": on, "servers": results}))
    elif not results:
        click.echo(f"site {site.name}: no FT servers in {site.servers_dir}")
    if failed:
        raise PairError(f"host maintenance {'on' if on else 'off'} {host_name}: failed for "
                        f"{len(failed)} of {len(results)} FT servers ({', '.join(failed)})")


@host.command("maintenance")
@click.argument("mode", type=click.Choice(["on", "off"]))
@click.argument("host_arg", metavar="HOST", required=False)
@click.option("--host", "host_opt", default=None, metavar="HOST", help="The CoServer (the lab's form).")
@site_option
@lab_prefix_option
@timeout_option
@json_option
@one_line_errors
def host_maintenance(mode: str, host_arg: str | None, host_opt: str | None, site_file: Path | None,
                     prefix: str | None, timeout: float, as_json: bool) -> None:
    """Take CoServer HOST out of the pair(s) on purpose (on), or bring it back and re-protect (off).

    On a site: every FT server of the site, one line each."""
    if host_arg is not None and host_opt is not None and host_arg != host_opt:
        raise PairError(f"host maintenance: HOST {host_arg} and --host {host_opt} differ")
    name = host_arg or host_opt
    if name is None:
        raise click.UsageError("name the CoServer: coserver host maintenance on|off HOST")
    on = mode == "on"
    if use_site(prefix, None, site_file):
        _site_maintenance(site_file, name, on, timeout, as_json)
        return
    if name not in HOSTS:
        raise LabError(f"host maintenance: {name} is not a lab host ({', '.join(HOSTS)})")
    out = lab_pair(prefix or DEFAULT_PREFIX, as_json).maintenance(name, on, timeout)
    if on:
        click.echo(json.dumps(out) if as_json else f"{name} is in maintenance; {out['primary']} runs the guest "
                                                   f"({out['state']}) after {out['seconds']} s")
        return
    click.echo(json.dumps(out) if as_json else f"{name} is back: protected again after {out['seconds']} s "
                                               f"(primary {out['primary']}, secondary {out['secondary']})")
