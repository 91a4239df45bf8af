"""What the controller does to its own side: the mechanism behind the policy's actions.

Deciding *when* is the policy's job (policy.py, rejoin.py) and the daemon's; these
functions only *do*: build a rejoining secondary's QEMU command line from the FT
server's spec, and fail over through colo's primary/secondary steps.
"""

from __future__ import annotations

import time

from coserver.colo.argv import primary_args, secondary_args
from coserver.colo.primary import Primary
from coserver.colo.secondary import Secondary
from coserver.colo.settings import ColoSettings
from coserver.controller.config import ControllerConfig
from coserver.errors import CoserverError
from coserver.hardware.argv import ConfigGuestHardware
from coserver.hardware.config import resolve
from coserver.hardware.spec import load_spec
from coserver.paths import qemu_install, version_tuple
from coserver.qmp.session import QmpSession


def secondary_argv(cfg: ControllerConfig) -> list[str]:
    """A fresh secondary of the spec's guest on this host (stale disk, new empty overlays)."""
    config = resolve(load_spec(cfg.spec), cfg.host)
    node = cfg.colo_node()
    if not node.disk.exists():
        raise CoserverError(f"rejoin {cfg.host}: disk {node.disk} does not exist")
    node.active_overlay.parent.mkdir(parents=True, exist_ok=True)
    node.create_overlays(overwrite=True)
    version = version_tuple(qemu_install().version)
    return secondary_args(node, ConfigGuestHardware(config), cfg.accel, primary_sync_addr=cfg.peer_repl_addr,
                          ports=cfg.sync_ports, qemu_version=version)


def simplex_argv(cfg: ControllerConfig) -> list[str]:
    """The guest started alone on this host (the first side of a pair): its own disk, no replica yet."""
    config = resolve(load_spec(cfg.spec), cfg.host)
    node = cfg.colo_node()
    if not node.disk.exists():
        raise CoserverError(f"start {cfg.ftserver} on {cfg.host}: disk {node.disk} does not exist")
    return primary_args(node, ConfigGuestHardware(config), cfg.accel)


async def fail_over(side: type[Primary] | type[Secondary], qmp: QmpSession, cfg: ControllerConfig,
                    settings: ColoSettings) -> float:
    """This host's side of a failover: the secondary promotes, or the primary drops its replica.

    Returns how long it took, in seconds."""
    t0 = time.monotonic()
    await side(qmp, cfg.colo_node(), settings).failover()
    return time.monotonic() - t0
