"""The site's X.509 certificates: one CA, one certificate per CoServer and per witness member.

Issue 14 puts TLS on every channel (QEMU's migration and NBD streams, etcd). QEMU's
tls-creds-x509 object reads one directory per endpoint, with fixed names, so the files are laid
out for it, one subdirectory per host (copy `<dir>/<host>/` to that host's `<dir>/<host>/`)::

    <dir>/ca/ca-key.pem           the CA's key (0600): stays where certificates are made
    <dir>/ca/ca-cert.pem          the CA's certificate
    <dir>/ca/ca-cert.old.pem      the previous CA's certificate, during a rotation only
    <dir>/<host>/ca-cert.pem      what the host trusts: the CA (and the previous CA while rotating)
    <dir>/<host>/server-cert.pem, server-key.pem, client-cert.pem, client-key.pem

Why it is made this way:

* the `cryptography` package, not `openssl` commands: no shelling out, no openssl.cnf, and every
  field (SANs, EKU) is set and tested in Python.
* ECDSA P-256: QEMU's GnuTLS and etcd's Go TLS accept it, and keys and handshakes are small.
  (Ed25519 is not accepted by every GnuTLS QEMU links against.)
* a CoServer's certificate names its replication and management addresses (IP SANs) and its
  host name (DNS SAN, CN), and has both serverAuth and clientAuth: each QEMU is the server of
  one stream and the client of another, so one certificate serves both (client = server files).
* a witness member is named by its endpoint's host (an IP SAN, or a DNS SAN for a name).
* rotation (--rotate-ca): a new CA issues every host certificate again, and each host's
  ca-cert.pem holds both CAs, so hosts with old and new certificates trust each other while the
  new files are copied around; `certs --force` afterwards issues from the current CA alone and
  drops the old CA from the bundles (README "Rotating the TLS certificates").
* check_pki_dir() is what a controller runs at start: a key file others can read is refused;
  check_key_file() is the same rule for one key file (the witness client's, coserver.controller.witness).
* issue_user_cert(): a client-only certificate whose CN is an etcd user (`root`, who sets up the
  witness's roles: etcd with --client-cert-auth takes the user name from the CN).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from coserver.colo.tls import FILES as QEMU_TLS_FILES
from coserver.site.errors import SiteError
from coserver.site.model import DEFAULT_PKI_DIR, Site
from coserver.sys.files import write_new

CA_DIR = "ca"
CA_KEY = "ca-key.pem"
CA_CERT = "ca-cert.pem"
OLD_CA_CERT = "ca-cert.old.pem"
#: Each host's directory is what QEMU's tls-creds-x509 reads (coserver.colo.tls, the one list).
HOST_FILES = QEMU_TLS_FILES
CA_DAYS = 3650
DEFAULT_DAYS = 825
#: Certificates start an hour early: a peer whose clock is a little behind still accepts them.
_BACKDATE = datetime.timedelta(hours=1)

Clock = Callable[[], datetime.datetime]


class PkiError(SiteError):
    """The pki directory or a file in it is unusable or unsafe."""


@dataclass(frozen=True)
class Endpoint:
    """One certificate to issue: the directory name, the CN and the SANs."""

    name: str
    dns: tuple[str, ...]
    ips: tuple[str, ...]


def endpoints(site: Site) -> list[Endpoint]:
    """Every CoServer (DNS SAN: its name; IP SANs: replication, management) and witness member."""
    out = [Endpoint(cs.name, (cs.name,), (cs.replication, cs.management)) for cs in site.coservers.values()]
    for host, _ in site.witness.hosts():
        try:
            ip = str(ipaddress.ip_address(host))
            out.append(Endpoint("witness-" + ip.replace(":", "-"), (), (ip,)))
        except ValueError:
            out.append(Endpoint("witness-" + host, (host,), ()))
    unique: dict[str, Endpoint] = {}
    for e in out:
        unique.setdefault(e.name, e)
    return list(unique.values())


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def make_ca(name: str, now: datetime.datetime) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A new self-signed CA for the site `name`, valid CA_DAYS, that may sign only end certificates."""
    key = _new_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"coserver site {name} CA "
                                                                  f"{now.strftime('%Y%m%d%H%M%S')}")])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE).not_valid_after(now + datetime.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return key, cert


def issue(ep: Endpoint, ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, now: datetime.datetime,
          days: int, *, client_only: bool = False) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A key and a certificate for `ep` signed by the CA: serverAuth and clientAuth, its SANs
    (client_only: clientAuth alone, for a user who never serves: an etcd user such as root)."""
    key = _new_key()
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in ep.dns]
    sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in ep.ips]
    not_after = min(now + datetime.timedelta(days=days), ca_cert.not_valid_after_utc)
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH] if client_only else [ExtendedKeyUsageOID.SERVER_AUTH,
                                                                    ExtendedKeyUsageOID.CLIENT_AUTH]
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ep.name if not ep.dns else ep.dns[0])]))
               .issuer_name(ca_cert.subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - _BACKDATE).not_valid_after(not_after)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                            data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                            crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
               .add_extension(x509.ExtendedKeyUsage(usages), critical=False))
    if sans:   # a user certificate names nobody's address: no SAN extension at all (an empty one is invalid)
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = (builder
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return key, cert


# -- files ---------------------------------------------------------------------------------------

def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _pem_certs(certs: Iterable[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def _safe_dir(path: Path, create: bool) -> None:
    """`path` is a real directory (not a symlink), not writable by others; made 0700 if missing."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        if not create:
            raise PkiError(f"pki {path}: missing") from None
        try:
            path.mkdir(mode=0o700, parents=True)
        except OSError as exc:
            raise PkiError(f"pki {path}: cannot make it: {exc.strerror}") from None
        os.chmod(path, 0o700)   # whatever the umask
        return
    except OSError as exc:
        raise PkiError(f"pki {path}: cannot stat: {exc.strerror}") from None
    if stat.S_ISLNK(st.st_mode):
        raise PkiError(f"pki {path}: is a symlink; refusing to follow it (give the real directory)")
    if not stat.S_ISDIR(st.st_mode):
        raise PkiError(f"pki {path}: not a directory")
    if st.st_mode & 0o002:
        raise PkiError(f"pki {path}: mode {stat.S_IMODE(st.st_mode):04o} is world-writable; refusing it "
                       f"(anyone could swap the keys: chmod 700 {path})")


def _write(path: Path, data: bytes, mode: int, replace: bool) -> None:
    """Write `data` 0600/0644: exclusively, or (replace) through a new file renamed over the old."""
    try:
        write_new(path, data, mode=mode, replace=replace)
    except FileExistsError:
        raise PkiError(f"pki {path}: already exists; not overwritten (--force replaces it)") from None
    except OSError as exc:
        raise PkiError(f"pki {path}: cannot write: {exc.strerror}") from None


def _load_ca(ca_dir: Path) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    try:
        raw_key = (ca_dir / CA_KEY).read_bytes()
        raw_cert = (ca_dir / CA_CERT).read_bytes()
    except OSError as exc:
        raise PkiError(f"pki {ca_dir}: cannot read the CA ({exc.filename}: {exc.strerror})") from None
    try:
        key = serialization.load_pem_private_key(raw_key, password=None)
        cert = x509.load_pem_x509_certificate(raw_cert)
    except ValueError as exc:
        raise PkiError(f"pki {ca_dir}: the CA files are unreadable: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError(f"pki {ca_dir / CA_KEY}: not an EC key (coserver's CA is ECDSA P-256)")
    if key.public_key().public_numbers() != cert.public_key().public_numbers():   # type: ignore[union-attr]
        raise PkiError(f"pki {ca_dir}: {CA_KEY} is not the key of {CA_CERT}")
    return key, cert


def _old_ca(ca_dir: Path) -> x509.Certificate | None:
    try:
        return x509.load_pem_x509_certificate((ca_dir / OLD_CA_CERT).read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise PkiError(f"pki {ca_dir / OLD_CA_CERT}: unreadable: {exc}") from None


def make_site_certs(site: Site, pki_dir: Path = DEFAULT_PKI_DIR, *, force: bool = False, rotate_ca: bool = False,
                    days: int = DEFAULT_DAYS, clock: Clock = _utcnow) -> list[Path]:
    """Write the CA (made if missing, or anew with rotate_ca) and every endpoint's files; the paths
    written. Existing host files are refused unless force or rotate_ca; an existing CA is kept
    (only rotate_ca replaces it, keeping its certificate trusted until the next `--force` run)."""
    if not 1 <= days <= CA_DAYS:
        raise PkiError(f"pki: --days must be 1 to {CA_DAYS}, got {days}")
    pki_dir = Path(os.path.abspath(pki_dir))
    _safe_dir(pki_dir, create=True)
    ca_dir = pki_dir / CA_DIR
    _safe_dir(ca_dir, create=True)
    eps = endpoints(site)
    replace = force or rotate_ca
    if not replace:
        existing = [p for e in eps for p in (pki_dir / e.name / f for f in HOST_FILES) if os.path.lexists(p)]
        if existing:
            raise PkiError(f"pki {existing[0]}: already exists ({len(existing)} host files do); refusing to "
                           "overwrite: --force issues them again from the same CA, --rotate-ca from a new one")
    now = clock()
    written: list[Path] = []
    have_ca = os.path.lexists(ca_dir / CA_KEY) or os.path.lexists(ca_dir / CA_CERT)
    if rotate_ca:
        if not have_ca:
            raise PkiError(f"pki {ca_dir}: no CA to rotate; run `coserver site certs` first")
        _, old = _load_ca(ca_dir)
        ca_key, ca_cert = make_ca(site.name, now)
        _write(ca_dir / OLD_CA_CERT, _pem_certs([old]), 0o644, replace=True)
        _write(ca_dir / CA_KEY, _pem_key(ca_key), 0o600, replace=True)
        _write(ca_dir / CA_CERT, _pem_certs([ca_cert]), 0o644, replace=True)
        written += [ca_dir / OLD_CA_CERT, ca_dir / CA_KEY, ca_dir / CA_CERT]
        trusted = [ca_cert, old]
    elif have_ca:
        ca_key, ca_cert = _load_ca(ca_dir)
        trusted = [ca_cert]
        if force and os.path.lexists(ca_dir / OLD_CA_CERT):   # the rotation is over: trust the new CA alone
            (ca_dir / OLD_CA_CERT).unlink()
    else:
        ca_key, ca_cert = make_ca(site.name, now)
        _write(ca_dir / CA_KEY, _pem_key(ca_key), 0o600, replace=False)
        _write(ca_dir / CA_CERT, _pem_certs([ca_cert]), 0o644, replace=False)
        written += [ca_dir / CA_KEY, ca_dir / CA_CERT]
        trusted = [ca_cert]
    for ep in eps:
        written += _write_host_dir(pki_dir / ep.name, ep, ca_key, ca_cert, trusted, now, days, replace)
    return written


def _write_host_dir(d: Path, ep: Endpoint, ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate,
                    trusted: list[x509.Certificate], now: datetime.datetime, days: int, replace: bool) -> list[Path]:
    """Issue `ep`'s certificate and write its directory in QEMU's layout (HOST_FILES)."""
    _safe_dir(d, create=True)
    key, cert = issue(ep, ca_key, ca_cert, now, days)
    files = {"ca-cert.pem": (_pem_certs(trusted), 0o644),
             "server-cert.pem": (_pem_certs([cert]), 0o644), "server-key.pem": (_pem_key(key), 0o600),
             "client-cert.pem": (_pem_certs([cert]), 0o644), "client-key.pem": (_pem_key(key), 0o600)}
    for name, (data, mode) in files.items():
        _write(d / name, data, mode, replace=replace)
    return [d / name for name in files]


def make_throwaway_pki(directory: Path, hosts: dict[str, tuple[str, ...]], name: str = "throwaway",
                       days: int = 2) -> dict[str, Path]:
    """A fresh CA (its key kept nowhere) and one directory per host (IP SANs `hosts[host]`): for the
    COLO self-test and the benchmark, which need TLS between two QEMUs and no site. The paths."""
    _safe_dir(directory, create=True)
    now = _utcnow()
    ca_key, ca_cert = make_ca(name, now)
    return {host: _write_host_dir(directory / host, Endpoint(host, (host,), ips), ca_key, ca_cert, [ca_cert],
                                  now, days, replace=False)[0].parent
            for host, ips in hosts.items()}


#: A user certificate's name: an etcd user (etcd takes the user from the certificate's CN).
USER_NAME = r"[a-z0-9][a-z0-9_-]{0,62}"
#: Where issue_user_cert() writes: a '.' no CoServer's or witness member's directory name has at that place.
USER_DIR = "user.{user}"
USER_FILES = ("ca-cert.pem", "client-cert.pem", "client-key.pem")


def issue_user_cert(pki_dir: Path, user: str, *, force: bool = False, days: int = DEFAULT_DAYS,
                    clock: Clock = _utcnow) -> Path:
    """A client certificate (CN=`user`, clientAuth only, no SANs) from the site's existing CA, for an
    etcd user: with --client-cert-auth etcd takes the user name from the CN, so `root` (who sets up
    the witness's roles and users) needs one. Written to <pki_dir>/user.<user>/ (ca-cert.pem: what the
    user trusts, with the previous CA while rotating; client-cert.pem; client-key.pem 0600); returns
    that directory. Existing files are refused unless force."""
    if not re.fullmatch(USER_NAME, user):
        raise PkiError(f"pki: user name {user!r} must be 1 to 63 of [a-z0-9_-], starting with a letter or digit")
    if not 1 <= days <= CA_DAYS:
        raise PkiError(f"pki: --days must be 1 to {CA_DAYS}, got {days}")
    pki_dir = Path(os.path.abspath(pki_dir))
    _safe_dir(pki_dir, create=False)
    ca_dir = pki_dir / CA_DIR
    ca_key, ca_cert = _load_ca(ca_dir)
    old = _old_ca(ca_dir)
    d = pki_dir / USER_DIR.format(user=user)
    if not force:
        existing = [d / f for f in USER_FILES if os.path.lexists(d / f)]
        if existing:
            raise PkiError(f"pki {existing[0]}: already exists; refusing to overwrite (--force issues it again)")
    _safe_dir(d, create=True)
    key, cert = issue(Endpoint(user, (), ()), ca_key, ca_cert, clock(), days, client_only=True)
    files = {"ca-cert.pem": (_pem_certs([ca_cert, *([old] if old is not None else [])]), 0o644),
             "client-cert.pem": (_pem_certs([cert]), 0o644), "client-key.pem": (_pem_key(key), 0o600)}
    for name, (data, mode) in files.items():
        _write(d / name, data, mode, replace=force)
    return d


# -- the controller's start-up check -------------------------------------------------------------

def check_pki_dir(path: Path, *, uid: int | None = None) -> None:
    """Refuse (one line naming each file and its problem) a pki directory a controller must not use:
    a symlink or world-writable directory, a file or directory owned by neither root nor `uid`
    (default: ours), a key file (*-key.pem) others may read or write, a missing directory."""
    uid = os.geteuid() if uid is None else uid
    problems: list[str] = []
    path = Path(path)
    try:
        _safe_dir(path, create=False)
    except PkiError as exc:
        raise PkiError(str(exc)) from None

    def look(p: Path, depth: int) -> None:
        try:
            st = os.lstat(p)
        except OSError as exc:
            problems.append(f"{p}: cannot stat: {exc.strerror}")
            return
        mode = stat.S_IMODE(st.st_mode)
        if stat.S_ISLNK(st.st_mode):
            problems.append(f"{p}: a symlink")
            return
        if st.st_uid not in (0, uid):
            problems.append(f"{p}: owned by uid {st.st_uid}, not root or uid {uid}")
        if stat.S_ISDIR(st.st_mode):
            if mode & 0o022:
                problems.append(f"{p}: directory mode {mode:04o} lets others write (chmod 700 {p})")
            if depth < 2:
                for child in sorted(p.iterdir()):
                    look(child, depth + 1)
        elif not stat.S_ISREG(st.st_mode):
            problems.append(f"{p}: not a regular file")
        elif p.name.endswith("-key.pem") and mode != 0o600:
            problems.append(f"{p}: key mode {mode:04o}, must be 0600 (chmod 600 {p})")
        elif mode & 0o022:
            problems.append(f"{p}: mode {mode:04o} lets others write (chmod 644 {p})")

    look(path, 0)
    if problems:
        raise PkiError(f"pki {path}: unsafe: " + "; ".join(problems))


def check_key_file(path: Path, *, uid: int | None = None) -> None:
    """Refuse (one line) a private key file a controller must not use: not a regular file, owned by
    neither root nor `uid` (default: ours), or with any group/other permission (the key is ours alone).
    A symlink is followed: what is checked is the file that would be read."""
    uid = os.geteuid() if uid is None else uid
    try:
        st = os.stat(path)
    except OSError as exc:
        raise PkiError(f"key {path}: cannot read: {exc.strerror}") from None
    mode = stat.S_IMODE(st.st_mode)
    if not stat.S_ISREG(st.st_mode):
        raise PkiError(f"key {path}: not a regular file")
    if st.st_uid not in (0, uid):
        raise PkiError(f"key {path}: owned by uid {st.st_uid}, not root or uid {uid}; refusing it")
    if mode & 0o077:
        raise PkiError(f"key {path}: mode {mode:04o} lets group or others read it; refusing it (chmod 600 {path})")
