"""`coserver vagrant ...`: the Vagrant lab (coserver.lab.vagrantlab): three machines, one command each way."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from coserver.lab.vagrantlab import DEFAULT_WORKDIR, MACHINES, VagrantLab, host_accel

_WORKDIR = click.option("--workdir", type=click.Path(path_type=Path), default=DEFAULT_WORKDIR, show_default=True,
                        help="Where the lab keeps its libvirt, vagrant state, stage and PKI.")


def _say(msg: str) -> None:
    click.echo(f"  .. {msg}", err=True)


@click.group("vagrant")
def vagrant_group() -> None:
    """The Vagrant lab: cs1, cs2 and the witness as three machines (README "The Vagrant lab")."""


@vagrant_group.command("up")
@_WORKDIR
@click.option("--cs-memory", type=int, default=2048, show_default=True, help="Each CoServer's memory, MiB.")
@click.option("--cs-cpus", type=int, default=2, show_default=True, help="Each CoServer's vCPUs.")
@click.option("--witness-memory", type=int, default=512, show_default=True, help="The witness's memory, MiB.")
@click.option("--checkpoint-ms", type=int, default=2000, show_default=True, help="The site's COLO period.")
@click.option("--no-start", is_flag=True, help="Bring the machines up and check them; do not start the FT server.")
@click.option("--json", "as_json", is_flag=True, help="Print the timings, status and site checks as JSON.")
def vagrant_up(workdir: Path, cs_memory: int, cs_cpus: int, witness_memory: int, checkpoint_ms: int,
               no_start: bool, as_json: bool) -> None:
    """Build the box, bring the three machines up, start the FT server protected, check both CoServers.

    Exit 0 only when `coserver site check` passes on both and (unless --no-start) the server is protected."""
    lab = VagrantLab(workdir, cs_memory_mib=cs_memory, cs_cpus=cs_cpus, witness_memory_mib=witness_memory,
                     checkpoint_ms=checkpoint_ms, accel=host_accel(), say=_say)
    result = lab.up(start_server=not no_start)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    for key, value in result["times"].items():
        click.echo(f"{key:<16} {value}")
    if "status" in result:
        click.echo(f"status           {result['status'].get('state', result['status'])}")
    for cs, check in result["site_check"].items():
        click.echo(f"site check {cs}    {'ok' if check['ok'] else 'FAILED: ' + check['failed']}")


@vagrant_group.command("stage")
@_WORKDIR
def vagrant_stage(workdir: Path) -> None:
    """Make the stage the machines' provisioning installs from (the box too); `up` does this itself."""
    lab = VagrantLab(workdir, say=_say)
    workdir.mkdir(mode=0o700, parents=True, exist_ok=True)
    for key, value in lab.stage().items():
        click.echo(f"{key:<8} {value}")


@vagrant_group.command("down")
@_WORKDIR
def vagrant_down(workdir: Path) -> None:
    """Destroy the machines; remove the lab's libvirtd, namespace and directories (no domain, network or
    volume is left)."""
    for line in VagrantLab(workdir).down():
        click.echo(line)


@vagrant_group.command("exec")
@_WORKDIR
@click.argument("machine", type=click.Choice(MACHINES))
@click.argument("command", nargs=-1, required=True)
def vagrant_exec(workdir: Path, machine: str, command: tuple[str, ...]) -> None:
    """Run COMMAND as root on MACHINE (e.g. `coserver vagrant exec cs1 -- coserver status`)."""
    res = VagrantLab(workdir).ssh(machine, list(command), timeout=3600)
    sys.stdout.write(res.stdout)
    sys.stderr.write(res.stderr)
    sys.exit(res.returncode)
