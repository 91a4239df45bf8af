"""Where TLS goes on each stream between the two QEMUs (pure: the argv and QMP arguments built).

That the streams really run over TLS and refuse a stranger is shown with real QEMUs: the COLO
self-test with tls=True (tests/doctor) and the lab (tests/lab/test_tls_lab.py)."""

from __future__ import annotations

from pathlib import Path

from coserver.colo.argv import Node, primary_args, secondary_args
from coserver.colo.guest import BasicGuestHardware
from coserver.colo.proxy import PrimaryProxy
from coserver.colo.settings import ColoSettings, SyncPorts
from coserver.colo.tls import CLIENT_CREDS, PEER_AUTHZ, SERVER_CREDS, ColoTls

PKI = Path("/etc/coserver/pki,odd/cs2")


def _node(tls: ColoTls | None) -> Node:
    return Node("cs2", Path("/var/lib/coserver/x"), "10.0.9.2", "tap0", Path("/d.qcow2"), "52:54:00:00:00:01",
                tls=tls)


def _hw() -> BasicGuestHardware:
    return BasicGuestHardware(kernel=Path("/k"), initrd=Path("/i"), append="x")


def test_both_credentials_and_the_peers_authz_are_on_every_qemus_command_line() -> None:
    tls = ColoTls(PKI, "cs1")
    for args in (primary_args(_node(tls), _hw(), "tcg"),
                 secondary_args(_node(tls), _hw(), "tcg", primary_sync_addr="10.0.9.1", ports=SyncPorts(),
                                qemu_version=(10, 2))):
        objects = [args[i + 1] for i, a in enumerate(args) if a == "-object"]
        assert f"tls-creds-x509,id={SERVER_CREDS},dir=/etc/coserver/pki,,odd/cs2,endpoint=server,verify-peer=on" \
            in objects
        assert f"tls-creds-x509,id={CLIENT_CREDS},dir=/etc/coserver/pki,,odd/cs2,endpoint=client,verify-peer=on" \
            in objects
        assert f"authz-simple,id={PEER_AUTHZ},identity=CN=cs1" in objects


def test_the_secondarys_redirectors_dial_the_primary_over_tls() -> None:
    args = secondary_args(_node(ColoTls(PKI, "cs1")), _hw(), "tcg", primary_sync_addr="10.0.9.1",
                          ports=SyncPorts(), qemu_version=(10, 2))
    chardevs = [args[i + 1] for i, a in enumerate(args) if a == "-chardev" and "id=red" in args[i + 1]]
    assert len(chardevs) == 2 and all(c.endswith(f",tls-creds={CLIENT_CREDS}") for c in chardevs)


def test_the_primarys_proxy_listens_with_the_servers_credentials_and_the_peers_authz() -> None:
    proxy = PrimaryProxy("10.0.9.1", SyncPorts(), Path("/w"), ColoSettings(), tls=ColoTls.listener())
    listening = {args["id"]: args["backend"]["data"] for cmd, args in proxy.add_commands()
                 if cmd == "chardev-add" and args["backend"]["data"]["addr"]["type"] == "inet"}
    assert set(listening) == {"mirror0", "compare1"}
    for data in listening.values():
        assert data["tls-creds"] == SERVER_CREDS and data["tls-authz"] == PEER_AUTHZ


def test_without_tls_nothing_changes() -> None:
    plain = secondary_args(_node(None), _hw(), "tcg", primary_sync_addr="10.0.9.1", ports=SyncPorts(),
                           qemu_version=(10, 2))
    assert not any("tls" in a for a in plain)
    proxy = PrimaryProxy("10.0.9.1", SyncPorts(), Path("/w"), ColoSettings())
    assert not any("tls-creds" in str(args) for _, args in proxy.add_commands())


def test_a_dialer_names_the_address_it_dials() -> None:
    assert ColoTls.dialer("10.0.9.2") == {"tls-creds": CLIENT_CREDS, "tls-hostname": "10.0.9.2"}
    assert ColoTls.listener() == {"tls-creds": SERVER_CREDS, "tls-authz": PEER_AUTHZ}
    assert ColoTls(PKI, "cs1").peer_dn == "CN=cs1"
