"""`coserver site certs` and the pki directory check: certificates verify against the site CA (with
cryptography's own path validation), keys are 0600, unsafe directories are refused, a CA rotation
trusts both CAs. No QEMU, no openssl."""

from __future__ import annotations

import datetime
import ipaddress
import os
import stat
from pathlib import Path

import pytest

# a venv made before cryptography became a dependency (`make venv` installs it): skip, not fail
x509 = pytest.importorskip("cryptography.x509")

from click.testing import CliRunner  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.x509 import verification  # noqa: E402
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID  # noqa: E402

from coserver.cli.main import main  # noqa: E402
from coserver.site import load_site  # noqa: E402
from coserver.site.pki import HOST_FILES, PkiError, check_pki_dir, endpoints, make_site_certs  # noqa: E402

from .conftest import EXAMPLE_SITE  # noqa: E402

HOSTS = ["cs1", "cs2", "witness-198.51.100.21", "witness-198.51.100.22", "witness-198.51.100.23"]


def _certs(path: Path) -> list:
    return x509.load_pem_x509_certificates(path.read_bytes())


def _verify(leaf, trusted: list, ip: str | None = None, dns: str | None = None) -> None:
    """Path validation as a TLS client checks a server (by the address it dialled) and as a server
    checks a client."""
    store = verification.Store(trusted)
    now = datetime.datetime.now(datetime.timezone.utc)
    subject = verification.DNSName(dns) if dns else verification.IPAddress(ipaddress.ip_address(ip))
    verification.PolicyBuilder().store(store).time(now).build_server_verifier(subject).verify(leaf, [])
    verification.PolicyBuilder().store(store).time(now).build_client_verifier().verify(leaf, [])


def test_every_host_gets_qemus_files_signed_by_the_site_ca(tmp_path: Path) -> None:
    site = load_site(EXAMPLE_SITE)
    pki = tmp_path / "pki"
    make_site_certs(site, pki)
    assert sorted(p.name for p in pki.iterdir()) == sorted(["ca", *HOSTS])
    assert stat.S_IMODE(os.stat(pki).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(pki / "ca" / "ca-key.pem").st_mode) == 0o600
    ca = _certs(pki / "ca" / "ca-cert.pem")
    assert len(ca) == 1 and ca[0].extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    for host in HOSTS:
        d = pki / host
        assert sorted(p.name for p in d.iterdir()) == sorted(HOST_FILES)
        assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
        for key in ("server-key.pem", "client-key.pem"):
            assert stat.S_IMODE(os.stat(d / key).st_mode) == 0o600
        assert _certs(d / "ca-cert.pem") == ca
        (leaf,) = _certs(d / "server-cert.pem")
        assert (d / "client-cert.pem").read_bytes() == (d / "server-cert.pem").read_bytes()
        eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        ips = [str(a) for a in san.get_values_for_type(x509.IPAddress)]
        if host.startswith("cs"):
            cs = site.coservers[host]
            assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == host
            assert san.get_values_for_type(x509.DNSName) == [host]
            assert sorted(ips) == sorted([cs.replication, cs.management])
            _verify(leaf, ca, ip=cs.replication)
            _verify(leaf, ca, ip=cs.management)
            _verify(leaf, ca, dns=host)
        else:
            assert ips == [host.removeprefix("witness-")]
            _verify(leaf, ca, ip=ips[0])
        # the key on disk is the certificate's
        key = serialization.load_pem_private_key((d / "server-key.pem").read_bytes(), None)
        assert key.public_key().public_numbers() == leaf.public_key().public_numbers()
    other = load_site(EXAMPLE_SITE)
    (leaf,) = _certs(pki / "cs1" / "server-cert.pem")
    with pytest.raises(verification.VerificationError):   # cs1's certificate does not name cs2's address
        _verify(leaf, ca, ip=other.coservers["cs2"].replication)


def test_existing_files_are_refused_in_one_line_unless_force_which_keeps_the_ca(tmp_path: Path) -> None:
    site = load_site(EXAMPLE_SITE)
    pki = tmp_path / "pki"
    make_site_certs(site, pki)
    ca_before = (pki / "ca" / "ca-cert.pem").read_bytes()
    leaf_before = (pki / "cs1" / "server-cert.pem").read_bytes()
    with pytest.raises(PkiError) as ei:
        make_site_certs(site, pki)
    assert "already exists" in str(ei.value) and "--force" in str(ei.value) and "\n" not in str(ei.value)
    make_site_certs(site, pki, force=True)
    assert (pki / "ca" / "ca-cert.pem").read_bytes() == ca_before
    assert (pki / "cs1" / "server-cert.pem").read_bytes() != leaf_before
    assert stat.S_IMODE(os.stat(pki / "cs1" / "server-key.pem").st_mode) == 0o600


def test_unsafe_pki_directories_are_refused(tmp_path: Path) -> None:
    site = load_site(EXAMPLE_SITE)
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(PkiError, match="symlink"):
        make_site_certs(site, link)
    real.chmod(0o777)
    with pytest.raises(PkiError, match="world-writable") as ei:
        make_site_certs(site, real)
    assert "\n" not in str(ei.value)
    with pytest.raises(PkiError, match="--days"):
        make_site_certs(site, tmp_path / "x", days=0)


def test_rotation_bundles_both_cas_and_new_certs_verify_against_the_bundle(tmp_path: Path) -> None:
    site = load_site(EXAMPLE_SITE)
    pki = tmp_path / "pki"
    with pytest.raises(PkiError, match="no CA to rotate"):
        make_site_certs(site, pki, rotate_ca=True)
    make_site_certs(site, pki)
    (old_ca,) = _certs(pki / "ca" / "ca-cert.pem")
    (old_leaf,) = _certs(pki / "cs2" / "server-cert.pem")
    make_site_certs(site, pki, rotate_ca=True)
    (new_ca,) = _certs(pki / "ca" / "ca-cert.pem")
    assert new_ca != old_ca and _certs(pki / "ca" / "ca-cert.old.pem") == [old_ca]
    bundle = _certs(pki / "cs1" / "ca-cert.pem")
    assert bundle == [new_ca, old_ca]
    (new_leaf,) = _certs(pki / "cs1" / "server-cert.pem")
    assert new_leaf.issuer == new_ca.subject
    cs1 = site.coservers["cs1"]
    _verify(new_leaf, bundle, ip=cs1.replication)                 # a new host certificate: trusted
    _verify(old_leaf, bundle, ip=site.coservers["cs2"].replication)   # a host not yet updated: still trusted
    with pytest.raises(verification.VerificationError):
        _verify(new_leaf, [old_ca], ip=cs1.replication)         # the old CA alone does not trust the new one
    # The rotation ends: the same (new) CA issues again and the bundles hold it alone.
    make_site_certs(site, pki, force=True)
    assert _certs(pki / "cs1" / "ca-cert.pem") == [new_ca] and not (pki / "ca" / "ca-cert.old.pem").exists()


def test_check_pki_dir_names_each_unsafe_file(tmp_path: Path) -> None:
    site = load_site(EXAMPLE_SITE)
    pki = tmp_path / "pki"
    make_site_certs(site, pki)
    check_pki_dir(pki)
    check_pki_dir(pki / "cs1")
    (pki / "cs1" / "server-key.pem").chmod(0o640)
    (pki / "cs2").chmod(0o777)
    with pytest.raises(PkiError) as ei:
        check_pki_dir(pki)
    msg = str(ei.value)
    assert "\n" not in msg
    assert f"{pki / 'cs1' / 'server-key.pem'}: key mode 0640, must be 0600" in msg
    assert f"{pki / 'cs2'}: directory mode 0777" in msg
    victim = pki / "cs1" / "ca-cert.pem"
    uid = None
    if os.geteuid() == 0:
        os.chown(victim, 12345, -1)          # someone else's file
    else:
        uid = os.geteuid() + 12345           # as if run by another user: our files are not its own
    with pytest.raises(PkiError, match=f"{victim}: owned by uid [0-9]+, not root or uid"):
        check_pki_dir(pki / "cs1", uid=uid)
    with pytest.raises(PkiError, match="missing"):
        check_pki_dir(tmp_path / "nowhere")


def test_endpoints_name_a_witness_by_its_host() -> None:
    site = load_site(EXAMPLE_SITE)
    assert [e.name for e in endpoints(site)] == HOSTS


def test_cli_certs_writes_refuses_and_rotates(tmp_path: Path) -> None:
    pki = tmp_path / "pki"

    def run(*args: str):
        res = CliRunner().invoke(main, ["site", "certs", "--site", str(EXAMPLE_SITE), "--dir", str(pki), *args])
        assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
        return res.exit_code, res.stdout, res.stderr

    code, out, err = run()
    assert code == 0 and "cs1, cs2, witness-198.51.100.21" in out, err
    code, out, err = run()
    assert code == 1 and err.startswith("coserver: error: pki ") and err.count("\n") == 1
    code, out, err = run("--rotate-ca")
    assert code == 0 and "--force" in out
    code, out, err = run("--rotate-ca", "--force")
    assert code == 1 and "exclude" in err
    code, out, err = run("--user", "root")
    assert code == 0 and f"wrote {pki}/user.root/" in out and "CN=root" in out, err
    code, out, err = run("--user", "root")
    assert code == 1 and "already exists" in err and err.count("\n") == 1
    code, out, err = run("--user", "root", "--force")
    assert code == 0, err


def test_a_user_certificate_for_etcd_root(tmp_path: Path) -> None:
    """issue_user_cert: CN = the etcd user, clientAuth only, no SANs, from the site CA (existing files
    refused without force; a rotation's user trusts both CAs); a bad name or no CA is one line."""
    from coserver.site.pki import issue_user_cert

    pki = tmp_path / "pki"
    with pytest.raises(PkiError, match="missing"):
        issue_user_cert(pki, "root")
    make_site_certs(load_site(EXAMPLE_SITE), pki)
    d = issue_user_cert(pki, "root")
    assert d == pki / "user.root" and sorted(p.name for p in d.iterdir()) == ["ca-cert.pem", "client-cert.pem",
                                                                              "client-key.pem"]
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700 and stat.S_IMODE(os.stat(d / "client-key.pem").st_mode) == 0o600
    ca = _certs(pki / "ca" / "ca-cert.pem")
    (leaf,) = _certs(d / "client-cert.pem")
    assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "root"
    assert list(leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH]
    with pytest.raises(x509.ExtensionNotFound):
        leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert leaf.verify_directly_issued_by(ca[0]) is None
    key = serialization.load_pem_private_key((d / "client-key.pem").read_bytes(), None)
    assert key.public_key().public_numbers() == leaf.public_key().public_numbers()
    with pytest.raises(PkiError, match="already exists"):
        issue_user_cert(pki, "root")
    make_site_certs(load_site(EXAMPLE_SITE), pki, rotate_ca=True)
    issue_user_cert(pki, "root", force=True)
    assert len(_certs(d / "ca-cert.pem")) == 2          # the new CA and the old one while rotating
    for bad in ("", "Root", "a/b", "../x", "x" * 64):
        with pytest.raises(PkiError, match="user name"):
            issue_user_cert(pki, bad)


def test_check_key_file(tmp_path: Path) -> None:
    from coserver.site.pki import check_key_file

    key = tmp_path / "k.pem"
    key.write_text("x")
    key.chmod(0o600)
    check_key_file(key)
    key.chmod(0o640)
    with pytest.raises(PkiError, match=r"mode 0640 lets group or others read it; refusing it \(chmod 600 "):
        check_key_file(key)
    key.chmod(0o600)
    if os.geteuid() == 0:   # someone else's key (only root can give a file away)
        os.chown(key, 4242, -1)
        with pytest.raises(PkiError, match="owned by uid 4242, not root or uid 0"):
            check_key_file(key)
    with pytest.raises(PkiError, match="cannot read: No such file"):
        check_key_file(tmp_path / "missing.pem")
    with pytest.raises(PkiError, match="not a regular file"):
        check_key_file(tmp_path)
