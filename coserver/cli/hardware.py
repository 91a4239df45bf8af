"""`coserver hardware ...`: list and show hardware profiles, check FT server specs.

    coserver hardware list [--json]
    coserver hardware show NAME [--json]
    coserver hardware check SPEC_OR_PROFILE [--json] [--host NAME]... [--no-files]

`check` takes a spec file (any existing path) or a profile name. Every failure is one line,
``coserver: error: <what and where>`` on stderr (with --json: {"ok": false, "error": ...} on
stdout), and exit status 1; never a traceback. The group handles its own errors so it behaves
the same inside `coserver` and on its own (tests, CliRunner).
"""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path
from typing import Any, Callable

import click

from coserver.errors import CoserverError
from coserver.hardware import check_profile, check_spec, get_profile, list_profiles
from coserver.hardware.profile import Profile


def _fail(message: str, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps({"ok": False, "error": message}))
    else:
        click.echo(f"coserver: error: {message}", err=True)
    click.get_current_context().exit(1)


def _one_line_errors(as_json_param: str | None = "as_json") -> Callable:
    """Turn CoserverError (and OS errors) into one line and exit status 1."""

    def wrap(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def inner(*args: Any, **kwargs: Any) -> Any:
            as_json = bool(kwargs.get(as_json_param)) if as_json_param else False
            try:
                return fn(*args, **kwargs)
            except CoserverError as exc:
                _fail(str(exc), as_json)
            except BrokenPipeError:
                raise
            except OSError as exc:
                _fail(" ".join(str(exc).split()), as_json)

        return inner

    return wrap


def _profile_dict(p: Profile) -> dict[str, Any]:
    return {
        "name": p.name,
        "title": p.title,
        "family": p.family,
        "generation": p.generation,
        "product_line": p.product_line,
        "machine": p.machine,
        "smbios": dataclasses.asdict(p.smbios),
        "real": dataclasses.asdict(p.real),
        "guest": dataclasses.asdict(p.guest),
        "sources": list(p.sources),
        "file": str(p.file),
    }


@click.group("hardware")
def hardware() -> None:
    """ProLiant-like hardware profiles and FT server specs."""


@hardware.command("list")
@click.option("--json", "as_json", is_flag=True, help="JSON: one object per profile.")
@_one_line_errors()
def list_cmd(as_json: bool) -> None:
    """List the shipped hardware profiles."""
    profiles = list_profiles()
    if as_json:
        click.echo(json.dumps([{"name": p.name, "title": p.title, "machine": p.machine,
                                "bios": f"{p.smbios.bios_version} {p.smbios.bios_date}"}
                               for p in profiles], indent=2))
        return
    width = max(len(p.name) for p in profiles)
    tw = max(len(p.title) for p in profiles)
    for p in profiles:
        click.echo(f"{p.name:<{width}}  {p.title:<{tw}}  {p.machine:<4}  "
                   f"BIOS {p.smbios.bios_vendor} {p.smbios.bios_version} {p.smbios.bios_date}")


@hardware.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="JSON: every field of the profile.")
@_one_line_errors()
def show_cmd(name: str, as_json: bool) -> None:
    """Show one profile: identity (SMBIOS), the real box, the default guest."""
    p = get_profile(name)
    if as_json:
        click.echo(json.dumps(_profile_dict(p), indent=2))
        return
    s, r, g = p.smbios, p.real, p.guest
    lines = [
        f"{p.name}: {p.title}  ({p.file})",
        f"  machine   {p.machine}",
        f"  bios      {s.bios_vendor} {s.bios_version} {s.bios_date}"
        + (f" (rev {s.bios_release})" if s.bios_release else ""),
        f"  system    {s.manufacturer} / {s.product}"
        + (f", SKU {s.sku}" if s.sku else "") + (f", family {s.family}" if s.family else ""),
        "  board     " + (f"{s.board_manufacturer} / {s.board_product}" if s.board
                           else "none (no SMBIOS type 2, as the real ROM)"),
        f"  chassis   {s.chassis_manufacturer}",
        f"  real box  {r.form_factor}; {r.cpu}; up to {r.max_memory_gib} GiB; {r.nic}; "
        f"{r.storage}",
        f"  emulation cpu {r.qemu_cpu_model}, nic {r.qemu_nic_model}, disks {r.qemu_disk_bus}",
        f"  guest     cpu {g.cpu_model} {g.sockets}x{g.cores}x{g.threads}, {g.memory_mib} MiB, "
        f"nic {g.nic_model}, disks {g.disk_bus}  (lab default; a spec overrides)",
        "  sources",
        *[f"    - {src}" for src in p.sources],
    ]
    click.echo("\n".join(lines))


def _this_coserver() -> list[str] | None:
    """[this CoServer] when a site file is here and names one of this machine's addresses: on a real
    CoServer the spec's other host (same paths, its own disks) is not this machine's to measure.
    None (both hosts local) otherwise, e.g. on a machine with no site file."""
    from coserver.site.load import load_site, site_path
    from coserver.site.local import find_host, interface_addresses

    try:
        path = site_path()
        if not path.is_file():
            return None
        site = load_site(path)
        host = find_host(site, set().union(*interface_addresses().values()))
    except CoserverError:
        return None
    return [host] if host else None


@hardware.command("check")
@click.argument("spec_or_profile")
@click.option("--json", "as_json", is_flag=True, help="JSON report on stdout.")
@click.option("--host", "hosts", multiple=True, metavar="NAME",
              help="A CoServer of the spec that runs on this machine (repeatable; default: this "
                   "CoServer when the site file names this machine's addresses, else both, as in the "
                   "one-machine lab).")
@click.option("--no-files", is_flag=True,
              help="Do not read the ISO/kernel/initrd files (they are not here yet).")
@_one_line_errors()
def check_cmd(spec_or_profile: str, as_json: bool, hosts: tuple[str, ...],
              no_files: bool) -> None:
    """Check a spec file (or a profile name) before anything starts."""
    if Path(spec_or_profile).exists() or spec_or_profile.endswith(".toml"):
        report = check_spec(spec_or_profile, local_hosts=list(hosts) or _this_coserver(),
                            measure_files=not no_files)
    else:
        if hosts or no_files:
            raise click.UsageError("--host and --no-files apply to a spec file, not a profile")
        report = check_profile(spec_or_profile)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        click.echo(report.summary())
