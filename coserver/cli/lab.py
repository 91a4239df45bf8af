"""`coserver lab up|status|down`: the one-machine lab (two CoServers as network namespaces).

    coserver lab up [--prefix P] [--workdir DIR] [--profile NAME | --spec FILE] [--checkpoint-ms N] [--insecure]
    coserver lab status [--prefix P] [--json]
    coserver lab fault KIND [--host cs1|cs2] [--link 1|2] [--server NAME] [--json] [--prefix P]
    coserver lab exec HOST [--prefix P] -- CMD...   (CMD on a lab host, as `ssh HOST CMD` on real hosts)
    coserver lab down [--prefix P]
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click

from coserver import log
from coserver.lab.lab import BACKENDS, DEFAULT_PREFIX, DEFAULT_PROFILE, FAULTS, MAX_SERVERS, Lab, LabError, LabOptions
from coserver.lab.net import HOSTS
from coserver.lab.spec import DEVICE_SETS

prefix_option = click.option("--prefix", default=DEFAULT_PREFIX, show_default=True,
                             help="Lab name prefix: namespaces are <prefix>-cs1, <prefix>-cs2, ...")


@click.group()
def lab() -> None:
    """The one-machine lab: CoServers cs1 and cs2 as namespaces, one FT virtual server."""


@lab.command("up")
@prefix_option
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where disks, logs and sockets go (default ~/.local/state/coserver/lab-<prefix>).")
@click.option("--profile", default=DEFAULT_PROFILE, show_default=True, help="Hardware profile of the lab guest.")
@click.option("--spec", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Protect the guest of this FT server spec instead of the built-in lab guest.")
@click.option("--checkpoint-ms", type=click.IntRange(100, 600_000), default=2000, show_default=True,
              help="COLO checkpoint period.")
@click.option("--reprotect", type=click.Choice(["auto", "manual"]), default="auto", show_default=True,
              help="Re-protect automatically when a failed CoServer is back, or only on `coserver pair reprotect`.")
@click.option("--sync-speed", "sync_speed", type=click.IntRange(0, 100_000), default=0, show_default=True,
              metavar="MIB_S", help="Cap the disk (re)sync rate in MiB/s (0: no cap).")
@click.option("--devices", type=click.Choice(list(DEVICE_SETS)), default="virtio", show_default=True,
              help="The built-in guest's NIC and disk controller: paravirtual (virtio) or the profile's "
                   "emulated ones (e1000/e1000e, megasas), as a guest without virtio drivers uses.")
@click.option("--servers", type=click.IntRange(1, MAX_SERVERS), default=1, show_default=True,
              help="FT servers on the pair (built-in guests journal, journal2, ...; each its own controllers).")
@click.option("--insecure", is_flag=True,
              help="No TLS: plain TCP between the QEMUs (anyone on the sync network may connect) and the witness "
                   "(etcd) over plain http without authentication; the site file says insecure = true, which only a "
                   "lab-* site may. For comparison only. Default: TLS everywhere, each side admitting only its peer, "
                   "the hosts' etcd users limited to the site's keys.")
@click.option("--protect", "protect", type=click.Choice(["live", "stopped"]), default="live", show_default=True,
              help="How the pair enters COLO: live (the guest's RAM copied while it runs, a pause of tens of ms) or "
                   "stopped (QEMU's documented order: the guest stopped for the whole RAM copy; for comparison).")
@click.option("--memory", "memory", type=click.IntRange(0, 1 << 20), default=0, metavar="MIB",
              help="The built-in guest's RAM in MiB (default: the profile's).")
@click.option("--backend", type=click.Choice(list(BACKENDS)), default="qemu", show_default=True,
              help="libvirt: also a libvirtd on each host (its own /etc/libvirt, /run/libvirt, ...; the coserver "
                   "hook installed), started before the controllers, which do not use it yet.")
def lab_up(prefix: str, workdir: Path | None, profile: str, spec: Path | None, checkpoint_ms: int,
           reprotect: str, sync_speed: int, devices: str, servers: int, insecure: bool, protect: str,
           memory: int, backend: str) -> None:
    """Start both CoServers, sync the disk, enter COLO; return when protected.

    The witness is etcd over TLS with client-certificate authentication and a role per site (the
    lab's certificates in <workdir>/pki; README "The witness over TLS"), or with --insecure plain http.
    Exits 0 only when the pair is protected and checkpoints kept flowing for a short confirmation
    window; otherwise non-zero with the reason, and nothing of the lab is left running."""
    the_lab = Lab(prefix, workdir)
    opts = LabOptions(prefix=prefix, workdir=workdir, profile=profile, spec=spec, checkpoint_ms=checkpoint_ms,
                      reprotect=reprotect, sync_speed_mib_s=sync_speed, devices=devices, servers=servers,
                      insecure=insecure, protect=protect, memory_mib=memory, backend=backend)
    the_lab.validate(opts)  # bad input: one line before the workdir is made or written to
    log.configure("INFO", the_lab.workdir / "lab.log.jsonl") if _writable(the_lab.workdir) else None
    status = the_lab.up(opts, progress=lambda m: click.echo(f"  .. {m}", err=True))
    print_status(status)


@lab.command("status")
@prefix_option
@click.option("--server", default=None, metavar="NAME", help="The FT server (default: the lab's first).")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def lab_status(prefix: str, server: str | None, as_json: bool) -> None:
    """Show the pair's state, roles, checkpoints and the guest's address."""
    status = Lab(prefix).status(server)
    if as_json:
        click.echo(json.dumps(status, indent=2))
    else:
        print_status(status)


@lab.command("fault")
@click.argument("kind", type=click.Choice(list(FAULTS)))
@prefix_option
@click.option("--host", type=click.Choice(["cs1", "cs2"]), default=None, help="The CoServer to hit.")
@click.option("--link", type=click.IntRange(1, 2), default=None, help="The sync link (1 or 2).")
@click.option("--server", default=None, metavar="NAME",
              help="The FT server whose QEMU or controller to hit (default: the lab's first).")
@click.option("--seconds", type=float, default=None,
              help="freeze: how long the host stays frozen (default 6 s, above the witness lease).")
@click.option("--json", "as_json", is_flag=True, help="Print what was done as JSON.")
def lab_fault(kind: str, prefix: str, host: str | None, link: int | None, server: str | None,
              seconds: float | None, as_json: bool) -> None:
    """Inject a fault: kill-qemu|term-qemu|hang-qemu|resume-qemu|kill-controller|power-off|power-on --host H;
    freeze --host H [--seconds N] (controllers and QEMUs SIGSTOPped together, resumed after N; returns
    then); cut-witness|heal-witness --host H; witness-down|witness-up; stall-replication|heal-replication
    (replication blackholed, heartbeats flowing); cut-link|heal-link --link N; cut-all-links|heal-all-links;
    disk-error --host H (that QEMU's disk fails writes from now on: the primary's local copy, or the
    secondary's replica); fill-disk|heal-disk --host H (the host's /var/lib/coserver full, then freed);
    kill-libvirtd|start-libvirtd --host H (a lab up --backend libvirt: its libvirtd SIGKILLed, its domains
    left running; started again, it reconnects to them); destroy-domain --host H (`virsh destroy` of the
    FT server's domain there)."""
    done = Lab(prefix).fault(kind, host, link, server, seconds)
    if as_json:
        click.echo(json.dumps(done))
    else:
        where = " ".join(f"{k}={done[k]}" for k in ("host", "link", "pid") if done.get(k) is not None)
        click.echo(f"fault {kind} injected {where}".rstrip())


@lab.command("exec", context_settings={"ignore_unknown_options": True})
@click.argument("host", type=click.Choice(list(HOSTS)))
@prefix_option
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def lab_exec(host: str, prefix: str, command: tuple[str, ...]) -> None:
    """Run COMMAND on a lab host: its network namespace and its own /etc/coserver, /var/lib/coserver
    and /run/coserver, as `ssh HOST COMMAND` would on real CoServers. Exits with COMMAND's status.

    Example: coserver lab exec cs1 -- coserver status journal --json"""
    the_lab = Lab(prefix)
    if not the_lab.net.existing():
        raise LabError(f"lab {prefix!r} is not running")
    argv = the_lab.controller_argv(host, list(command))
    sys.exit(subprocess.run(argv, check=False).returncode)


@lab.command("down")
@prefix_option
def lab_down(prefix: str) -> None:
    """Stop everything the lab started and remove its namespaces (idempotent)."""
    removed = Lab(prefix).down()
    click.echo(f"lab {prefix}: " + (f"removed {len(removed)} items" if removed else "nothing was running"))


def _writable(path: Path) -> bool:
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)  # a workdir the lab makes is private
        return True
    except OSError:
        return False


def print_status(s: dict) -> None:
    click.echo(f"lab {s['prefix']}: {s['state'].upper()}   primary={s['primary'] or '-'} "
               f"secondary={s['secondary'] or '-'} checkpoints={s['checkpoints']}")
    if s.get("alert"):
        click.echo(f"ALERT: {s['alert']}")
    if s.get("ftserver"):
        click.echo(f"ft server: {s['ftserver']}  profile={s.get('profile') or '-'}  devices={s.get('devices') or '-'}")
    w = s.get("witness") or {}
    if w.get("url"):
        how = (f"TLS, client certificates, etcd role {w['role']} on {w['prefix']}" if w.get("tls")
               else "insecure: plain http, no authentication")
        seen = " ".join(f"{h}={'yes' if ok else 'NO'}" for h, ok in sorted((w.get("reachable") or {}).items()))
        click.echo(f"witness: {w['url']} ({how})" + (f"  reachable: {seen}" if seen else ""))
    g = s.get("guest") or {}
    if g:
        click.echo(f"guest: {g.get('address')}:{g.get('port')} (mac {g.get('mac')}, clients in netns "
                   f"{g.get('client_netns')})")
    for host, h in sorted(s.get("hosts", {}).items()):
        sync = h.get("sync")
        if sync and not sync.get("finished"):
            click.echo(f"  {host} syncing: {sync['percent']:5.1f}%  {sync['rate_mib_s'] or '-'} MiB/s  "
                       f"ETA {sync['eta_s'] if sync['eta_s'] is not None else '-'} s"
                       + ("  (in step)" if sync.get("in_step") else ""))
        qmp = h.get("qmp") or {}
        click.echo(f"  {host:<4} netns={h.get('netns'):<10} role={str(h.get('role')):<10} "
                   f"qemu_pid={h.get('qemu_pid')} qmp={'ok' if h.get('qmp_ok') else 'NOT OK'} "
                   f"max_qmp_ms={qmp.get('max_latency_ms')}" + (f"  error: {h['error']}" if "error" in h else ""))
