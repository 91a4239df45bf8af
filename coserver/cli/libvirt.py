"""`coserver libvirt ...`: FT servers and libvirt.

    coserver libvirt import DOMAIN [--out SPEC] [--force] [--connect URI] [--profile NAME] [--name NAME]
                                   [--coservers A,B] [--site FILE]
    coserver libvirt install-hook [--hooks-dir DIR] [--run-dir DIR] [--site FILE]

`import` reads a domain's persistent XML (libvirt opened read-only) and writes an FT server spec, or
prints every reason it cannot (one line each) and exits 1. `install-hook` installs the QEMU hook
(coserver.libvirt.hook) as an executable script that runs this coserver with this Python.
Every failure is one line on stderr and exit status 1; never a traceback.
"""

from __future__ import annotations

import os
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, NoReturn

import click

import coserver
from coserver.errors import CoserverError, clip
from coserver.libvirt.errors import ImportRefused, LibvirtError

DEFAULT_URI = "qemu:///system"
DEFAULT_HOOKS_DIR = Path("/etc/libvirt/hooks/qemu.d")
HOOK_NAME = "50-coserver"


def _fail(message: str) -> NoReturn:
    click.echo(f"coserver: error: {message}", err=True)
    click.get_current_context().exit(1)


def _site(site_file: Path | None) -> Any:
    """The site (--site, $COSERVER_SITE or /etc/coserver/site.toml) if one is there, else None;
    a site file given with --site must load."""
    from coserver.site import load_site
    from coserver.site.load import site_path

    if site_file is None and not site_path().exists():
        return None
    return load_site(site_file)


def _open(uri: str) -> Any:
    """libvirt, opened read-only (import never changes anything); its own stderr printing off."""
    try:
        import libvirt
    except ImportError:
        raise LibvirtError("libvirt-python is not installed (pip install libvirt-python)") from None
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    try:
        return libvirt.openReadOnly(uri)
    except libvirt.libvirtError as exc:
        raise LibvirtError(f"libvirt {uri}: cannot connect: {' '.join(str(exc).split())}") from None


def _networks(conn: Any, xml: str) -> dict[str, str]:
    """Bridge of each libvirt network the domain's interfaces name (those libvirt knows)."""
    import libvirt

    out: dict[str, str] = {}
    root = ET.fromstring(xml)
    for src in root.findall("devices/interface[@type='network']/source"):
        net = src.get("network")
        if not net or net in out:
            continue
        try:
            out[net] = conn.networkLookupByName(net).bridgeName()
        except libvirt.libvirtError:
            continue   # the importer names it as a reason
    return out


@click.group("libvirt")
def libvirt_group() -> None:
    """FT servers and libvirt: import a domain as a spec, install the hook."""


@libvirt_group.command("import")
@click.argument("domain")
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the spec here (default: stdout).")
@click.option("--force", is_flag=True, help="Overwrite --out if it exists.")
@click.option("--connect", "uri", default=DEFAULT_URI, show_default=True, help="libvirt URI (opened read-only).")
@click.option("--profile", default=None, metavar="NAME", help="Hardware profile (default: the nearest that fits).")
@click.option("--name", default=None, help="FT server name (default: the domain's).")
@click.option("--coservers", default=None, metavar="A,B",
              help="The two CoServers' names (default: the site's, else cs1,cs2).")
@click.option("--site", "site_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Site file (default: $COSERVER_SITE or /etc/coserver/site.toml, if there).")
def import_cmd(domain: str, out: Path | None, force: bool, uri: str, profile: str | None, name: str | None,
               coservers: str | None, site_file: Path | None) -> None:
    """Make an FT server spec of libvirt domain DOMAIN, or say why COLO cannot protect it."""
    from coserver.libvirt.importer import import_domain

    try:
        if coservers is not None:
            hosts = tuple(h.strip() for h in coservers.split(","))
        else:
            site = _site(site_file)
            hosts = tuple(site.coservers) if site is not None else ("cs1", "cs2")
        if out is not None and out.exists() and not force:
            raise LibvirtError(f"{out}: exists (--force to overwrite)")
        conn = _open(uri)
        try:
            import libvirt

            try:
                dom = conn.lookupByName(domain)
                xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
            except libvirt.libvirtError as exc:
                raise LibvirtError(f"libvirt {uri}: domain {clip(domain, quote=repr)}: "
                                   f"{' '.join(str(exc).split())}") from None
            networks = _networks(conn, xml)
        finally:
            conn.close()
        result = import_domain(xml, coservers=hosts, profile=profile, name=name, networks=networks)
    except ImportRefused as exc:
        for line in exc.reasons:
            click.echo(f"coserver: error: {line}", err=True)
        click.get_current_context().exit(1)
    except CoserverError as exc:
        _fail(str(exc))
    for note in result.notes:
        click.echo(f"coserver: note: {note}", err=True)
    if out is None:
        click.echo(result.text, nl=False)
        return
    try:
        out.write_text(result.text)
    except OSError as exc:
        _fail(f"{out}: cannot write: {exc.strerror or exc}")
    click.echo(f"wrote {out}: FT server {result.name} (profile {result.profile}); check it with "
               f"`coserver hardware check {out}`", err=True)


def hook_script(python: str, package_root: Path, run_dir: Path) -> str:
    """The hook script: this Python (isolated: libvirtd's environment must not change what runs)
    on this coserver's hook module, with the site's run directory."""
    for what, value in (("python", python), ("package root", str(package_root)), ("run directory", str(run_dir))):
        if not os.path.isabs(value) or any(c in value for c in "\0\n"):
            raise LibvirtError(f"{what} {clip(value, quote=repr)}: must be an absolute path")
    if any(c.isspace() for c in python) or len(python) > 120:
        raise LibvirtError(f"python {clip(python, quote=repr)}: a #! line takes a path without spaces, "
                           "at most 120 characters")
    return (f"#!{python} -I\n"
            "# libvirt QEMU hook of coserver: written by `coserver libvirt install-hook`; re-run it rather than\n"
            "# editing this file. It tells coserver's controllers about FT servers' domains and never calls\n"
            "# libvirt (coserver/libvirt/hook.py); other domains pass untouched.\n"
            "import sys\n"
            f"sys.path.insert(0, {str(package_root)!r})\n"
            "from coserver.libvirt.hook import main\n"
            f"sys.exit(main([\"--run-dir\", {str(run_dir)!r}, *sys.argv[1:]]))\n")


@libvirt_group.command("install-hook")
@click.option("--hooks-dir", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_HOOKS_DIR,
              show_default=True, help="libvirt's QEMU hook directory.")
@click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the controllers' sockets are (default: the site's run_dir, else /run/coserver).")
@click.option("--site", "site_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Site file (default: $COSERVER_SITE or /etc/coserver/site.toml, if there).")
def install_hook_cmd(hooks_dir: Path, run_dir: Path | None, site_file: Path | None) -> None:
    """Install the QEMU hook script (0755; running it again changes nothing)."""
    from coserver.libvirt.hook import DEFAULT_RUN_DIR

    try:
        if run_dir is None:
            site = _site(site_file)
            run_dir = Path(site.run_dir) if site is not None else Path(DEFAULT_RUN_DIR)
        text = hook_script(sys.executable, Path(coserver.__file__).resolve().parent.parent, run_dir.absolute())
        target = hooks_dir / HOOK_NAME
        try:
            if target.is_file() and not target.is_symlink() and target.read_text() == text \
                    and (target.stat().st_mode & 0o7777) == 0o755:
                click.echo(f"{target}: already installed")
                return
            hooks_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
            tmp = hooks_dir / f".{HOOK_NAME}.new"
            tmp.unlink(missing_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o755)
            with os.fdopen(fd, "w") as f:
                os.fchmod(f.fileno(), 0o755)
                f.write(text)
            os.replace(tmp, target)
        except OSError as exc:
            raise LibvirtError(f"{target}: cannot install: {exc.strerror or exc}") from None
    except CoserverError as exc:
        _fail(str(exc))
    click.echo(f"installed {target} (run dir {run_dir}); libvirtd reads its hooks when it starts: restart it "
               "(systemctl restart libvirtd) if it runs")
