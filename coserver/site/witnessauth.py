"""Who may touch which witness keys: one etcd key prefix per site, one role per site, one user per CoServer.

The witness (etcd) arbitrates every site that uses it, so each site's keys live under their own
prefix and only that site's CoServers may change them::

    /coserver/<site>/<ft>/owner, /coserver/<site>/<ft>/epoch    (coserver.controller.witness)
    role  coserver-<site>      readwrite on the prefix /coserver/<site>/
    user  <CoServer name>      granted that role; etcd started with --client-cert-auth takes the user
                               name from the client certificate's CN, which `coserver site certs`
                               sets to the host's name (coserver.site.pki)
                               (so sites sharing an etcd need CoServer names unique across them)
    user  root                 etcd's administrator (needed before `auth enable`); with client
                               certificates it too is a CN: `coserver site certs --user root`

This module only names things and lists the etcdctl commands (without their connection flags);
the lab runs them (coserver.lab.witness) and an operator runs the same ones by hand (README
"The witness over TLS").
"""

from __future__ import annotations

from collections.abc import Iterable

#: Every coserver key in etcd starts here.
KEY_ROOT = "/coserver"
#: etcd's administrator: the user whose certificate sets up roles and users, and enables auth.
ADMIN_USER = "root"


def key_prefix(site: str) -> str:
    """The etcd key prefix a site's witness keys live under (with the trailing '/': a site called
    "a" must not match the keys of a site called "ab")."""
    if not site or "/" in site:
        raise ValueError(f"a site name must be non-empty without '/', got {site!r}")
    return f"{KEY_ROOT}/{site}/"


def role_name(site: str) -> str:
    """The etcd role that may read and write the site's prefix."""
    return f"coserver-{site}"


def admin_commands() -> list[list[str]]:
    """Once per etcd cluster, before enable_command(): the root user (no password: its certificate's
    CN is its name) with etcd's built-in root role."""
    return [["user", "add", ADMIN_USER, "--no-password"],
            ["user", "grant-role", ADMIN_USER, ADMIN_USER]]


def site_commands(site: str, users: Iterable[str]) -> list[list[str]]:
    """Per site: its role on its prefix, and each CoServer (user = the certificate's CN) granted it."""
    role = role_name(site)
    out = [["role", "add", role],
           ["role", "grant-permission", "--prefix", role, "readwrite", key_prefix(site)]]
    for user in users:
        out += [["user", "add", user, "--no-password"], ["user", "grant-role", user, role]]
    return out


def enable_command() -> list[str]:
    """From now on etcd checks every request against the users' roles."""
    return ["auth", "enable"]
