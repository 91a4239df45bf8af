"""`coserver pair reprotect|switchover` and `coserver host maintenance on|off`: the pair heals itself.

    coserver pair reprotect [--prefix P]        re-protect now (needed with --reprotect manual)
    coserver pair switchover [--prefix P]       move the primary role to the other CoServer, planned
    coserver host maintenance on|off --host H   take H out of the pair on purpose / bring it back

Each waits until the pair is protected again (or H is out) and prints how long
each phase took; progress of a disk re-sync is shown while it runs. The work is
pair.client.PairClient's; the lab (--prefix) is the site it talks to.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import click

from coserver.lab.lab import DEFAULT_PREFIX, HOSTS, Lab
from coserver.pair.client import PairClient

prefix_option = click.option("--prefix", default=DEFAULT_PREFIX, show_default=True, help="The lab's prefix.")
timeout_option = click.option("--timeout", type=float, default=300.0, show_default=True,
                              help="Seconds to wait for the pair to be protected again.")
json_option = click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
F = TypeVar("F", bound=Callable[..., Any])


def pair_options(command: F) -> F:
    """--prefix, --timeout and --json: what every command here takes."""
    return prefix_option(timeout_option(json_option(command)))


def _say(as_json: bool) -> Callable[[str], None]:
    return (lambda m: None) if as_json else (lambda m: click.echo(f"  .. {m}", err=True))


def lab_pair(prefix: str, as_json: bool) -> PairClient:
    """The pair client for the lab at `prefix`."""
    return PairClient(Lab(prefix), HOSTS, _say(as_json))


@click.group()
def pair() -> None:
    """The pair as a whole: re-protection and planned switchover."""


@pair.command("reprotect")
@pair_options
def pair_reprotect(prefix: str, timeout: float, as_json: bool) -> None:
    """Bring the failed CoServer back as the secondary and re-enter COLO."""
    out = lab_pair(prefix, as_json).reprotect(timeout)
    click.echo(json.dumps(out) if as_json else f"protected again in {out['seconds']} s: primary {out['primary']}, "
                                               f"secondary {out['secondary']}")


@pair.command("switchover")
@pair_options
def pair_switchover(prefix: str, timeout: float, as_json: bool) -> None:
    """Move the primary role to the other CoServer on purpose (planned maintenance)."""
    out = lab_pair(prefix, as_json).switchover(timeout)
    click.echo(json.dumps(out) if as_json else
               f"switchover {out['from']} -> {out['to']}: took over in {out['takeover_s']} s, protected again "
               f"(secondary {out['secondary']}) after {out['protected_s']} s")


@click.group()
def host() -> None:
    """One CoServer: maintenance mode."""


@host.command("maintenance")
@click.argument("mode", type=click.Choice(["on", "off"]))
@click.option("--host", "name", type=click.Choice(list(HOSTS)), required=True, help="The CoServer.")
@pair_options
def host_maintenance(mode: str, name: str, prefix: str, timeout: float, as_json: bool) -> None:
    """Take a CoServer out of the pair on purpose (on), or bring it back and re-protect (off)."""
    out = lab_pair(prefix, as_json).maintenance(name, mode == "on", timeout)
    if mode == "on":
        click.echo(json.dumps(out) if as_json else f"{name} is in maintenance; {out['primary']} runs the guest "
                                                   f"({out['state']}) after {out['seconds']} s")
        return
    click.echo(json.dumps(out) if as_json else f"{name} is back: protected again after {out['seconds']} s "
                                               f"(primary {out['primary']}, secondary {out['secondary']})")
