"""`coserver status [NAME] [--json]`: the FT servers' states and roles, as their controllers report them.

On a site (cli.target says when): NAME's pair, asked of this host's controller (unix socket)
and the peer's (management network); without NAME every FT server of the site. --json prints
one server's summary (the lab's shape: state, primary, secondary, checkpoints, alert, hosts)
for NAME, and {name: summary} for all. A controller that does not answer is in
hosts[host].error: the summary is still printed, each such line is also on stderr, and the
exit status is 1.

Each summary also lists its components (pair.components: each CoServer, sync link, the witness,
the FT server, each host's copy and disk; Good / Degraded / Failed / Offline with a reason), under
"components" in --json. --check prints one line and exits 2 when any of them is not Good, else 0
(for a monitoring probe or a script).

The lab's form stays: `coserver status --prefix P [--json]`. With --socket it asks one
controller directly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from coserver.cli.lab import print_status
from coserver.cli.target import (
    lab_prefix_option,
    local_host,
    one_line_errors,
    server_names,
    site_option,
    site_pair,
    use_site,
)
from coserver.controller import control
from coserver.lab.lab import DEFAULT_PREFIX, Lab, LabError
from coserver.pair.components import Component, components
from coserver.site import load_site

#: --check's exit status when a component is not Good (1 stays "a controller did not answer").
EXIT_NOT_GOOD = 2


def print_components(parts: list[Component]) -> None:
    """The components, one per line, the ones not Good marked."""
    for p in parts:
        mark = "  " if p.health.value == "good" else "! "
        click.echo(f"  {mark}{p.kind:<8} {p.name:<16} {p.health.value.upper():<8} {p.reason}")


def check(pairs: dict[str, dict[str, Any]]) -> None:
    """--check: one line; exit 2 when any component of any server is not Good."""
    parts = [p for st in pairs.values() for p in st.get("components") or []]
    bad = [p for p in parts if p.get("health") != "good"]
    if bad:
        first = bad[0]
        click.echo(f"coserver: {len(bad)} of {len(parts)} components not good; first: {first['kind']} "
                   f"{first['name']}: {first['health'].upper()}: {first['reason']}", err=True)
        click.get_current_context().exit(EXIT_NOT_GOOD)
    click.echo(f"ok: all {len(parts)} components good")


def with_components(st: dict[str, Any]) -> tuple[dict[str, Any], list[Component]]:
    """The summary with its "components" added (every other field as it was)."""
    parts = components(st)
    return {**st, "components": [p.as_json() for p in parts]}, parts


def print_site_status(st: dict[str, Any]) -> None:
    """One FT server of a site, for people."""
    click.echo(f"{st['ftserver']}: {st['state'].upper()}   primary={st['primary'] or '-'} "
               f"secondary={st['secondary'] or '-'} checkpoints={st['checkpoints']}"
               + (f"  ALERT: {st['alert']}" if st.get("alert") else ""))
    for host, h in sorted(st["hosts"].items()):
        sync = h.get("sync")
        if sync and not sync.get("finished"):
            click.echo(f"  {host} syncing: {sync['percent']:5.1f}%  {sync['rate_mib_s'] or '-'} MiB/s  "
                       f"ETA {sync['eta_s'] if sync['eta_s'] is not None else '-'} s")
        if "error" in h:
            click.echo(f"  {host:<6} NO ANSWER  {h['error']}")
            continue
        desired = h.get("desired") or {}
        click.echo(f"  {host:<6} role={h.get('role')} state={h.get('state')} epoch={h.get('epoch')} "
                   f"qemu={h.get('qemu_health')} wants={'run' if desired.get('run') else 'stop'} "
                   f"maintenance={(h.get('reprotect') or {}).get('maintenance')}  via {h.get('via')}")


@click.command()
@click.argument("name", required=False)
@site_option
@lab_prefix_option
@click.option("--socket", "socket_path", default=None, metavar="PATH",
              help="Ask this controller's control socket instead.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON (all servers: {name: status}).")
@click.option("--check", "check_only", is_flag=True,
              help="Print one line; exit 2 if any component (host, link, witness, copy, disk) is not good.")
@one_line_errors
def status(name: str | None, site_file: Path | None, prefix: str | None, socket_path: str | None,
           as_json: bool, check_only: bool) -> None:
    """Show FT server NAME (default: every one of the site): state, primary/secondary, each controller's view."""
    if socket_path:
        reply = control.ask(socket_path, {"cmd": control.Command.STATUS})["status"]
        click.echo(json.dumps(reply, indent=2) if as_json else
                   f"{reply['host']}: {reply['state']} as {reply['role']} (epoch {reply['epoch']}), "
                   f"checkpoints {reply['checkpoints']}, qemu {reply['qemu_health']}")
        return
    if not use_site(prefix, name, site_file):
        st = Lab(prefix or DEFAULT_PREFIX).status()
        if name is not None and st.get("ftserver") not in (None, name):
            raise LabError(f"no FT server {name!r} on lab {prefix or DEFAULT_PREFIX!r} (it runs {st['ftserver']!r})")
        st, parts = with_components(st)
        if check_only:
            check({str(st.get("ftserver")): st})
        elif as_json:
            click.echo(json.dumps(st, indent=2))
        else:
            print_status(st)
            print_components(parts)
        return
    site = load_site(site_file)
    me = local_host(site)
    if name is not None:
        pairs = {name: site_pair(site, name, me).status()}
    else:
        pairs = {n: site_pair(site, n, me).status() for n in server_names(site)}
    shown = {n: with_components(st) for n, st in pairs.items()}
    pairs = {n: st for n, (st, _) in shown.items()}
    if check_only:
        check(pairs)
        return
    if as_json:
        click.echo(json.dumps(pairs[name] if name is not None else pairs, indent=2))
    else:
        if not pairs:
            click.echo(f"site {site.name}: no FT servers in {site.servers_dir}")
        for st, parts in shown.values():
            print_site_status(st)
            print_components(parts)
    errors = [h["error"] for st in pairs.values() for h in st["hosts"].values() if h.get("error")]
    for error in errors:
        click.echo(f"coserver: error: no answer from the controller of {error}", err=True)
    if errors:
        click.get_current_context().exit(1)
