"""`coserver site ...`: the site file of a pair of CoServers (coserver.site).

    coserver site keygen [--site FILE] [--force | --rotate]
    coserver site certs [--site FILE] [--dir DIR] [--days N] [--force | --rotate-ca] [--user NAME]
    coserver site show [--site FILE] [--json]
    coserver site check [--site FILE] [--host NAME] [--json]

The site file is --site FILE, else $COSERVER_SITE, else /etc/coserver/site.toml. Bad input (no
such file, bad TOML, an unknown key...) is one line ``coserver: error: ...`` and exit status 1,
never a traceback. `check` prints ``ok|FAIL name detail`` per check (--json: {"result", "host",
"checks": [{"name", "ok", "detail"}]}) and exits 0 only if every check passes.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import click

from coserver.cli.target import one_line_errors
from coserver.errors import CoserverError
from coserver.site import load_site
from coserver.site.keygen import write_key
from coserver.site.local import this_host
from coserver.site.model import Site
from coserver.site.servers import load_server_ports

_SITE = click.option("--site", "site_file", type=click.Path(path_type=Path), default=None,
                     help="The site file (default: $COSERVER_SITE, else /etc/coserver/site.toml).")


def site_dict(site: Site) -> dict[str, Any]:
    """The parsed site as plain JSON values."""
    out: dict[str, Any] = json.loads(json.dumps(dataclasses.asdict(site), default=str))
    return out


@click.group("site")
def site() -> None:
    """The site file: the two CoServers, their links, the witness and the FT servers."""


@site.command("keygen")
@_SITE
@click.option("--force", is_flag=True, help="Replace an existing key (then copy it to the peer again).")
@click.option("--rotate", is_flag=True, help="Add a new current key, keeping the current one accepted as the "
                                             "previous (the oldest is dropped); then copy it to the peer.")
@one_line_errors
def keygen(site_file: Path | None, force: bool, rotate: bool) -> None:
    """Write the pair's heartbeat key (the site's key_file, 0600); copy it to the other CoServer."""
    if force and rotate:
        raise CoserverError("--force and --rotate exclude each other: --rotate keeps the current key accepted")
    s = load_site(site_file)
    path = write_key(s.key_file, force=force, rotate=rotate)
    try:
        peer = s.peer_of(this_host(s)).management
    except CoserverError:   # not run on one of the two hosts: name neither
        peer = "<the other CoServer>"
    what = "added a new current key to" if rotate else "wrote"
    click.echo(f"{what} {path} (mode 0600); copy it to the other CoServer keeping its mode, "
               f"e.g. scp -p {path} {peer}:{path}")
    if rotate:
        click.echo("the previous key stays accepted: restart the controllers on both hosts (either order); "
                   "run --rotate again only after both run the new key (a third key drops the oldest)")


@site.command("certs")
@_SITE
@click.option("--dir", "pki_dir", type=click.Path(path_type=Path), default=None,
              help="Where the CA and each host's directory go (default: the site's pki_dir, /etc/coserver/pki).")
@click.option("--days", type=int, default=None, help="Host certificates' validity in days (default 825).")
@click.option("--force", is_flag=True, help="Issue every host's files again from the same CA (and end a CA rotation).")
@click.option("--rotate-ca", is_flag=True, help="Make a new CA, issue every host's files from it; each host "
                                                "trusts the old and the new CA until the next --force.")
@click.option("--user", default=None, metavar="NAME",
              help="Only a client certificate with CN=NAME from the existing CA, in <dir>/user.NAME/: an etcd user "
                   "(root, who sets up the witness's roles: README \"The witness over TLS\").")
@one_line_errors
def certs(site_file: Path | None, pki_dir: Path | None, days: int | None, force: bool, rotate_ca: bool,
          user: str | None) -> None:
    """Make the site's TLS files: a CA and, for each CoServer and witness member, a certificate
    (serverAuth + clientAuth, its addresses as SANs, CN its name: the CoServer's etcd user) laid out
    as QEMU's tls-creds-x509 reads them; or (--user) one etcd user's client certificate."""
    from coserver.site import pki  # cryptography only when certificates are made

    if force and rotate_ca:
        raise CoserverError("--force and --rotate-ca exclude each other")
    s = load_site(site_file)
    base = pki_dir if pki_dir is not None else s.pki_dir
    if user is not None:
        if rotate_ca:
            raise CoserverError("--user issues from the existing CA: --rotate-ca goes without it")
        d = pki.issue_user_cert(base, user, force=force, days=days if days is not None else pki.DEFAULT_DAYS)
        click.echo(f"wrote {d}/: client-cert.pem (CN={user}), client-key.pem (mode 0600), ca-cert.pem; "
                   f"etcdctl --cacert {d}/ca-cert.pem --cert {d}/client-cert.pem --key {d}/client-key.pem ...")
        return
    written = pki.make_site_certs(s, base, force=force, rotate_ca=rotate_ca,
                                  days=days if days is not None else pki.DEFAULT_DAYS)
    hosts = [e.name for e in pki.endpoints(s)]
    click.echo(f"wrote {len(written)} files under {base} (keys mode 0600): "
               f"{'a new CA, ' if rotate_ca else ''}{', '.join(hosts)}")
    click.echo(f"copy each host's directory to it keeping modes, e.g. scp -rp {base}/<host> <host>:{base}/; "
               f"{base}/{pki.CA_DIR}/{pki.CA_KEY} stays here")
    if rotate_ca:
        click.echo("each host trusts both CAs now: once every host runs its new files, "
                   "run `coserver site certs --force` to trust the new CA alone, and copy again")


@site.command("show")
@_SITE
@click.option("--json", "as_json", is_flag=True, help="The parsed site and each server's ports as JSON.")
@one_line_errors
def show(site_file: Path | None, as_json: bool) -> None:
    """Show the parsed site file and each FT server's ports."""
    s = load_site(site_file)
    servers: dict[str, Any] = {}
    error = None
    try:
        specs, ports = load_server_ports(s)
        servers = {n: {"file": str(specs[n].file), "ports": ports[n].as_dict()} for n in sorted(specs)}
    except CoserverError as exc:
        error = str(exc)
    if as_json:
        click.echo(json.dumps({"site": site_dict(s), "servers": servers, "servers_error": error}, indent=2))
        return
    click.echo(f"site {s.name} ({s.file}); preferred {s.preferred}; reprotect {s.reprotect}, "
               f"checkpoint {s.checkpoint_ms} ms")
    for cs in s.coservers.values():
        click.echo(f"  {cs.name}: management {cs.management}, replication {cs.replication}, bridge {cs.bridge}")
        for i, ln in enumerate(cs.links, 1):
            click.echo(f"    link{i}: {ln.device} {ln.local}/{ln.prefix} -> peer {ln.peer}")
    tls = (f"TLS, certificate {s.witness.cert}" if s.witness.cert else
           "insecure: no TLS, no authentication" if s.witness.insecure else "no TLS: `site check` refuses it")
    click.echo(f"  witness: {', '.join(s.witness.endpoints)} ({tls})")
    click.echo(f"  servers_dir {s.servers_dir}, state_dir {s.state_dir}, run_dir {s.run_dir}, "
               f"key_file {s.key_file}, base_port {s.base_port}")
    if error:
        click.echo(f"  servers: {error}")
    for name, srv in servers.items():
        p = srv["ports"]
        click.echo(f"  server {name} ({srv['file']}): slot {p['slot']}{' (pinned)' if p['pinned'] else ''}, "
                   f"mirror {p['mirror']}, compare {p['compare']}, migration {p['migration']}, "
                   f"nbd {p['nbd']}, heartbeat {p['heartbeat']}, control {p['control']}")


@site.command("check")
@_SITE
@click.option("--host", default=None, help="This CoServer's name (default: found by its addresses).")
@click.option("--json", "as_json", is_flag=True, help='{"result", "host", "checks": [{"name", "ok", "detail"}]}')
@one_line_errors
def check(site_file: Path | None, host: str | None, as_json: bool) -> None:
    """Check the site file against this host and, through its running controllers, the peer; exit 0
    only if no check fails (checks that cannot run yet say "skip")."""
    from coserver.doctor.sitecheck import run_checks  # the doctor's imports only when checking

    s = load_site(site_file)
    if host is not None:
        s.coserver(host)   # a name that is not one of the two is bad input, not a failed check
    me, checks = run_checks(s, host)
    passed = all(c.ok for c in checks)
    if as_json:
        click.echo(json.dumps({"result": "PASS" if passed else "FAIL", "host": me,
                               "checks": [c.as_dict() for c in checks]}, indent=2))
    else:
        for c in checks:
            click.echo(c.line())
        skipped = [c.name for c in checks if c.skipped]
        click.echo(f"{'PASS' if passed else 'FAIL'}: site {s.name} on {me or 'an unknown host'}"
                   + (f" ({', '.join(skipped)} not checked yet)" if skipped else ""))
    if not passed:
        click.get_current_context().exit(1)
