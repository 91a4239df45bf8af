"""The primary's COLO network proxy as QMP commands: added at protection, removed at failover.

Layout (QEMU docs/colo-proxy.txt): filter-mirror copies client packets to the
secondary (mirror0); the guest's replies go to colo-compare (compare0) instead
of the tap; colo-compare also reads the secondary's replies (compare1) and,
when they match, releases the primary's through compare_out back to the tap.
mirror0 and compare1 listen on the sync link; the two local loops use unix
sockets in the node's private workdir.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coserver.colo.argv import NETDEV_ID
from coserver.colo.settings import ColoSettings, SyncPorts

COMPARE_ID = "comp0"
IOTHREAD_ID = "iothread1"
MIRROR_ID = "m0"
REDIRECT_IN_ID = "redire0"
REDIRECT_OUT_ID = "redire1"
CHARDEV_IDS = ("mirror0", "compare1", "compare0", "compare0-0", "compare_out", "compare_out0")
#: the two listeners the secondary connects to (the client's packets to it, its replies back)
PEER_CHARDEV_IDS = ("mirror0", "compare1")


def peer_streams_connected(chardevs: list[dict[str, Any]]) -> bool:
    """From `query-chardev`: both of PEER_CHARDEV_IDS have a connected peer. A socket chardev's
    filename reads "... <-> peer" once connected (after a TLS handshake, if any), "disconnected:..."
    before."""
    names = {c.get("label"): str(c.get("filename", "")) for c in chardevs}
    return all(" <-> " in names.get(label, "") for label in PEER_CHARDEV_IDS)


def _socket_chardev(chardev_id: str, addr: dict[str, Any], server: bool,
                    tls: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
    data: dict[str, Any] = {"addr": addr, "server": server, **(tls or {})}
    if addr["type"] == "inet":
        # Each packet goes as two writes (its length, then the frame): with Nagle on, the frame waits
        # for the peer's (delayed, up to 40 ms) ACK of the length whenever the stream was idle.
        data["nodelay"] = True
    if server:
        data["wait"] = False
    return "chardev-add", {"id": chardev_id, "backend": {"type": "socket", "data": data}}


def _inet(host: str, port: int) -> dict[str, Any]:
    return {"type": "inet", "data": {"host": host, "port": str(port)}}


def _unix(path: Path) -> dict[str, Any]:
    return {"type": "unix", "data": {"path": str(path)}}


@dataclass(frozen=True)
class PrimaryProxy:
    """The commands that insert (and remove) the primary's proxy on the guest NIC's netdev."""

    listen_addr: str      # the primary's address on the sync link
    ports: SyncPorts
    workdir: Path
    settings: ColoSettings
    #: A primary that was a secondary keeps its filter-rewriter (it still fixes the TCP
    #: sequence numbers of connections made then): the new filters go in front of it.
    insert_before: str | None = None
    #: the listener options (ColoTls.listener) of the two chardevs the secondary connects to; None: plain
    tls: dict[str, Any] | None = None
    #: Entering COLO live: the filters are made switched off (the guest's traffic passes as if
    #: they were not there while its RAM is copied); mirror_on_commands(), then switch_on_commands()
    #: turn them on in the migration's final pause, with the disk switch between.
    start_off: bool = False
    #: the guest NIC's netdev (colo.argv.Node.netdev_id)
    netdev_id: str = NETDEV_ID

    def add_commands(self) -> list[tuple[str, dict[str, Any]]]:
        place: dict[str, Any] = ({"insert": "before", "position": f"id={self.insert_before}"}
                                 if self.insert_before else {})
        if self.start_off:
            place["status"] = "off"
        compare0 = _unix(self.workdir / "compare0.sock")
        compare_out = _unix(self.workdir / "compare_out.sock")
        s = self.settings
        return [
            _socket_chardev("mirror0", _inet(self.listen_addr, self.ports.mirror), server=True, tls=self.tls),
            _socket_chardev("compare1", _inet(self.listen_addr, self.ports.compare), server=True, tls=self.tls),
            _socket_chardev("compare0", compare0, server=True),
            _socket_chardev("compare0-0", compare0, server=False),
            _socket_chardev("compare_out", compare_out, server=True),
            _socket_chardev("compare_out0", compare_out, server=False),
            ("object-add", {"qom-type": "filter-mirror", "id": MIRROR_ID, "netdev": self.netdev_id,
                            "queue": "tx", "outdev": "mirror0", "vnet_hdr_support": True, **place}),
            ("object-add", {"qom-type": "filter-redirector", "id": REDIRECT_IN_ID, "netdev": self.netdev_id,
                            "queue": "rx", "indev": "compare_out", "vnet_hdr_support": True, **place}),
            ("object-add", {"qom-type": "filter-redirector", "id": REDIRECT_OUT_ID, "netdev": self.netdev_id,
                            "queue": "rx", "outdev": "compare0", "vnet_hdr_support": True, **place}),
            ("object-add", {"qom-type": "iothread", "id": IOTHREAD_ID}),
            ("object-add", {"qom-type": "colo-compare", "id": COMPARE_ID,
                            "primary_in": "compare0-0", "secondary_in": "compare1",
                            "outdev": "compare_out0", "iothread": IOTHREAD_ID,
                            "vnet_hdr_support": True,
                            "compare_timeout": s.compare_timeout_ms,
                            "expired_scan_cycle": s.expired_scan_cycle_ms,
                            "max_queue_size": s.max_queue_size}),
        ]

    @staticmethod
    def mirror_on_commands() -> list[tuple[str, dict[str, Any]]]:
        """Turn on the mirror made with start_off, first thing in the switchover's pause. A QEMU
        without our patch 13 reads the tap on while the guest is stopped and runs the packet through
        the filters before queueing it for the NIC: a client packet passing a mirror still off
        reaches the primary's guest when it resumes in COLO, never the secondary's, and colo-compare
        holds the reply until the client retransmits (0.3 s instead of 0.1 s in half the live entries
        measured). First, the window is the controller's reaction to the pause, not the whole switch
        (the 10.0 series and a system QEMU lack the patch)."""
        return [("qom-set", {"path": f"/objects/{MIRROR_ID}", "property": "status", "value": "on"})]

    @staticmethod
    def switch_on_commands() -> list[tuple[str, dict[str, Any]]]:
        """Turn on the other filters made with start_off: send the guest's packets to compare, and
        what compare releases on to the tap."""
        return [("qom-set", {"path": f"/objects/{f}", "property": "status", "value": "on"})
                for f in (REDIRECT_IN_ID, REDIRECT_OUT_ID)]

    @staticmethod
    def remove_commands() -> list[tuple[str, dict[str, Any]]]:
        """In QEMU's documented failover order: compare, iothread, mirror, redirectors, chardevs."""
        objects = [COMPARE_ID, IOTHREAD_ID, MIRROR_ID, REDIRECT_IN_ID, REDIRECT_OUT_ID]
        return ([("object-del", {"id": o}) for o in objects]
                + [("chardev-remove", {"id": c}) for c in reversed(CHARDEV_IDS)])


SECONDARY_PROXY_OBJECTS = ("f2", "f1")       # removed at failover; the rewriter stays
SECONDARY_REWRITER = "rew0"
SECONDARY_PROXY_CHARDEVS = ("red1", "red0")
