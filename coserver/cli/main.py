"""The `coserver` command line (click).

Every CoserverError becomes one line on stderr and exit status 1; click's own
usage errors keep exit status 2. No traceback reaches an operator for an error
they can act on.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from coserver import __version__, log
from coserver.errors import CoserverError


class OneLineErrors(click.Group):
    """A click group that turns CoserverError into `coserver: error: <one line>`."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CoserverError as exc:
            click.echo(f"coserver: error: {exc}", err=True)
            ctx.exit(1)


@click.group(cls=OneLineErrors)
@click.version_option(__version__, prog_name="coserver")
@click.option("-v", "--verbose", count=True, help="Log more to stderr (-v info, -vv debug).")
def main(verbose: int) -> None:
    """coserver: fault-tolerant virtual servers on two Linux hosts (QEMU COLO)."""
    log.configure(("WARNING", "INFO", "DEBUG")[min(verbose, 2)])


def _register() -> None:
    from coserver.cli.doctor import doctor, qemu
    from coserver.cli.failover import failover
    from coserver.cli.hardware import hardware
    from coserver.cli.image import image
    from coserver.cli.lab import lab
    from coserver.cli.libvirt import libvirt_group
    from coserver.cli.pair import host, pair, reprotect, switchover
    from coserver.cli.server import server
    from coserver.cli.site import site
    from coserver.cli.status import status
    from coserver.cli.vagrant import vagrant_group
    from coserver.cli.web import web

    for command in (doctor, qemu, hardware, image, lab, failover, switchover, reprotect, pair, host, server, site,
                    status, web, libvirt_group, vagrant_group):
        main.add_command(command)
    from coserver.cli.bench import bench  # the benchmarks sit above the controller: registered here, last
    main.add_command(bench)


_register()

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
