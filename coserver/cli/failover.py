"""`coserver failover NAME [--to HOST]`: an operator's manual failover of a protected FT server.

The primary's controller stops its side (as if its QEMU had died) and releases
the witness; the secondary's controller then promotes itself through the same
path as an automatic failover. Refused unless the pair is protected: a manual
failover must never stop the only copy (pair.client.PairClient.failover).

On a site (cli.target) it runs on either CoServer: the primary's controller is asked
wherever it is. The lab's form stays: `coserver failover --prefix P [--to HOST]`.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from coserver.cli.target import (
    check_host,
    lab_client,
    lab_prefix_option,
    one_line_errors,
    say,
    site_client,
    site_option,
    use_site,
)
from coserver.lab.lab import HOSTS, LabError


@click.command()
@click.argument("name", required=False)
@click.option("--to", "target", default=None, metavar="HOST",
              help="The CoServer that should run the guest afterwards (default: the secondary).")
@site_option
@lab_prefix_option
@click.option("--timeout", type=float, default=30.0, show_default=True, help="Seconds to wait for the takeover.")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
@one_line_errors
def failover(name: str | None, target: str | None, site_file: Path | None, prefix: str | None, timeout: float,
             as_json: bool) -> None:
    """Move FT server NAME to the other CoServer now (manual failover)."""
    if use_site(prefix, name, site_file):
        site, _, client = site_client(site_file, name, "failover", say(as_json))
        check_host(site, target, "failover --to")
    else:
        if target is not None and target not in HOSTS:
            raise LabError(f"failover --to {target}: not a lab host ({', '.join(HOSTS)})")
        client = lab_client(prefix, name, as_json)
    out = client.failover(target, timeout)
    click.echo(json.dumps(out) if as_json else f"{name + ': ' if name else ''}failover {out['from']} -> "
                                               f"{out['to']} done in {out['seconds']:.2f} s (now {out['state']})")
