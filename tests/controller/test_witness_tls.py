"""The witness over TLS, client certificates required, one etcd role per site: a real etcd on loopback,
set up by the functions `lab up` uses for the lab's witness (coserver.lab.witness), not a copy.

One etcd serves the module: site "blue" (users cs1, cs2 in role coserver-blue on /coserver/blue/) and
site "green" (users cs3, cs4 in role coserver-green), all certificates from one site CA; a second CA
issues a cs1 certificate that etcd must refuse. Each test uses its own FT server name.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from coserver.controller.witness import Owner, Witness, WitnessError, WitnessTls, WitnessUnreachable
from coserver.doctor.sitecheck import witness_tls_check
from coserver.lab import witness as labwitness
from coserver.site import pki
from coserver.site.model import CoServer, Site, SyncLink, WitnessSite
from coserver.sys.run import RunError, run

ETCD = shutil.which("etcd") or "/usr/bin/etcd"
ETCDCTL = shutil.which("etcdctl") or "/usr/bin/etcdctl"
ADDRESS = "127.0.0.1"


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind((ADDRESS, 0))
        return s.getsockname()[1]


def site_of(name: str, hosts: tuple[str, str], port: int, pki_dir: Path | None = None) -> Site:
    """A site whose witness is our etcd on loopback (its member certificate then names 127.0.0.1);
    with pki_dir its witness TLS files are each host's directory there ({host}, as a real site's)."""
    coservers = {h: CoServer(h, f"10.77.{i}.1", f"10.78.{i}.1",
                             (SyncLink("l1", f"10.79.1.{i}", f"10.79.1.{3 - i}"),
                              SyncLink("l2", f"10.79.2.{i}", f"10.79.2.{3 - i}")))
                 for i, h in enumerate(hosts, 1)}
    files = {} if pki_dir is None else {k: pki_dir / "{host}" / f for k, f in
                                        (("ca", "ca-cert.pem"), ("cert", "client-cert.pem"), ("key", "client-key.pem"))}
    return Site(file=Path(f"/nonexistent/{name}.toml"), name=name, preferred=hosts[0], coservers=coservers,
                witness=WitnessSite((f"{ADDRESS}:{port}",), **files))


def tls_of(d: Path) -> WitnessTls:
    return WitnessTls(ca=d / "ca-cert.pem", cert=d / "client-cert.pem", key=d / "client-key.pem")


@dataclass
class TlsEtcd:
    proc: subprocess.Popen[bytes]
    port: int
    url: str
    pki: Path            # the site CA's: blue's and green's hosts, root, "nobody" (a CN etcd has no user for)
    other_pki: Path      # another CA's, for a cs1 that etcd must not let in
    admin: labwitness.ClientTls

    def witness(self, ft: str, user: str, *, site: str = "blue", tls: WitnessTls | None = None, **kw) -> Witness:
        return Witness(ft, site=site, host=ADDRESS, port=self.port, tls=tls or tls_of(self.pki / user), **kw)

    def etcdctl_argv(self, *args: str, client: labwitness.ClientTls | None, url: str | None = None,
                     cacert_only: bool = False) -> list[str]:
        if cacert_only:      # TLS, trusting the witness, but no certificate of our own
            args = ("--cacert", str(self.admin.ca), *args)
        return labwitness.etcdctl_argv(url or self.url, client, args, etcdctl=ETCDCTL, command_timeout_s=2)

    def etcdctl(self, *args: str, client: labwitness.ClientTls | None, url: str | None = None,
                cacert_only: bool = False) -> subprocess.CompletedProcess[str]:
        return run(self.etcdctl_argv(*args, client=client, url=url, cacert_only=cacert_only),
                   f"etcdctl {' '.join(args)}", timeout=20, check=False)


@pytest.fixture(scope="module")
def tls_etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsEtcd]:
    missing = [p for p in (ETCD, ETCDCTL) if not os.access(p, os.X_OK)]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not installed (apt-get install etcd-server etcd-client)")
    d = tmp_path_factory.mktemp("etcdtls")
    d.chmod(0o700)
    port, peer = free_tcp_port(), free_tcp_port()
    blue, green = site_of("blue", ("cs1", "cs2"), port), site_of("green", ("cs3", "cs4"), port)
    # the lab's own steps: the site's certificates and root's, the member's files for etcd
    pki.make_site_certs(green, d / "pki")                       # the same CA issues green's hosts too
    server, admin = labwitness.make_pki(blue, d / "pki", ADDRESS)
    pki.issue_user_cert(d / "pki", "nobody")
    pki.make_site_certs(blue, d / "other-pki")                  # another CA, another "cs1"
    argv = labwitness.etcd_argv(name="witness", data_dir=d / "data", address=ADDRESS, port=port,
                                peer_url=f"http://{ADDRESS}:{peer}", tls=server, etcd=ETCD)
    assert "--client-cert-auth" in argv and f"https://{ADDRESS}:{port}" in argv
    with open(d / "etcd.log", "wb") as logf:
        proc = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT)
    try:
        url = labwitness.client_url(ADDRESS, port, tls=True)
        labwitness.wait_ready(url, admin, timeout=20, etcdctl=ETCDCTL)
        labwitness.setup_rbac(url, admin, "blue", ["cs1", "cs2"], etcdctl=ETCDCTL)
        labwitness.setup_rbac(url, admin, "green", ["cs3", "cs4"], etcdctl=ETCDCTL, first_site=False)
        yield TlsEtcd(proc, port, url, d / "pki", d / "other-pki", admin)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert text and "\n" not in text and "Traceback" not in text, text
    return text


def test_the_hosts_certificate_claims_renews_and_reads_its_epoch(arun, tls_etcd: TlsEtcd):
    async def main():
        async with tls_etcd.witness("ft-tls", "cs1") as p, tls_etcd.witness("ft-tls", "cs2") as s:
            assert (p.user, s.user) == ("cs1", "cs2")
            assert p.owner_key == "/coserver/blue/ft-tls/owner"
            assert await p.current() is None
            r = await p.claim("cs1", 1)
            assert r.granted and p.held == Owner("cs1", 1, True)
            await asyncio.sleep(p.ttl + 0.5)       # past one TTL: the keep-alive renewed the lease over TLS
            assert p.held == Owner("cs1", 1, True) and p.lease_left() > 0 and p.reachable is True
            assert await s.current() == Owner("cs1", 1, True)     # the peer reads it with its own certificate
            assert not (await s.claim("cs2", 2)).granted
            await p.release()
            assert (await s.claim("cs2", 2)).granted and await p.current() == Owner("cs2", 2, True)
    arun(main())
    # root (the administrator) sees the keys where the role allows the site's CoServers
    got = tls_etcd.etcdctl("get", "--prefix", "/coserver/blue/ft-tls/", "--keys-only", client=tls_etcd.admin)
    assert got.returncode == 0 and got.stdout.split() == ["/coserver/blue/ft-tls/epoch", "/coserver/blue/ft-tls/owner"]


def test_no_client_certificate_is_one_line(arun, tls_etcd: TlsEtcd):
    async def main():
        async with Witness("ft-plain", site="blue", host=ADDRESS, port=tls_etcd.port) as w:   # insecure client
            with pytest.raises(WitnessUnreachable) as ei:
                await w.current()
            return ei.value
    msg = one_line(arun(main()))
    assert msg.startswith(f"witness {ADDRESS}:{tls_etcd.port}: read failed: ") and "TLS" in msg, msg
    for how in ({"cacert_only": True}, {"url": f"http://{ADDRESS}:{tls_etcd.port}"}):   # etcdctl: TLS, or plain
        with pytest.raises(RunError) as ei:
            run(tls_etcd.etcdctl_argv("get", "/coserver/blue/ft-tls/epoch", client=None, **how),
                "etcdctl without a certificate", timeout=20)
        assert one_line(ei.value).startswith("etcdctl without a certificate: /usr/bin/etcdctl failed: Error: ")


def test_a_certificate_from_another_ca_is_refused(arun, tls_etcd: TlsEtcd):
    stranger = tls_of(tls_etcd.other_pki / "cs1")
    ours = tls_of(tls_etcd.pki / "cs1")

    async def attempt(tls: WitnessTls) -> BaseException:
        async with tls_etcd.witness("ft-stranger", "cs1", tls=tls, deadline=1.0) as w:
            with pytest.raises(WitnessUnreachable) as ei:
                await w.claim("cs1", 1)
            assert w.reachable is False and w.held is None
            return ei.value

    t0 = time.monotonic()
    # its certificate (the other CA's) with our CA to check the witness by: the witness refuses it
    msg = one_line(arun(attempt(WitnessTls(ca=ours.ca, cert=stranger.cert, key=stranger.key))))
    assert msg.startswith(f"witness {ADDRESS}:{tls_etcd.port}: read failed: TLS handshake failed (it refused our "
                          f"certificate {stranger.cert} (CN cs1)"), msg
    # and the other way round: trusting only the other CA, we refuse the witness
    msg = one_line(arun(attempt(stranger)))
    assert f"TLS handshake failed (its certificate is not signed by a CA in {stranger.ca})" in msg, msg
    assert time.monotonic() - t0 < 5    # refused at once, not after retries
    res = tls_etcd.etcdctl("get", "/coserver/blue/ft-tls/epoch", client=labwitness.ClientTls(ours.ca, stranger.cert,
                                                                                                stranger.key))
    assert res.returncode != 0 and not res.stdout


def test_another_sites_user_may_not_read_or_write_this_sites_keys(arun, tls_etcd: TlsEtcd):
    async def main():
        async with tls_etcd.witness("ft-owned", "cs1") as owner:
            assert (await owner.claim("cs1", 1)).granted
            errors = []
            # green's CoServer; a CN from our CA that etcd has no user for
            for user, d in (("cs3", tls_etcd.pki / "cs3"), ("nobody", tls_etcd.pki / "user.nobody")):
                async with tls_etcd.witness("ft-owned", user, tls=tls_of(d)) as other:
                    for call in (other.current, lambda o=other, u=user: o.claim(u, 99)):
                        with pytest.raises(WitnessError) as ei:
                            await call()
                        assert not isinstance(ei.value, WitnessUnreachable) and other.reachable is True
                        errors.append(ei.value)
            async with tls_etcd.witness("ft-owned", "cs3", site="green") as own:   # its own site's keys: fine
                assert (await own.claim("cs3", 1)).granted
            assert await owner.current() == Owner("cs1", 1, True)     # nothing of blue's changed
            return errors
    for exc in arun(main()):
        msg = one_line(exc)
        assert "etcdserver: permission denied" in msg and "may not use /coserver/blue/" in msg, msg
        assert "grant it the role coserver-blue" in msg
    cs3 = labwitness.ClientTls.of_dir(tls_etcd.pki / "cs3")
    for args in (("get", "/coserver/blue/ft-owned/owner"), ("put", "/coserver/blue/ft-owned/epoch", "x"),
                 ("del", "/coserver/blue/ft-owned/owner")):
        res = tls_etcd.etcdctl(*args, client=cs3)
        assert res.returncode != 0 and "permission denied" in res.stderr, (args, res.stderr)
    got = tls_etcd.etcdctl("get", "--print-value-only", "/coserver/blue/ft-owned/epoch", client=tls_etcd.admin)
    assert got.stdout.strip() == '{"epoch": 1, "node": "cs1"}'


def test_a_plain_etcdctl_cannot_read_the_owner_key(arun, tls_etcd: TlsEtcd):
    async def main():
        async with tls_etcd.witness("ft-secret", "cs1") as w:
            assert (await w.claim("cs1", 3)).granted
            # etcdctl in a thread: the event loop keeps our lease (and so the owner key) alive meanwhile
            for how in ({"url": f"http://{ADDRESS}:{tls_etcd.port}"}, {"cacert_only": True}):
                res = await asyncio.to_thread(tls_etcd.etcdctl, "get", "/coserver/blue/ft-secret/owner",
                                              client=None, **how)
                assert res.returncode != 0 and "cs1" not in res.stdout, res
            res = await asyncio.to_thread(tls_etcd.etcdctl, "get", "--print-value-only", "/coserver/blue/ft-secret/owner",
                                          client=labwitness.ClientTls.of_dir(tls_etcd.pki / "cs2"))
            assert res.returncode == 0 and '"node": "cs1"' in res.stdout    # the key is there for the site's own
            assert w.held == Owner("cs1", 3, True)
    arun(main())


def test_site_check_tries_the_files_against_the_witness(tls_etcd: TlsEtcd):
    blue = site_of("blue", ("cs1", "cs2"), tls_etcd.port, tls_etcd.pki)
    ok = witness_tls_check(blue, "cs2", [(ADDRESS, tls_etcd.port)])
    assert ok.ok and ok.detail == (f"etcd user cs2 reads /coserver/blue/ at {ADDRESS}:{tls_etcd.port} over TLS "
                                   f"({tls_etcd.pki / 'cs2' / 'client-cert.pem'})")
    red = site_of("red", ("cs1", "cs2"), tls_etcd.port, tls_etcd.pki)    # a site etcd has no role for
    bad = witness_tls_check(red, "cs1", [(ADDRESS, tls_etcd.port)])
    assert not bad.ok and "permission denied" in bad.detail and "coserver-red" in bad.detail
    down = witness_tls_check(blue, "cs1", [])
    assert not down.ok and down.detail.endswith("the files are usable; no witness endpoint answers to try them")


# -- the files, checked when the Witness is made (no etcd needed) ------------------------------------------

@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("witness-files")
    pki.make_site_certs(site_of("blue", ("cs1", "cs2"), 2379), d / "pki")
    return d / "pki"


def test_unusable_files_are_one_line_at_construction(files: Path, tmp_path: Path):
    good = tls_of(files / "cs1")
    w = Witness("ft", site="blue", tls=good)
    assert w.user == "cs1"

    def refused(tls: WitnessTls) -> str:
        with pytest.raises(WitnessError) as ei:
            Witness("ft", site="blue", port=2379, tls=tls)
        return one_line(ei.value)

    assert refused(WitnessTls(tmp_path / "nope.pem", good.cert, good.key)) == (
        f"witness 127.0.0.1:2379: TLS ca {tmp_path / 'nope.pem'}: cannot read: No such file or directory")
    assert refused(WitnessTls(good.ca, good.cert, files / "cs2" / "client-key.pem")) == (
        f"witness 127.0.0.1:2379: TLS key {files / 'cs2' / 'client-key.pem'} is not the key of the certificate "
        f"{good.cert}")
    assert "not a PEM certificate" in refused(WitnessTls(good.ca, good.key, good.key))
    assert "not PEM certificates" in refused(WitnessTls(good.key, good.cert, good.key))
    assert "cannot read: not a regular file (a directory)" in refused(WitnessTls(files, good.cert, good.key))
    loose = tmp_path / "loose-key.pem"
    shutil.copyfile(good.key, loose)
    loose.chmod(0o644)
    assert refused(WitnessTls(good.ca, good.cert, loose)) == (
        f"witness 127.0.0.1:2379: TLS key {loose}: mode 0644 lets group or others read it; refusing it "
        f"(chmod 600 {loose})")
    garbage = tmp_path / "garbage-key.pem"
    garbage.write_text("not a key")
    garbage.chmod(0o600)
    assert "not an unencrypted PEM private key" in refused(WitnessTls(good.ca, good.cert, garbage))


class _SlowLink:
    """A TCP relay that holds each chunk from etcd back `delay` seconds: a far or busy witness, whose
    TCP + TLS + HTTP/2 set-up (two of its flights) takes about 2 x delay."""

    def __init__(self, upstream_port: int, delay: float) -> None:
        self.upstream_port, self.delay = upstream_port, delay
        self.server: asyncio.base_events.Server | None = None

    async def __aenter__(self) -> int:
        self.server = await asyncio.start_server(self._relay, ADDRESS, 0)
        return self.server.sockets[0].getsockname()[1]

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        up_r, up_w = await asyncio.open_connection(ADDRESS, self.upstream_port)

        async def pump(r: asyncio.StreamReader, w: asyncio.StreamWriter, delay: float) -> None:
            try:
                while chunk := await r.read(65536):
                    if delay:
                        await asyncio.sleep(delay)
                    w.write(chunk)
                    await w.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                w.close()

        await asyncio.gather(pump(client_r, up_w, 0.0), pump(up_r, client_w, self.delay))


def test_a_slow_tls_handshake_completes_across_calls_that_time_out(arun, tls_etcd: TlsEtcd):
    """Found in the Vagrant lab (nested VMs: a 2 s handshake): gRPC gives one connection attempt only
    max(backoff, min_reconnect_backoff); at 100 ms every slow handshake was cut off and the witness
    stayed unreachable for good. Here each etcd flight arrives 0.6 s late, so the set-up needs > 1.2 s
    while each call, once connected, answers in ~0.6 s, within the 1.5 s deadline."""
    async def main():
        async with _SlowLink(tls_etcd.port, delay=0.6) as port:
            w = Witness("ft-slow", site="blue", host=ADDRESS, port=port, tls=tls_of(tls_etcd.pki / "cs1"),
                        deadline=1.5)
            try:
                t0, errors = time.monotonic(), []
                while time.monotonic() - t0 < 20:
                    try:
                        assert await w.current() is None
                        break
                    except WitnessUnreachable as exc:
                        errors.append(one_line(exc))
                else:
                    raise AssertionError(f"never reached through a slow link: {errors[-3:]}")
                assert w.reachable is True
                assert (await w.claim("cs1", 1)).granted
            finally:
                await w.close()
    arun(main())
