"""`coserver status [--json]`: the FT server's state machine and roles, as the controllers report them.

On the lab it is `coserver lab status` (by --prefix); with --socket it asks one
controller directly (a real CoServer: the socket named in its config).
"""

from __future__ import annotations

import json

import click

from coserver.cli.lab import print_status
from coserver.controller import control
from coserver.lab.lab import DEFAULT_PREFIX, Lab


@click.command()
@click.option("--prefix", default=DEFAULT_PREFIX, show_default=True, help="The lab whose FT server to show.")
@click.option("--socket", "socket_path", default=None, metavar="PATH",
              help="Ask this controller's control socket instead (a real CoServer).")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def status(prefix: str, socket_path: str | None, as_json: bool) -> None:
    """Show the FT server: state, primary/secondary, checkpoints, each host's controller view."""
    if socket_path:
        reply = control.ask(socket_path, {"cmd": control.Command.STATUS})["status"]
        click.echo(json.dumps(reply, indent=2) if as_json else
                   f"{reply['host']}: {reply['state']} as {reply['role']} (epoch {reply['epoch']}), "
                   f"checkpoints {reply['checkpoints']}, qemu {reply['qemu_health']}")
        return
    st = Lab(prefix).status()
    if as_json:
        click.echo(json.dumps(st, indent=2))
    else:
        print_status(st)



