"""TLS on every stream between the two QEMUs of a pair, and who may connect.

Four kinds of stream cross the replication link: the COLO migration (primary → secondary's
`-incoming`), NBD (the primary's initial mirror and its replication child → the secondary's
export, which is writable), and the two proxy chardevs (the secondary's redirectors → the
primary's mirror0/compare1). In plain TCP anyone who reaches the replication address can write
the replica's disk, be first at `-incoming`, or read the guest's memory and traffic.

Each QEMU gets two `tls-creds-x509` objects from one certificate directory (coserver.site.pki lays
it out for QEMU: ca-cert.pem, server-*.pem, client-*.pem), both with verify-peer=on, and one
`authz-simple` that admits only the peer CoServer's certificate (its DN, "CN=<peer>"). Every
listening side (the secondary's NBD server and incoming migration, the primary's chardev servers)
takes the server credentials and that authz; every connecting side takes the client credentials
and checks the listener's certificate against the address it dials (an IP SAN). A certificate
from another CA fails the handshake; one from this CA but another host fails the authz.

The objects are on every QEMU's command line (a secondary becomes a primary at failover and
keeps its process), so a role change needs no new object.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coserver.machine.qemuopts import qemu_opt_value

SERVER_CREDS = "cs-tls-server"
CLIENT_CREDS = "cs-tls-client"
PEER_AUTHZ = "cs-tls-peer"
#: What a host's certificate directory must hold: the names tls-creds-x509 reads (coserver.site.pki
#: writes them).
FILES = ("ca-cert.pem", "server-cert.pem", "server-key.pem", "client-cert.pem", "client-key.pem")


@dataclass(frozen=True)
class ColoTls:
    """This host's certificates and the one peer allowed to connect to its replication streams."""

    directory: Path     # this host's certificate directory
    peer: str           # the peer CoServer's name: the CN of its certificate

    @property
    def peer_dn(self) -> str:
        """The peer certificate's subject as QEMU's authz sees it (GnuTLS, RFC 4514)."""
        return f"CN={self.peer}"

    def missing(self) -> list[str]:
        """The files QEMU needs that the directory lacks (checked before a QEMU is started)."""
        return [f for f in FILES if not (self.directory / f).is_file()]

    def object_args(self) -> list[str]:
        """The QEMU argv objects: server and client credentials, the peer's authz."""
        d = qemu_opt_value(self.directory)
        return [
            "-object", f"tls-creds-x509,id={SERVER_CREDS},dir={d},endpoint=server,verify-peer=on",
            "-object", f"tls-creds-x509,id={CLIENT_CREDS},dir={d},endpoint=client,verify-peer=on",
            "-object", f"authz-simple,id={PEER_AUTHZ},identity={qemu_opt_value(self.peer_dn)}",
        ]

    @staticmethod
    def listener() -> dict[str, Any]:
        """QMP options of a listening side (NBD server, incoming migration, chardev server)."""
        return {"tls-creds": SERVER_CREDS, "tls-authz": PEER_AUTHZ}

    @staticmethod
    def dialer(address: str) -> dict[str, Any]:
        """QMP options of a connecting side: the listener's certificate must name `address`."""
        return {"tls-creds": CLIENT_CREDS, "tls-hostname": address}

    @staticmethod
    def chardev_client_opt() -> str:
        """The -chardev suboption of a connecting chardev (QEMU checks its `host` against the SANs)."""
        return f"tls-creds={CLIENT_CREDS}"
