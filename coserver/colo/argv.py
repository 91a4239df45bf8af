"""QEMU command lines for the two COLO roles, as argv lists.

The primary starts *simplex*: a quorum block node with only its local disk
under it and a plain tap NIC, so the guest serves clients before protection
and again after a failover. Protection adds the NBD child and the network
proxy over QMP (colo.primary), exactly like QEMU's "resume replication"
procedure; one code path serves first protection and re-protection.

The secondary only ever exists to be protected: its proxy (two redirectors
and the rewriter), its replication chain (active -> hidden -> parent0) and
`-incoming defer` are on its command line.

Every proxy object carries vnet_hdr_support=on: virtio-net on a tap carries
a vnet header, and without it colo-compare passes packets *uncompared* (acked
writes were lost on failover in 6 of 6 runs, see COLO-RECIPE.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coserver.colo.guest import GuestHardware
from coserver.colo.settings import SyncPorts
from coserver.colo.tls import ColoTls
from coserver.images import qemu_img
from coserver.machine.qemuopts import qemu_opt_value
from coserver.sys.files import private_dir

NETDEV_ID = "hn0"
QUORUM_NODE = "colo-disk0"
LOCAL_DISK_NODE = "disk0"          # primary: its own copy, children.0 of the quorum
PARENT_NODE = "parent0"            # secondary: its own copy, exported over NBD
REPLICATION_NODE_SECONDARY = "childs0"
REPLICATION_NODE_PRIMARY = "replication0"   # primary: added at protection time
NBD_EXPORT = PARENT_NODE
EXPORT_ID = "colo-export"                    # secondary: the block export of NBD_EXPORT
REPLICATION_NBD_NODE = "replication0-nbd"    # primary: the NBD client under its replication child


@dataclass(frozen=True)
class Node:
    """One CoServer's side of an FT server: where its QEMU runs and what it owns."""

    name: str                 # "cs1"
    workdir: Path             # private (0700): QMP sockets, logs, serial, overlays
    sync_addr: str            # this host's address on the replication link
    tap: str                  # tap interface of the guest NIC on this host
    disk: Path                # this host's own copy of the guest disk (qcow2)
    mac: str                  # the FT server's one MAC, the same on both hosts
    netns: str | None = None  # network namespace the QEMU runs in (the lab's hosts)
    overlay_dir: Path | None = None  # where the secondary's active/hidden go (tmpfs if possible)
    tls: ColoTls | None = None       # TLS on every stream to the peer (None: plain TCP, the lab's --insecure)
    #: the guest NIC's netdev id, which the COLO filters attach to: ours ("hn0") when coserver writes the
    #: -netdev, libvirt's ("hostnet0") when libvirt makes the tap (the libvirt backend)
    netdev_id: str = NETDEV_ID

    @property
    def _overlay_home(self) -> tuple[Path, str]:
        return self.overlay_dir or self.workdir, f"{self.name}-"

    @property
    def active_overlay(self) -> Path:
        return qemu_img.colo_overlay_paths(*self._overlay_home)[0]

    @property
    def hidden_overlay(self) -> Path:
        return qemu_img.colo_overlay_paths(*self._overlay_home)[1]

    def create_overlays(self, *, overwrite: bool = False) -> qemu_img.ColoOverlays:
        """This secondary's empty active and hidden overlays, of its disk's size, where its argv names them.

        An overlay_dir usually sits in a directory every user can write (/dev/shm): it is made 0700
        here, or, if it exists, must be a real directory of ours that no one else can enter (a
        planted symlink or someone else's directory would receive the guest's disk writes); else
        UnsafeDirError, one line. Its parent must exist."""
        directory, prefix = self._overlay_home
        if self.overlay_dir is not None:
            private_dir(self.overlay_dir)
        return qemu_img.create_colo_overlays(self.disk, directory, prefix=prefix, overwrite=overwrite)

    @property
    def serial_log(self) -> Path:
        return self.workdir / "serial.log"


def _blockdev(spec: dict[str, Any]) -> list[str]:
    return ["-blockdev", json.dumps(spec, separators=(",", ":"))]


def _qcow2(node_name: str, path: Path, **extra: object) -> dict[str, Any]:
    spec: dict[str, Any] = {"driver": "qcow2", "node-name": node_name,
                  "file": {"driver": "file", "filename": str(path)}}
    spec.update(extra)
    return spec


def _reconnect_option(qemu_version: tuple[int, ...]) -> str:
    """QEMU 9.2 added reconnect-ms and 10.2 removed the old seconds-based `reconnect`."""
    return "reconnect-ms=1000" if qemu_version >= (9, 2) else "reconnect=1"


def common_args(node: Node, hw: GuestHardware, accel: str) -> list[str]:
    """Everything both roles share: accelerator, machine, console, NIC on the tap."""
    return [
        "-name", f"guest={node.name},debug-threads=on",
        "-accel", accel,
        "-nodefaults", "-no-user-config", "-display", "none",
        *hw.machine_args(),
        "-chardev", f"socket,id=serial0,path={qemu_opt_value(node.workdir / 'serial.sock')},server=on,wait=off,"
                    f"logfile={qemu_opt_value(node.serial_log)},logappend=on",
        "-serial", "chardev:serial0",
        "-netdev", f"tap,id={node.netdev_id},ifname={node.tap},script=no,downscript=no,vhost=off",
        *hw.nic_device_args(node.netdev_id, node.mac),
        *tls_args(node),
    ]


def tls_args(node: Node) -> list[str]:
    """The TLS credentials object every stream to the peer uses (none on an insecure site)."""
    return node.tls.object_args() if node.tls else []


def primary_args(node: Node, hw: GuestHardware, accel: str, *, start_paused: bool = False) -> list[str]:
    """A primary that runs simplex until colo.primary protects it."""
    args = common_args(node, hw, accel) + primary_disk_args(node, hw)
    if start_paused:
        args.append("-S")
    return args


def primary_disk_args(node: Node, hw: GuestHardware) -> list[str]:
    """The primary's block graph (its own disk under a one-child quorum) and the guest's disk on it."""
    args = _blockdev(_qcow2(LOCAL_DISK_NODE, node.disk))
    args += _blockdev({"driver": "quorum", "node-name": QUORUM_NODE, "read-pattern": "fifo",
                       "vote-threshold": 1, "children": [LOCAL_DISK_NODE]})
    return args + hw.disk_device_args(QUORUM_NODE)


def secondary_args(node: Node, hw: GuestHardware, accel: str, *, primary_sync_addr: str,
                   ports: SyncPorts, qemu_version: tuple[int, ...]) -> list[str]:
    """A secondary waiting for the primary's migration (-incoming defer)."""
    return common_args(node, hw, accel) + secondary_colo_args(node, hw, primary_sync_addr=primary_sync_addr,
                                                              ports=ports, qemu_version=qemu_version)


def secondary_colo_args(node: Node, hw: GuestHardware, *, primary_sync_addr: str, ports: SyncPorts,
                        qemu_version: tuple[int, ...]) -> list[str]:
    """What makes a machine a secondary: its proxy on the guest NIC's netdev, its replication chain
    and disk, -incoming defer (the machine, console and NIC come before it, from us or libvirt)."""
    rc = _reconnect_option(qemu_version)
    if node.tls:
        rc += "," + node.tls.chardev_client_opt()
    net = node.netdev_id
    args = [
        # nodelay: each packet is two writes (length, frame); see colo.proxy._socket_chardev
        "-chardev", f"socket,id=red0,host={primary_sync_addr},port={ports.mirror},nodelay=on,{rc}",
        "-chardev", f"socket,id=red1,host={primary_sync_addr},port={ports.compare},nodelay=on,{rc}",
        "-object", f"filter-redirector,id=f1,netdev={net},queue=tx,indev=red0,vnet_hdr_support=on",
        "-object", f"filter-redirector,id=f2,netdev={net},queue=rx,outdev=red1,vnet_hdr_support=on",
        "-object", f"filter-rewriter,id=rew0,netdev={net},queue=all,vnet_hdr_support=on",
    ]
    args += _blockdev(_qcow2(PARENT_NODE, node.disk))
    args += _blockdev({
        "driver": "replication", "node-name": REPLICATION_NODE_SECONDARY, "mode": "secondary",
        "top-id": QUORUM_NODE,
        "file": {"driver": "qcow2", "file": {"driver": "file", "filename": str(node.active_overlay)},
                 "backing": {"driver": "qcow2",
                             "file": {"driver": "file", "filename": str(node.hidden_overlay)},
                             "backing": PARENT_NODE}},
    })
    args += _blockdev({"driver": "quorum", "node-name": QUORUM_NODE, "read-pattern": "fifo",
                       "vote-threshold": 1, "children": [REPLICATION_NODE_SECONDARY]})
    args += hw.disk_device_args(QUORUM_NODE)
    args += ["-incoming", "defer"]
    return args
