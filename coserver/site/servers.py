"""The FT servers of a site: one spec per file in servers_dir, checked against each other and the site.

Specs are the existing FT server spec format (coserver.hardware.spec). Beyond each spec's own
checks, servers sharing a pair must not share a name (their controllers, sockets and witness
keys are named after it), a MAC (two guests answering for one MAC on the client LAN) or port
slots, and each must be protected by this site's two CoServers. Each error is one line naming
both files when two are involved.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from coserver.hardware.errors import SpecError
from coserver.hardware.spec import FTServerSpec, load_spec
from coserver.site.errors import SiteError
from coserver.site.model import Site
from coserver.site.ports import ServerPorts, allocate


def spec_files(site: Site) -> list[Path]:
    """The *.toml files in servers_dir, sorted; a missing directory is one line."""
    d = site.servers_dir
    if not d.is_dir():
        raise SiteError(f"site {site.file}: key servers_dir: no such directory {d}")
    return sorted(p for p in d.glob("*.toml") if p.is_file())


def check_spec_hosts(site: Site, spec: FTServerSpec) -> None:
    """A server must be protected by exactly this site's two CoServers."""
    if set(spec.coservers) != set(site.hosts):
        raise SiteError(f"spec {spec.file}: key coservers: {', '.join(spec.coservers)} are not "
                        f"this site's CoServers ({', '.join(site.hosts)}, site {site.file})")


def check_unique_macs(site: Site, spec: FTServerSpec) -> None:
    """No other server of the site answers for one of `spec`'s MACs (two guests, one MAC on the LAN).

    What a controller starting for one server checks: other specs that do not load are skipped
    here (their own controllers and `coserver site check` report them), so a typo in one server
    never stops another."""
    mine = {nic.mac: i for i, nic in enumerate(spec.nics)}
    if not site.servers_dir.is_dir():   # no other servers (a spec given by path)
        return
    for path in spec_files(site):
        if path.resolve() == Path(spec.file).resolve():
            continue
        try:
            other = load_spec(path)
        except SpecError:
            continue
        if other.name == spec.name:
            continue
        for nic in other.nics:
            if nic.mac in mine:
                raise SiteError(f"spec {spec.file}: key nics[{mine[nic.mac]}].mac: {nic.mac} is also a NIC of "
                                f"{other.name!r} in {other.file}: each guest NIC needs its own MAC")


def load_servers(site: Site) -> dict[str, FTServerSpec]:
    """Every server spec in servers_dir, by name, checked against each other and the site."""
    out: dict[str, FTServerSpec] = {}
    macs: dict[str, FTServerSpec] = {}
    for path in spec_files(site):
        try:
            spec = load_spec(path)
        except SpecError as exc:
            raise SiteError(str(exc)) from None
        other = out.get(spec.name)
        if other is not None:
            raise SiteError(f"spec {spec.file}: key name: FT server {spec.name!r} is also defined in "
                            f"{other.file}: each server needs its own name")
        check_spec_hosts(site, spec)
        for i, nic in enumerate(spec.nics):
            owner = macs.get(nic.mac)
            if owner is not None:
                raise SiteError(f"spec {spec.file}: key nics[{i}].mac: {nic.mac} is also a NIC of "
                                f"{owner.name!r} in {owner.file}: each guest NIC needs its own MAC")
            macs[nic.mac] = spec
        out[spec.name] = spec
    return out


def load_server_ports(site: Site) -> tuple[dict[str, FTServerSpec], dict[str, ServerPorts]]:
    """All servers and their ports (no two on one slot)."""
    servers = load_servers(site)
    return servers, allocate(site, servers)


def spec_names(site: Site) -> dict[str, Path]:
    """Each spec file's `name`, read cheaply (no validation): what the port plan must not clash with.

    A controller starting for one server uses this rather than load_servers, so a typo in
    another server's spec does not stop this server's controller; files without a readable
    name are skipped here (`coserver site check` reports them)."""
    out: dict[str, Path] = {}
    for path in spec_files(site):
        try:
            name = tomllib.loads(path.read_text()).get("name")
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            continue
        if isinstance(name, str) and name not in out:
            out[name] = path
    return out


def find_server(site: Site, name: str) -> Path:
    """The spec file of the server called `name`: servers_dir/<name>.toml, else the file naming it."""
    names = spec_names(site)
    if name in names:
        return names[name]
    direct = site.servers_dir / f"{name}.toml"
    if direct.is_file():   # unreadable as TOML: load_spec will say why
        return direct
    raise SiteError(f"site {site.file}: no FT server {name!r} in {site.servers_dir} "
                    f"(servers: {', '.join(sorted(names)) or 'none'})")
