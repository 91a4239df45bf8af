"""`coserver web [--listen ADDR:PORT] [--prefix P | --site FILE]`: serve the read-only status page.

The page (pair.web) draws what `coserver status` reads: every FT server's pair, both controllers
asked (cli.target's rule: the site if this machine has a site file or --site, else the lab).
It binds only to --listen (default 127.0.0.1:8480, this machine): to show it elsewhere, listen
on the management address, or reach it through an SSH tunnel.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from coserver.cli.target import (
    lab_prefix_option,
    local_host,
    one_line_errors,
    server_names,
    site_option,
    site_pair,
    use_site,
)
from coserver.lab.lab import DEFAULT_PREFIX, Lab
from coserver.pair.web import DEFAULT_LISTEN, Source, make_server, parse_listen
from coserver.site import load_site


def site_source(site_file: Path | None) -> Source:
    """Every FT server of the site, both controllers asked (the site file read once, now)."""
    site = load_site(site_file)
    me = local_host(site)

    def source() -> Mapping[str, Mapping[str, Any]]:
        return {n: site_pair(site, n, me).status() for n in server_names(site)}

    return source


def lab_source(prefix: str | None) -> Source:
    """Every FT server of the lab at `prefix` (none while the lab is down)."""
    lab = Lab(prefix or DEFAULT_PREFIX)

    def source() -> Mapping[str, Mapping[str, Any]]:
        return {n: lab.status(n) for n in lab.servers()}

    return source


@click.command()
@click.option("--listen", default=DEFAULT_LISTEN, show_default=True, metavar="ADDR:PORT",
              help="Where to serve the page ([ADDR]:PORT for IPv6); only this address is bound.")
@site_option
@lab_prefix_option
@one_line_errors
def web(listen: str, site_file: Path | None, prefix: str | None) -> None:
    """Serve a read-only status page: both CoServers, links, witness, each FT server's roles, last events."""
    address = parse_listen(listen)   # bad input first, before a site file or lab is read
    source = site_source(site_file) if use_site(prefix, None, site_file) else lab_source(prefix)
    server = make_server(address, source)
    click.echo(f"coserver web: serving the status page on {server.url} (Ctrl-C stops)", err=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
