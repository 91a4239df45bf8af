"""Only the pair's own hosts can touch the replication (issue 14), on the lab with TLS (its default).

Intruders are run where the replication network is reachable: inside a CoServer's namespace (a
process on the sync network without that host's certificate), and from the clients' namespace.
- The secondary's NBD export (writable: it is the replica's disk) refuses a client without a
  certificate, one from another CA (even one that calls itself the primary), and one from this CA
  but another host (the authz admits only the primary): their writes never land. The primary's
  own certificate is admitted (the control: the same probe can succeed).
- Plain connections to the migration and proxy ports get nothing and break nothing: the pair stays
  protected, checkpoints keep coming, the client writing all along loses nothing and never reconnects.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import time
from pathlib import Path

import pytest

from coserver.hardware.spec import load_spec
from coserver.images.guestclient import Writer, connect_journal, missing_acks
from coserver.lab.lab import Lab, LabOptions
from coserver.paths import qemu_install
from coserver.site import load_site
from coserver.site.pki import make_throwaway_pki
from coserver.site.ports import server_ports
from coserver.sys import netns

pytestmark = [pytest.mark.qemu, pytest.mark.netns, pytest.mark.slow]

PREFIX = f"t{os.getpid() % 10000}"


def _nbd(ns: str, addr: str, port: int, certs: Path | None, *args: str, write: Path | None = None) \
        -> subprocess.CompletedProcess[str]:
    """qemu-img as an NBD client from namespace `ns`: `info`, or (write) copy a file onto the export."""
    img = str(qemu_install().img)
    opts = f"driver=nbd,host={addr},port={port},export=parent0"
    obj: list[str] = []
    if certs is not None:
        obj = ["--object", f"tls-creds-x509,id=t0,dir={certs},endpoint=client"]
        opts += ",tls-creds=t0"
    if write is None:
        argv = [img, "info", *obj, "--image-opts", opts]
    else:   # onto the export from offset 0, as it is (no image created)
        argv = [img, "convert", "-n", *obj, "-f", "raw", "--target-image-opts", str(write), opts]
    return subprocess.run(netns.exec_argv(ns, argv), capture_output=True, text=True, timeout=60, check=False)


def _read_block(disk: Path, offset: int, size: int, tmp: Path) -> bytes:
    """`size` bytes at `offset` of the qcow2 `disk` (shared read: its QEMU holds the write lock)."""
    out = tmp / f"block-{secrets.token_hex(4)}"
    subprocess.run([str(qemu_install().img), "dd", "-U", "-f", "qcow2", "-O", "raw", f"bs={size}", "count=1",
                    f"skip={offset // size}", f"if={disk}", f"of={out}"], check=True, capture_output=True,
                   timeout=60)
    return out.read_bytes()


def _plain_poke(ns: str, addr: str, port: int) -> bytes:
    """A plain TCP client that connects (if it can), sends junk and reads what comes back in 2 s."""
    try:
        s = netns.socket_in(ns, addr, port, 3.0)
    except OSError:
        return b""
    with s:
        try:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n" + secrets.token_bytes(512))
            s.settimeout(2.0)
            return s.recv(4096)
        except (TimeoutError, socket.timeout, OSError):
            return b""


def test_only_the_peer_reaches_the_replica_and_strangers_break_nothing(tmp_path):
    lab = Lab(PREFIX, tmp_path / "lab")
    try:
        up = lab.up(LabOptions(prefix=PREFIX, workdir=tmp_path / "lab", checkpoint_ms=1000))
        assert up["state"] == "protected"
        primary, secondary = up["primary"], up["secondary"]
        site = load_site(lab.etc_dir("cs1") / "site.toml")
        ports = server_ports(site, up["ftserver"])
        p_addr, s_addr = site.coservers[primary].replication, site.coservers[secondary].replication
        on_sync_net = lab.net.ns(primary)   # a process on the sync network, without the host's key
        g = up["guest"]
        writer = Writer(g["client_netns"], g["address"], g["port"], interval=0.05, tag="tls", timeout=30).start()
        before = lab.status()["checkpoints"] or 0

        # ---- the NBD export: who may connect, and whose writes could land
        marker = tmp_path / "marker.raw"
        marker.write_bytes(secrets.token_bytes(4096))
        other_ca = make_throwaway_pki(tmp_path / "other-ca", {primary: (p_addr,)}, name="intruder")[primary]
        strangers = {"no certificate": None, "another CA's 'primary'": other_ca,
                     "this CA, another host": lab.pki_dir / secondary}
        for who, certs in strangers.items():
            info = _nbd(on_sync_net, s_addr, ports.nbd, certs)
            assert info.returncode != 0, f"{who}: the export answered: {info.stdout}"
            wrote = _nbd(on_sync_net, s_addr, ports.nbd, certs, write=marker)
            assert wrote.returncode != 0, f"{who}: a write to the replica's disk was accepted"
        control = _nbd(on_sync_net, s_addr, ports.nbd, lab.pki_dir / primary)
        assert control.returncode == 0 and "virtual size" in control.stdout, control.stderr
        from_clients = _nbd(g["client_netns"], s_addr, ports.nbd, None)
        assert from_clients.returncode != 0

        # ---- plain connections to the migration and proxy ports: nothing back, nothing broken
        for addr, port in ((s_addr, ports.migration), (p_addr, ports.mirror), (p_addr, ports.compare)):
            for ns in (on_sync_net, lab.net.ns(secondary), g["client_netns"]):
                assert _plain_poke(ns, addr, port) == b"", (ns, addr, port)
        time.sleep(5)
        st = lab.status()
        assert st["state"] == "protected" and st["primary"] == primary, st["state"]
        assert (st["checkpoints"] or 0) >= before + 3, (before, st["checkpoints"])
        res = writer.stop()
        assert res.reconnects == 0 and res.acks, res.errors[:3]
        with connect_journal(g["client_netns"], g["address"], g["port"]) as client:
            assert missing_acks(client, res.acked) == []

        # ---- the replica's disk holds none of the strangers' bytes (random: never there by chance)
        disk = _secondary_disk(lab, up["ftserver"], secondary)
        assert _read_block(disk, 0, 4096, tmp_path) != marker.read_bytes()
    finally:
        lab.down()


def _secondary_disk(lab: Lab, server: str, host: str) -> Path:
    spec = load_spec(lab.etc_dir(host) / "servers" / f"{server}.toml")
    return Path(spec.disks[0].paths[host].value)
