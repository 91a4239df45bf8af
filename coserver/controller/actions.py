"""What the controller does to its own side: the mechanism behind the policy's actions.

Deciding *when* is the policy's job (policy.py, rejoin.py) and the daemon's; these
functions only *do*: start this host's QEMU for the FT server (alone, or as a rejoining
secondary) from its spec, with the site's backend, and fail over through colo's
primary/secondary steps.

The two backends start the same machine: with "qemu" the controller runs QEMU itself from the
whole argv (colo.argv); with "libvirt" libvirtd runs it from a domain (libvirt.domainxml) that
carries the guest-visible machine, the NIC on the bridge and the console natively and the COLO
part of the argv (block graph, proxy, -incoming) in <qemu:commandline>. A libvirt start is
made under a one-time start token, so the libvirt hook tells it from an operator's `virsh start`.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from coserver.colo.argv import (
    Node,
    primary_args,
    primary_disk_args,
    secondary_args,
    secondary_colo_args,
    tls_args,
)
from coserver.colo.primary import Primary
from coserver.colo.secondary import Secondary
from coserver.colo.settings import ColoSettings
from coserver.controller.config import ControllerConfig
from coserver.errors import CoserverError
from coserver.hardware.argv import ConfigGuestHardware
from coserver.hardware.config import MachineConfig, resolve
from coserver.hardware.spec import load_spec
from coserver.libvirt import starttoken
from coserver.libvirt.domainxml import domain_xml
from coserver.libvirt.guestprocess import LibvirtQemu
from coserver.libvirt.metadata import ServerTag
from coserver.machine.launcher import QemuProcess
from coserver.paths import qemu_install, version_tuple
from coserver.qmp.session import QmpSession


def _machine(cfg: ControllerConfig) -> MachineConfig:
    """The spec resolved for this host; the NIC on the site's bridge where the spec names none."""
    config = resolve(load_spec(cfg.spec), cfg.host)
    bridge = cfg.node.get("bridge")
    if bridge and any(n.bridge is None for n in config.nics):
        config = dataclasses.replace(config, nics=tuple(n if n.bridge else dataclasses.replace(n, bridge=bridge)
                                                        for n in config.nics))
    return config


def _secondary_node(cfg: ControllerConfig) -> Node:
    node = cfg.colo_node()
    if not node.disk.exists():
        raise CoserverError(f"rejoin {cfg.host}: disk {node.disk} does not exist")
    node.active_overlay.parent.mkdir(parents=True, exist_ok=True)
    node.create_overlays(overwrite=True)
    return node


def _simplex_node(cfg: ControllerConfig) -> Node:
    node = cfg.colo_node()
    if not node.disk.exists():
        raise CoserverError(f"start {cfg.ftserver} on {cfg.host}: disk {node.disk} does not exist")
    return node


def secondary_argv(cfg: ControllerConfig) -> list[str]:
    """A fresh secondary of the spec's guest on this host (stale disk, new empty overlays)."""
    node = _secondary_node(cfg)
    version = version_tuple(qemu_install().version)
    return secondary_args(node, ConfigGuestHardware(_machine(cfg)), cfg.accel, primary_sync_addr=cfg.peer_repl_addr,
                          ports=cfg.sync_ports, qemu_version=version)


def simplex_argv(cfg: ControllerConfig) -> list[str]:
    """The guest started alone on this host (the first side of a pair): its own disk, no replica yet."""
    node = _simplex_node(cfg)
    return primary_args(node, ConfigGuestHardware(_machine(cfg)), cfg.accel)


def start_simplex(cfg: ControllerConfig, epoch: int) -> QemuProcess:
    """Start the guest alone on this host with the site's backend; returns its running QEMU."""
    if cfg.backend != "libvirt":
        return QemuProcess(cfg.qemu_name, simplex_argv(cfg), cfg.qemu_workdir).start()
    _simplex_node(cfg)   # its disk checked
    return _start_domain(cfg, "simplex", epoch)


def start_secondary(cfg: ControllerConfig, epoch: int) -> QemuProcess:
    """Start a fresh secondary on this host with the site's backend; returns its running QEMU."""
    if cfg.backend != "libvirt":
        return QemuProcess(cfg.qemu_name, secondary_argv(cfg), cfg.qemu_workdir).start()
    _secondary_node(cfg)   # its disk checked, fresh overlays made
    return _start_domain(cfg, "secondary", epoch)


def domain_xml_for(cfg: ControllerConfig, role: str, epoch: int, token: str | None, qmp_socket: Path) -> str:
    """This host's copy as a libvirt domain: the machine from the spec, COLO's part on its command
    line (a simplex's one-child quorum; a secondary's proxy, replication chain and -incoming),
    coserver's metadata with the start's token."""
    node = cfg.colo_node()
    config = _machine(cfg)
    hw = ConfigGuestHardware(config)
    qemu = qemu_install()
    if role == "secondary":
        colo = secondary_colo_args(node, hw, primary_sync_addr=cfg.peer_repl_addr, ports=cfg.sync_ports,
                                   qemu_version=version_tuple(qemu.version))
    else:
        colo = primary_disk_args(node, hw)
    tag = ServerTag(site=cfg.witness["site"], name=cfg.ftserver, role=role, epoch=epoch, token=token)
    return domain_xml(config, tag, qmp_socket=qmp_socket, accel=cfg.accel, disks=False, emulator=qemu.system,
                      qemu_args=[*qemu.firmware_args(), *tls_args(node), *colo], serial_log=node.serial_log)


def _start_domain(cfg: ControllerConfig, role: str, epoch: int) -> QemuProcess:
    """Start the domain under a token valid for this one start (the hook refuses any other start)."""
    run_dir = Path(cfg.control_socket).parent
    proc = LibvirtQemu(cfg.qemu_name, cfg.qemu_workdir, domain=cfg.ftserver, uri=cfg.libvirt_uri)
    token = starttoken.issue(run_dir, cfg.ftserver)
    try:
        proc.xml = domain_xml_for(cfg, role, epoch, token, proc.qmp_path)
        return proc.start()
    finally:
        starttoken.withdraw(run_dir, cfg.ftserver)


async def fail_over(side: type[Primary] | type[Secondary], qmp: QmpSession, cfg: ControllerConfig,
                    settings: ColoSettings) -> float:
    """This host's side of a failover: the secondary promotes, or the primary drops its replica.

    Returns how long it took, in seconds."""
    t0 = time.monotonic()
    await side(qmp, cfg.colo_node(), settings).failover()
    return time.monotonic() - t0
