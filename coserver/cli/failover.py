"""`coserver failover [--to HOST]`: an operator's manual failover of a protected FT server.

The primary's controller stops its side (as if its QEMU had died) and releases
the witness; the secondary's controller then promotes itself through the same
path as an automatic failover. Refused unless the pair is protected: a manual
failover must never stop the only copy (pair.client.PairClient.failover).
"""

from __future__ import annotations

import json

import click

from coserver.lab.lab import DEFAULT_PREFIX, HOSTS, Lab
from coserver.pair.client import PairClient


@click.command()
@click.option("--to", "target", type=click.Choice(list(HOSTS)), default=None,
              help="The CoServer that should run the guest afterwards (default: the secondary).")
@click.option("--prefix", default=DEFAULT_PREFIX, show_default=True, help="The lab whose FT server to fail over.")
@click.option("--timeout", type=float, default=30.0, show_default=True, help="Seconds to wait for the takeover.")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
def failover(target: str | None, prefix: str, timeout: float, as_json: bool) -> None:
    """Move the FT server to the other CoServer now (manual failover)."""
    out = PairClient(Lab(prefix), HOSTS).failover(target, timeout)
    click.echo(json.dumps(out) if as_json else f"failover {out['from']} -> {out['to']} done in "
                                               f"{out['seconds']:.2f} s (now {out['state']})")
