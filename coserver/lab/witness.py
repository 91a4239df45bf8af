"""The lab's witness: etcd over TLS, client certificates required, each site's CoServers in a role of its own.

`lab up` sets the witness up as a real site's operator does once (README "The witness over TLS"):

1. the site's certificates (coserver.site.pki.make_site_certs: the CA, each CoServer's certificate
   with CN = its name, the witness member's server certificate) and an admin certificate with
   CN = root (issue_user_cert), in the lab's pki directory (0700); each host gets its own directory
   in its /etc/coserver/pki/<host>/, where the site file's {host} paths point;
2. etcd with --cert-file/--key-file (the member's certificate), --trusted-ca-file (the site CA) and
   --client-cert-auth on https:// (etcd_argv): no certificate of the site's CA, no connection;
3. with etcdctl as root (setup_rbac): the root user, the role coserver-<site> with readwrite on
   /coserver/<site>/, one user per CoServer (its certificate's CN) granted that role, then
   `auth enable`: from then on a CoServer may touch only its own site's keys.

`lab up --insecure` starts today's plain-http etcd without any of this (and the site file says
`insecure = true`). The tests (tests/controller/test_witness_tls.py) run these same functions
against an etcd on loopback.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from coserver.errors import CoserverError
from coserver.site import pki
from coserver.site.model import Site
from coserver.site.witnessauth import ADMIN_USER, admin_commands, enable_command, site_commands
from coserver.sys.files import write_new
from coserver.sys.netns import exec_argv
from coserver.sys.run import run

ETCD = "/usr/bin/etcd"
ETCDCTL = "/usr/bin/etcdctl"
#: The lab's certificates: <workdir>/pki (the CA's key stays there, as on a real site's admin machine).
PKI_DIR = "pki"
#: Each host's copy of its own directory: <etc>/pki/<host>/ (its /etc/coserver/pki/<host>/).
HOST_PKI = "pki"


class WitnessSetupError(CoserverError):
    """The lab's witness could not be given its certificates, started, or set up (one line: the step)."""


@dataclass(frozen=True)
class ClientTls:
    """A client's TLS files (etcdctl's --cacert, --cert, --key), as pki lays them out in one directory."""

    ca: Path
    cert: Path
    key: Path

    @classmethod
    def of_dir(cls, d: Path) -> ClientTls:
        return cls(d / "ca-cert.pem", d / "client-cert.pem", d / "client-key.pem")


@dataclass(frozen=True)
class ServerTls:
    """etcd's TLS files: its own certificate and key, and the CA its clients' certificates must come from."""

    cert: Path
    key: Path
    ca: Path


def member_dir(site: Site, pki_dir: Path, address: str) -> Path:
    """The pki directory of the witness member at `address` (one of the site's witness endpoints)."""
    for ep in pki.endpoints(site):
        if ep.name.startswith("witness-") and address in (*ep.ips, *ep.dns):
            return pki_dir / ep.name
    raise WitnessSetupError(f"site {site.file}: no witness endpoint at {address}")


def make_pki(site: Site, pki_dir: Path, address: str) -> tuple[ServerTls, ClientTls]:
    """The site's certificates (an existing CA is kept, every host's files issued again) and root's;
    returns the witness member's server files at `address` and root's client files."""
    try:
        pki.make_site_certs(site, pki_dir, force=True)
        admin = pki.issue_user_cert(pki_dir, ADMIN_USER, force=True)
    except CoserverError as exc:
        raise WitnessSetupError(f"witness certificates: {exc}") from None
    member = member_dir(site, pki_dir, address)
    return (ServerTls(member / "server-cert.pem", member / "server-key.pem", member / "ca-cert.pem"),
            ClientTls.of_dir(admin))


def server_tls(site: Site, pki_dir: Path, address: str) -> ServerTls:
    """The member's files make_pki() wrote (for a restart: witness-up)."""
    member = member_dir(site, pki_dir, address)
    return ServerTls(member / "server-cert.pem", member / "server-key.pem", member / "ca-cert.pem")


def admin_tls(pki_dir: Path) -> ClientTls:
    """root's files make_pki() wrote."""
    return ClientTls.of_dir(Path(os.path.abspath(pki_dir)) / pki.USER_DIR.format(user=ADMIN_USER))


def install_host_pki(pki_dir: Path, host: str, etc_dir: Path) -> Path:
    """Copy `host`'s directory into its /etc/coserver/pki/<host>/ (directories 0700, keys 0600), as an
    operator copies it with `scp -rp`; returns the copy."""
    src = pki_dir / host
    dest = etc_dir / HOST_PKI / host
    try:
        for d in (etc_dir / HOST_PKI, dest):
            d.mkdir(mode=0o700, exist_ok=True)
            os.chmod(d, 0o700)
        for name in pki.HOST_FILES:
            data = (src / name).read_bytes()
            write_new(dest / name, data, mode=0o600 if name.endswith("-key.pem") else 0o644, replace=True)
    except OSError as exc:
        raise WitnessSetupError(f"witness certificates: copying {src} to {dest}: {exc.strerror or exc}") from None
    return dest


def client_url(address: str, port: int, tls: bool) -> str:
    return f"{'https' if tls else 'http'}://{address}:{port}"


def etcd_argv(*, name: str, data_dir: Path, address: str, port: int, peer_url: str, tls: ServerTls | None,
              etcd: str = ETCD, log_level: str = "warn") -> list[str]:
    """One etcd member serving clients at address:port: https with client certificates required when
    `tls`, else plain http (the lab's --insecure)."""
    url = client_url(address, port, tls is not None)
    argv = [etcd, "--name", name, "--data-dir", str(data_dir),
            "--listen-client-urls", url, "--advertise-client-urls", url,
            "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
            "--initial-cluster", f"{name}={peer_url}", "--log-level", log_level]
    if tls is not None:
        argv += ["--cert-file", str(tls.cert), "--key-file", str(tls.key),
                 "--trusted-ca-file", str(tls.ca), "--client-cert-auth"]
    return argv


def etcdctl_argv(url: str, client: ClientTls | None, args: Iterable[str], *, etcdctl: str = ETCDCTL,
                 command_timeout_s: int = 5) -> list[str]:
    """etcdctl (v3 API) against `url` with `client`'s certificate (none: plain, as any stranger)."""
    argv = [etcdctl, "--endpoints", url, "--dial-timeout", "2s", "--command-timeout", f"{command_timeout_s}s"]
    if client is not None:
        argv += ["--cacert", str(client.ca), "--cert", str(client.cert), "--key", str(client.key)]
    return [*argv, *args]


def _need_etcdctl(etcdctl: str) -> None:
    if not os.access(etcdctl, os.X_OK):
        raise WitnessSetupError(f"the witness's roles need {etcdctl}, which is missing: apt-get install etcd-client "
                                "(or `coserver lab up --insecure` for a witness without TLS)")


def wait_ready(url: str, client: ClientTls | None, *, timeout: float = 20.0, netns: str | None = None,
               etcdctl: str = ETCDCTL) -> None:
    """Until etcd answers `endpoint health` (a leader elected: it serves requests)."""
    _need_etcdctl(etcdctl)
    deadline = time.monotonic() + timeout
    while True:
        res = run(exec_argv(netns, etcdctl_argv(url, client, ["endpoint", "health"], etcdctl=etcdctl)),
                  "witness health", timeout=15, check=False, error=WitnessSetupError)
        if res.returncode == 0:
            return
        if time.monotonic() > deadline:
            last = [ln for ln in (res.stderr or res.stdout).splitlines() if ln.strip()]
            raise WitnessSetupError(f"the witness at {url} is not healthy after {timeout:g} s: "
                                    f"{last[-1].strip() if last else f'exit status {res.returncode}'}")
        time.sleep(0.3)


def setup_rbac(url: str, admin: ClientTls, site: str, users: Iterable[str], *, netns: str | None = None,
               etcdctl: str = ETCDCTL, first_site: bool = True) -> None:
    """As root (admin's certificate): the site's role on its prefix and each user (a CoServer: its
    certificate's CN) granted it; for the etcd's first site (first_site) also the root user before and
    `auth enable` after. One line naming the step if one fails."""
    _need_etcdctl(etcdctl)
    steps = site_commands(site, users)
    if first_site:
        steps = [*admin_commands(), *steps, enable_command()]
    for args in steps:
        run(exec_argv(netns, etcdctl_argv(url, admin, args, etcdctl=etcdctl)),
            f"witness roles: etcdctl {' '.join(args)}", timeout=15, error=WitnessSetupError)
