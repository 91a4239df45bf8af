"""Which pair an operator command means: the site's FT server NAME, or the lab (--prefix).

    --prefix P given                      -> the lab P (the lab's forms, as before)
    else NAME or --site given, or a site
    file at $COSERVER_SITE or
    /etc/coserver/site.toml               -> the site: FT server NAME's two controllers
    else                                  -> the lab at the default prefix (a development machine)

On a site, this host's controller is asked on its unix socket and the peer's over the
management network (pair.site.SitePair, controller.remote). Which CoServer this machine is
comes from its addresses (site.local.this_host); a machine that is neither asks both over
the management network.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from coserver.errors import CoserverError
from coserver.lab.lab import DEFAULT_PREFIX, HOSTS, Lab, LabError, LabServer
from coserver.pair.client import PairClient, PairError, Say
from coserver.pair.site import SitePair
from coserver.site import load_site, site_path
from coserver.site.errors import SiteError
from coserver.site.local import this_host
from coserver.site.model import Site
from coserver.site.servers import find_server, spec_names

site_option = click.option("--site", "site_file", type=click.Path(path_type=Path), default=None,
                           help="The site file (default: $COSERVER_SITE, else /etc/coserver/site.toml).")
lab_prefix_option = click.option(
    "--prefix", default=None, metavar="P",
    help=f"The lab P instead of the site (default: the site if this machine has a site file, else lab "
         f"{DEFAULT_PREFIX!r}).")


def one_line_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """CoserverError and OS errors -> `coserver: error: <one line>`, exit 1 (also outside `coserver`)."""

    @functools.wraps(fn)
    def inner(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except CoserverError as exc:
            message = " ".join(str(exc).split())
        except BrokenPipeError:
            raise
        except OSError as exc:
            message = " ".join(str(exc).split())
        click.echo(f"coserver: error: {message}", err=True)
        click.get_current_context().exit(1)

    return inner


def say(as_json: bool) -> Say:
    """Progress lines on stderr (none with --json)."""
    return (lambda m: None) if as_json else (lambda m: click.echo(f"  .. {m}", err=True))


def lab_client(prefix: str | None, name: str | None, as_json: bool) -> PairClient:
    """The pair client of FT server NAME (default: the lab's first) of the lab at `prefix` (the
    default lab if None); a name the lab does not run is one line listing what it runs."""
    lab = Lab(prefix or DEFAULT_PREFIX)
    servers = lab.servers()
    if name is not None and servers and name not in servers:
        raise LabError(f"no FT server {name!r} on lab {lab.prefix!r} (it runs {', '.join(servers)})")
    if name is None and servers:
        name = servers[0]
    return PairClient(LabServer(lab, name) if name else lab, HOSTS, say(as_json))


def use_site(prefix: str | None, name: str | None, site_file: Path | None) -> bool:
    """True: the command means a site's FT server; False: the lab (at `prefix` or the default)."""
    if prefix is not None:
        if site_file is not None:
            raise SiteError("--prefix (a lab) and --site (a site file) do not go together")
        return False
    return name is not None or site_file is not None or site_path().exists()


def local_host(site: Site) -> str | None:
    """The CoServer this machine is, or None (neither, or `ip` cannot tell): then both are remote."""
    try:
        return this_host(site)
    except SiteError:
        return None


def server_names(site: Site) -> list[str]:
    """The site's FT servers, by name."""
    return sorted(spec_names(site))


def site_pair(site: Site, name: str, me: str | None) -> SitePair:
    """FT server `name` of `site` seen from CoServer `me` (an unknown name is one line listing the servers)."""
    find_server(site, name)
    return SitePair(site, name, me)


def need_name(name: str | None, site: Site, command: str) -> str:
    """The FT server an action on the site needs: NAME, else one line listing the choices."""
    if name is None:
        raise SiteError(f"{command}: name the FT server: coserver {command} NAME "
                        f"(servers of site {site.name}: {', '.join(server_names(site)) or 'none'})")
    return name


def check_host(site: Site, host: str | None, what: str) -> None:
    """A CoServer named on the command line is one of the site's."""
    if host is not None and host not in site.hosts:
        raise SiteError(f"{what} {host}: not a CoServer of site {site.name} ({', '.join(site.hosts)})")


def answering(pair: SitePair) -> dict[str, Any]:
    """The pair's status, once both controllers answered; else the first one's error as one line.

    An action (failover, switchover, reprotect, maintenance) needs both controllers' word:
    a peer that does not answer would otherwise show up as "not protected" with its cause hidden."""
    st = pair.status()
    for host in pair.hosts:
        error = st["hosts"][host].get("error")
        if error:
            raise PairError(f"cannot reach the controller of {error}")
    return st


def pair_client(name: str | None, site_file: Path | None, prefix: str | None, as_json: bool,
                command: str) -> PairClient:
    """FT server NAME's pair client: the site's (both controllers answering) or the lab's (use_site
    decides); `command` names the operator command in a missing-NAME message."""
    if use_site(prefix, name, site_file):
        return site_client(site_file, name, command, say(as_json))[2]
    return lab_client(prefix, name, as_json)


def site_client(site_file: Path | None, name: str | None, command: str,
                say: Say) -> tuple[Site, SitePair, PairClient]:
    """The site, FT server NAME's pair (both controllers answering) and a pair client for it."""
    site = load_site(site_file)
    pair = site_pair(site, need_name(name, site, command), local_host(site))
    answering(pair)
    return site, pair, PairClient(pair, pair.hosts, say)
