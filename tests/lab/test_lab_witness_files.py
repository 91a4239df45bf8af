"""The lab's witness, the parts that need no namespace: its site file (TLS with {host} paths, or
insecure = true), the certificates `lab up` makes and copies into each host's /etc/coserver, and
etcd's argv. The running lab's witness is tested in tests/lab/test_site_lab.py (netns)."""

from __future__ import annotations

import ipaddress
import os
import stat
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import NameOID

from coserver.controller.witness import Witness, WitnessTls
from coserver.lab import sitefile
from coserver.lab import witness as labwitness
from coserver.lab.net import HOSTS, WITNESS_ADDRESS, LabNet
from coserver.site import load_site

NET = LabNet("tw1")


def _site(tmp_path: Path, insecure: bool) -> Path:
    path = tmp_path / "site.toml"
    path.write_text(sitefile.site_text(NET, checkpoint_ms=1000, reprotect="auto", accel="tcg", boot_grace_s=15,
                                       stop_timeout_s=30, sync_speed_mib_s=0, insecure=insecure))
    return path


def test_the_lab_site_file_names_each_hosts_certificate_or_says_insecure(tmp_path: Path) -> None:
    site = load_site(_site(tmp_path, insecure=False))
    assert site.name == "lab-tw1" and not site.witness.insecure
    assert site.witness_tls("cs2") == (Path("/etc/coserver/pki/cs2/ca-cert.pem"),
                                       Path("/etc/coserver/pki/cs2/client-cert.pem"),
                                       Path("/etc/coserver/pki/cs2/client-key.pem"))
    plain = load_site(_site(tmp_path, insecure=True))
    assert plain.witness.insecure and plain.witness_tls("cs1") is None


def test_lab_certificates_each_host_its_own_copy(tmp_path: Path) -> None:
    site = load_site(_site(tmp_path, insecure=False))
    pki_dir = tmp_path / "pki"
    server, admin = labwitness.make_pki(site, pki_dir, WITNESS_ADDRESS)
    assert stat.S_IMODE(os.stat(pki_dir).st_mode) == 0o700
    assert server.cert == pki_dir / f"witness-{WITNESS_ADDRESS}" / "server-cert.pem"
    member = x509.load_pem_x509_certificate(server.cert.read_bytes())
    san = member.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address(WITNESS_ADDRESS)]
    root = x509.load_pem_x509_certificate(admin.cert.read_bytes())
    assert root.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "root"
    for host in HOSTS:
        etc = tmp_path / host / "etc"
        etc.mkdir(parents=True)
        copy = labwitness.install_host_pki(pki_dir, host, etc)
        assert copy == etc / "pki" / host
        assert stat.S_IMODE(os.stat(etc / "pki").st_mode) == stat.S_IMODE(os.stat(copy).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(copy / "client-key.pem").st_mode) == 0o600
        assert (copy / "client-cert.pem").read_bytes() == (pki_dir / host / "client-cert.pem").read_bytes()
        # what the host's controller makes of them: its etcd user is its name
        w = Witness("journal", site=site.name, host=WITNESS_ADDRESS, tls=WitnessTls(
            copy / "ca-cert.pem", copy / "client-cert.pem", copy / "client-key.pem"))
        assert w.user == host and w.owner_key == "/coserver/lab-tw1/journal/owner"
    # `lab up` again: the CA is kept, the hosts' files are issued again and copied over the old ones
    ca = (pki_dir / "ca" / "ca-cert.pem").read_bytes()
    labwitness.make_pki(site, pki_dir, WITNESS_ADDRESS)
    labwitness.install_host_pki(pki_dir, "cs1", tmp_path / "cs1" / "etc")
    assert (pki_dir / "ca" / "ca-cert.pem").read_bytes() == ca


def test_etcd_argv_tls_or_plain(tmp_path: Path) -> None:
    tls = labwitness.ServerTls(tmp_path / "s.pem", tmp_path / "s-key.pem", tmp_path / "ca.pem")
    argv = labwitness.etcd_argv(name="witness", data_dir=tmp_path / "d", address=WITNESS_ADDRESS, port=2379,
                                peer_url="http://127.0.0.1:2380", tls=tls)
    url = f"https://{WITNESS_ADDRESS}:2379"
    assert argv[argv.index("--listen-client-urls") + 1] == argv[argv.index("--advertise-client-urls") + 1] == url
    assert argv[-7:] == ["--cert-file", str(tls.cert), "--key-file", str(tls.key), "--trusted-ca-file", str(tls.ca),
                         "--client-cert-auth"]
    plain = labwitness.etcd_argv(name="witness", data_dir=tmp_path / "d", address=WITNESS_ADDRESS, port=2379,
                                 peer_url="http://127.0.0.1:2380", tls=None)
    assert f"http://{WITNESS_ADDRESS}:2379" in plain and "--client-cert-auth" not in plain
