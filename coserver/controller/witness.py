"""The witness: an etcd v3 key that says which node may run an FT server's guest, and in which epoch.

Two controllers that cannot hear each other cannot tell "my peer is dead"
from "the links between us are cut". A third party breaks the tie: before a
secondary promotes itself, or a primary drops its replica, it must claim the
FT server's ownership at the witness. The rules, enforced by etcd
transactions (compare-and-swap), never by the clients' good manners:

* /coserver/<site>/<ft>/owner = {"node", "epoch"} attached to a lease (TTL
  `ttl`, default 2 s) kept alive by the owner every ttl/3. The key exists
  exactly while the owner's lease lives: if the owner dies, etcd deletes it
  after TTL.
* /coserver/<site>/<ft>/epoch = the last granted {"node", "epoch"}, without
  lease: the epoch survives expiries and releases, so it never goes backwards.
* Each site's keys are under their own prefix because etcd's roles are per
  site: only that site's CoServers may touch them (coserver.site.witnessauth).
* claim(node, epoch) succeeds only if nobody else holds the owner key, and
  epoch > last epoch (or == last epoch by the same node: a restarted
  controller re-attaching). So a secondary's claim(epoch + 1) can never win
  while the primary's lease is alive, and a stale side (which missed a
  failover, or the primary's move to simplex, which also bumps the epoch)
  can never win at all: its epoch + 1 is not newer.
* release() revokes the lease at once (the owner's QEMU died): the secondary
  need not wait for the TTL.

Every call runs under `deadline` (default 1 s): an unreachable witness is a
WitnessUnreachable in bounded time, never a hang. A claim whose answer was
lost may still have been applied: then our unrefreshed lease expires within
TTL, which delays the other side but never lets two sides win.

Over TLS with a client certificate (WitnessTls; the site file's witness ca,
cert and key): etcd started with --client-cert-auth refuses clients without a
certificate of its CA, and with auth enabled it takes the user from the
certificate's CN, whose role allows only the site's prefix. So anyone who
reaches etcd can no longer raise the epoch or delete the owner key. The files
are checked when the Witness is made (readable, the key ours alone, the key
the certificate's), so a bad one stops the controller at start with one line;
a handshake the witness refuses, or a permission it denies, is one line too,
naming the endpoint, the files and the etcd user.

Why aetcd: an asyncio gRPC client for etcd v3 that is maintained and imports
with current protobuf (the old `etcd3` package does not); it speaks the plain
v3 gRPC API that etcd 3.4 (Debian 12) serves. It has no TLS (1.0.0, the
latest): _TlsClient adds it.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aetcd
import aetcd.exceptions
import grpc
from aetcd import rpc, watcher
from aetcd import transactions as txn
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from coserver import log
from coserver.controller.errors import WitnessError, WitnessUnreachable
from coserver.site.pki import PkiError, check_key_file
from coserver.site.witnessauth import key_prefix, role_name
from coserver.sys.aio import bounded
from coserver.sys.clock import boottime
from coserver.sys.files import open_regular

T = TypeVar("T")
_log = log.get("witness")

#: Seconds. etcd 3.4 refuses to expire a lease sooner than 1.5 election
#: timeouts (1.5 s by default, rounded up to 2 s), so 2 is the shortest TTL
#: that is honoured as given. It bounds how long a secondary waits for a
#: primary that vanished without releasing.
DEFAULT_TTL = 2
#: Seconds every witness call may take. Short against the TTL: a keep-alive
#: that times out still leaves time for the next one before the lease expires.
DEFAULT_DEADLINE = 1.0

#: gRPC reconnects quickly after the witness comes back (its default backoff
#: grows to two minutes: a long blind spot for a failover decision).
#: min_reconnect_backoff is ALSO the shortest time gRPC gives one connection
#: attempt (subchannel.cc: the attempt's deadline is the later of the next
#: backoff and now + that minimum). At 100 ms a TCP + TLS handshake slower than
#: ~0.5 s (a far witness, a loaded host: 2 s in the Vagrant lab's nested VMs)
#: was abandoned every time and the witness never became reachable. 5 s lets a
#: slow handshake finish in the background, across calls that time out; a
#: refused or reset connection still retries after the short backoff.
_CHANNEL_OPTIONS = {
    "grpc.initial_reconnect_backoff_ms": 100,
    "grpc.min_reconnect_backoff_ms": 5000,
    "grpc.max_reconnect_backoff_ms": 500,
}


@dataclass(frozen=True)
class WitnessTls:
    """The witness's TLS files: the CA(s) we trust it by, our certificate (its CN is our etcd user)
    and that certificate's key."""

    ca: Path
    cert: Path
    key: Path


@dataclass(frozen=True)
class _Credentials:
    """WitnessTls read and checked: PEM bytes for gRPC, and who etcd will take us for."""

    ca: bytes
    cert: bytes
    key: bytes
    user: str        # the certificate's CN: our etcd user name
    tls: WitnessTls


def _read(what: str, path: Path, endpoint: str) -> bytes:
    try:
        with open_regular(path) as f:
            return f.read()
    except (OSError, ValueError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise WitnessError(f"witness {endpoint}: TLS {what} {path}: cannot read: {why}") from None


def read_tls(tls: WitnessTls, endpoint: str) -> _Credentials:
    """Read and check the TLS files (WitnessError, one line naming the file, if one is unusable): each a
    readable regular file, the key ours alone (coserver.site.pki.check_key_file), PEM that parses,
    the key the certificate's, the certificate with a CN (etcd's user name)."""
    try:
        check_key_file(tls.key)
    except PkiError as exc:
        raise WitnessError(f"witness {endpoint}: TLS {exc}") from None
    ca, cert_pem, key_pem = (_read(w, p, endpoint) for w, p in (("ca", tls.ca), ("cert", tls.cert),
                                                                 ("key", tls.key)))
    try:
        if not x509.load_pem_x509_certificates(ca):
            raise ValueError("no certificate in it")
    except ValueError as exc:
        raise WitnessError(f"witness {endpoint}: TLS ca {tls.ca}: not PEM certificates: {exc}") from None
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError as exc:
        raise WitnessError(f"witness {endpoint}: TLS cert {tls.cert}: not a PEM certificate: {exc}") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise WitnessError(f"witness {endpoint}: TLS key {tls.key}: not an unencrypted PEM private key: "
                           f"{exc}") from None
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if (key.public_key().public_bytes(serialization.Encoding.DER, spki)
            != cert.public_key().public_bytes(serialization.Encoding.DER, spki)):
        raise WitnessError(f"witness {endpoint}: TLS key {tls.key} is not the key of the certificate {tls.cert}")
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    user = names[0].value if names else ""
    if not isinstance(user, str) or not user:
        raise WitnessError(f"witness {endpoint}: TLS cert {tls.cert} has no CN: etcd takes the user name from it")
    return _Credentials(ca, cert_pem, key_pem, user, tls)


class _TlsClient(aetcd.Client):  # type: ignore[misc]  # aetcd ships no types
    """aetcd.Client over TLS with a client certificate.

    aetcd 1.0.0 (the latest release) has no TLS: its Client.connect() always opens
    rpc.insecure_channel. This connect() opens grpc.aio.secure_channel with our CA, certificate and
    key instead, and sets up what the base class's connect() does (the KV, cluster, lease and
    maintenance stubs, the watcher); everything else (the calls, their error mapping, close()) is
    aetcd's own. No username/password: with etcd's --client-cert-auth the certificate's CN is the user.
    """

    _is_connecting: bool   # the base class's: set in its __init__

    def __init__(self, credentials: _Credentials, **kw: Any) -> None:
        super().__init__(**kw)
        self._credentials = grpc.ssl_channel_credentials(
            root_certificates=credentials.ca, private_key=credentials.key, certificate_chain=credentials.cert)

    async def connect(self) -> None:
        if self._connected.is_set():
            return
        if self._is_connecting:   # another task is connecting: wait for it, as the base class does
            await asyncio.wait_for(self._connected.wait(), self._connect_wait_timeout)
            return
        try:
            self._is_connecting = True
            self.channel = grpc.aio.secure_channel(f"{self._host}:{self._port}", self._credentials,
                                                   options=list(self._options.items()))
            self.kvstub = rpc.KVStub(self.channel)
            self.clusterstub = rpc.ClusterStub(self.channel)
            self.leasestub = rpc.LeaseStub(self.channel)
            self.maintenancestub = rpc.MaintenanceStub(self.channel)
            self._watcher = watcher.Watcher(rpc.WatchStub(self.channel), timeout=self._timeout,
                                            metadata=self.metadata)
            self._connected.set()
        finally:
            self._is_connecting = False


#: gRPC's words for a TLS handshake that failed (ours or the witness's side).
_TLS_WORDS = re.compile(r"ssl|tls|tsi_|handshake|certificate", re.IGNORECASE)


def _one_line(text: str) -> str:
    return " ".join(text.split())


@dataclass(frozen=True)
class Owner:
    """Who owns an FT server at the witness: `alive` while the owner's lease lives."""

    node: str
    epoch: int
    alive: bool


@dataclass(frozen=True)
class ClaimResult:
    """The answer to claim(): granted or not, who owns it now, and why."""

    granted: bool
    owner: Owner | None
    reason: str


@dataclass(frozen=True)
class _Snapshot:
    owner: Any | None  # aetcd Get (value, mod_revision, lease) of the owner key
    last: Any | None  # ... of the epoch key


def _record(kv: Any, key: str) -> tuple[str, int]:
    try:
        obj = json.loads(kv.value)
        node, epoch = obj["node"], obj["epoch"]
        if not isinstance(node, str) or not isinstance(epoch, int) or isinstance(epoch, bool):
            raise TypeError("node must be a string, epoch an integer")
    except (ValueError, KeyError, TypeError) as exc:
        raise WitnessError(f"witness key {key}: unreadable record {kv.value[:80]!r}: {exc}") from exc
    return node, epoch


def _value(node: str, epoch: int) -> bytes:
    return json.dumps({"node": node, "epoch": epoch}, sort_keys=True).encode()


class Witness:
    """One controller's handle on one FT server's ownership at the witness (etcd at host:port).

    on_lost(reason) is called (once per claim) when a lease we held is gone:
    etcd says it expired, or we could not refresh it before it surely expired.
    It is a public attribute: the controller that owns this handle sets it
    (its self-fence, coserver.controller.policy.must_self_fence).

    Lease times are on `clock` (CLOCK_BOOTTIME by default): a host that was
    suspended past its lease's end finds it lost the moment it wakes.
    """

    def __init__(self, ftserver: str, *, site: str, host: str = "127.0.0.1", port: int = 2379,
                 tls: WitnessTls | None = None,
                 ttl: int = DEFAULT_TTL, deadline: float = DEFAULT_DEADLINE,
                 on_lost: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = boottime) -> None:
        if ttl < 1 or deadline <= 0 or deadline >= ttl:
            raise WitnessError(f"witness for {ftserver}: need ttl >= 1 s and 0 < deadline < ttl "
                               f"(ttl={ttl}, deadline={deadline})")
        self.endpoint = f"{host}:{port}"
        try:
            self.prefix = key_prefix(site)
        except ValueError as exc:
            raise WitnessError(f"witness for {ftserver}: {exc}") from None
        if not ftserver or "/" in ftserver:
            raise WitnessError(f"witness: an FT server name must be non-empty without '/', got {ftserver!r}")
        self.ftserver = ftserver
        self.site = site
        #: The files read and checked now: a bad one is a one-line error at start, not at a failover.
        self._tls = read_tls(tls, self.endpoint) if tls is not None else None
        self.ttl = int(ttl)
        self.deadline = float(deadline)
        self.owner_key = f"{self.prefix}{ftserver}/owner"
        self.epoch_key = f"{self.prefix}{ftserver}/epoch"
        self._host, self._port = host, port
        self.on_lost = on_lost
        self._clock = clock
        #: Did the last call get an answer? (None before the first call.) The
        #: keep-alive keeps this fresh while we hold a lease.
        self.reachable: bool | None = None
        self._client: aetcd.Client | None = None
        self._lease_id: int | None = None
        self._held: Owner | None = None
        self._expires_at = 0.0  # self._clock (boottime): the lease surely lives until then, maybe longer
        self._keepalive: asyncio.Task[None] | None = None
        #: The keep-alive's one LeaseKeepAlive stream (gRPC), opened at the first refresh and kept:
        #: a new stream per refresh (aetcd's refresh_lease) cost twice the CPU (_refresh).
        self._ka_stream: Any | None = None
        self._lock = asyncio.Lock()
        self._log = _log.bind(ftserver=ftserver, witness=self.endpoint, site=site,
                              **({"user": self._tls.user} if self._tls is not None else {}))

    # -- plumbing ---------------------------------------------------------

    @property
    def user(self) -> str | None:
        """Our etcd user (the certificate's CN), None without TLS."""
        return self._tls.user if self._tls is not None else None

    def _etcd(self) -> aetcd.Client:
        if self._client is None:
            kw: dict[str, Any] = {"host": self._host, "port": self._port, "timeout": self.deadline,
                                  "options": _CHANNEL_OPTIONS}
            self._client = _TlsClient(self._tls, **kw) if self._tls is not None else aetcd.Client(**kw)
        return self._client

    def _unreachable_why(self, exc: Exception) -> str:
        """gRPC's reason, on one line; a failed TLS handshake said as such, with the files involved."""
        detail = _one_line(str(exc)) or type(exc).__name__
        if self._tls is not None and _TLS_WORDS.search(detail):
            t = self._tls.tls
            if "VERIFY_FAILED" in detail.upper():
                side = f"its certificate is not signed by a CA in {t.ca}"
            elif "UNWRAP" in detail.upper() or "BAD_CERTIFICATE" in detail.upper():
                side = (f"it refused our certificate {t.cert} (CN {self._tls.user}): not signed by the CA it "
                        "trusts (its --trusted-ca-file)?")
            else:
                side = f"check its certificate against {t.ca} and ours, {t.cert}"
            return f"TLS handshake failed ({side}): {detail}"
        if self._tls is None and re.search(r"socket closed|connection reset", detail, re.IGNORECASE):
            return (f"{detail} (a witness that wants TLS closes plain connections: the site says "
                    "insecure = true; give it ca, cert and key)")
        return detail

    def _refused_why(self, exc: Exception) -> str:
        """etcd's answer on one line; a permission it denies says which user and which keys."""
        detail = _one_line(str(exc)) or type(exc).__name__
        if "permission denied" not in detail.lower():
            return detail
        if self._tls is None:
            return (f"{detail}: etcd checks users, and without TLS we are none: give the site's witness "
                    "ca, cert and key")
        return (f"{detail}: etcd user {self._tls.user} (our certificate's CN) may not use {self.prefix}: "
                f"the witness's administrator must add that user and grant it the role "
                f"{role_name(self.site)} (README \"The witness over TLS\")")

    async def _call(self, what: str, aw: Awaitable[T], deadline: float | None = None) -> T:
        """Await one etcd call under the deadline; record whether the witness answered."""
        deadline = self.deadline if deadline is None else max(0.0, deadline)
        try:
            result = await bounded(aw, deadline)
        except TimeoutError:
            self.reachable = False
            raise WitnessUnreachable(f"witness {self.endpoint}: {what} got no answer within "
                                     f"{deadline:.2f} s") from None
        except (aetcd.exceptions.ConnectionFailedError, aetcd.exceptions.ConnectionTimeoutError) as exc:
            self.reachable = False
            raise WitnessUnreachable(f"witness {self.endpoint}: {what} failed: "
                                     f"{self._unreachable_why(exc)}") from None
        except aetcd.exceptions.ClientError as exc:
            self.reachable = True
            raise WitnessError(f"witness {self.endpoint}: {what} failed: {self._refused_why(exc)}") from None
        self.reachable = True
        return result

    async def _snapshot(self) -> _Snapshot:
        """Both keys read in one transaction: a consistent view."""
        _, responses = await self._call("read", self._etcd().transaction(
            compare=[], success=[txn.Get(self.owner_key.encode()), txn.Get(self.epoch_key.encode())],
            failure=[]))
        owner = responses[0][0][1] if responses[0] else None
        last = responses[1][0][1] if responses[1] else None
        return _Snapshot(owner, last)

    def _view(self, snap: _Snapshot) -> Owner | None:
        if snap.owner is not None:
            return Owner(*_record(snap.owner, self.owner_key), alive=True)
        if snap.last is not None:
            return Owner(*_record(snap.last, self.epoch_key), alive=False)
        return None

    # -- the API ----------------------------------------------------------

    async def current(self) -> Owner | None:
        """The owner (alive: its lease lives) or the last one (alive=False); None if never claimed."""
        return self._view(await self._snapshot())

    @property
    def held(self) -> Owner | None:
        """What we hold, as far as we know (None after release or a lost lease)."""
        return self._held

    def lease_left(self, now: float | None = None) -> float:
        """Seconds our lease surely still lives (0 if we hold none): the primary's safety margin."""
        if self._held is None:
            return 0.0
        now = self._clock() if now is None else now
        return max(0.0, self._expires_at - now)

    async def claim(self, node: str, epoch: int) -> ClaimResult:
        """Try to become the owner with `epoch`; see the module docstring for when this wins.

        A denial is an answer (ClaimResult.granted False), not an error;
        WitnessUnreachable means no answer within the deadline(s).
        """
        async with self._lock:
            return await self._claim(node, epoch)

    async def _claim(self, node: str, epoch: int) -> ClaimResult:
        snap = await self._snapshot()
        cur = self._view(snap)
        if snap.owner is not None and cur is not None and cur.node != node:
            return self._deny(node, epoch, cur, f"{cur.node} holds epoch {cur.epoch} with a live lease")
        last_node, last_epoch = _record(snap.last, self.epoch_key) if snap.last is not None else ("", 0)
        if epoch < last_epoch or (epoch == last_epoch and last_node != node):
            return self._deny(node, epoch, cur, f"epoch {epoch} is not newer than {last_epoch} "
                                                f"(last granted to {last_node})")
        etcd = self._etcd()
        sent = self._clock()
        lease = await self._call("lease grant", etcd.lease(self.ttl))
        compare = [
            txn.Version(self.owner_key.encode()) == 0 if snap.owner is None
            else txn.Mod(self.owner_key.encode()) == snap.owner.mod_revision,
            txn.Version(self.epoch_key.encode()) == 0 if snap.last is None
            else txn.Mod(self.epoch_key.encode()) == snap.last.mod_revision,
        ]
        value = _value(node, epoch)
        ok, _ = await self._call("claim", etcd.transaction(
            compare=compare,
            success=[txn.Put(self.owner_key.encode(), value, lease=lease.id),
                     txn.Put(self.epoch_key.encode(), value)],
            failure=[]))
        if not ok:
            await self._revoke_quietly(lease.id)
            now = self._view(await self._snapshot())
            return self._deny(node, epoch, now, "lost the race: the keys changed since read")
        old = self._lease_id
        self._lease_id = lease.id
        self._held = Owner(node, epoch, alive=True)
        self._expires_at = sent + self.ttl
        if old is not None and old != lease.id:
            await self._revoke_quietly(old)  # it holds no key any more
        self._start_keepalive()
        self._log.info("witness.claim.granted", node=node, epoch=epoch, ttl=self.ttl)
        return ClaimResult(True, self._held, f"{node} owns epoch {epoch}")

    def _deny(self, node: str, epoch: int, cur: Owner | None, reason: str) -> ClaimResult:
        self._log.info("witness.claim.denied", node=node, epoch=epoch, reason=reason)
        return ClaimResult(False, cur, reason)

    async def release(self) -> None:
        """Give up ownership now (revoke our lease; the owner key goes, the epoch stays).

        For the primary whose QEMU died: the secondary can claim at once
        instead of waiting for the TTL. Raises WitnessUnreachable if the
        witness did not confirm; the lease then expires by itself within TTL.
        """
        async with self._lock:
            self._stop_keepalive()
            lease_id, self._lease_id, self._held = self._lease_id, None, None
            if lease_id is not None:
                await self._call("release", self._etcd().revoke_lease(lease_id))
                self._log.info("witness.released", lease=lease_id)

    async def close(self) -> None:
        """Stop keeping the lease alive and drop the connection, WITHOUT releasing.

        A controller that exits while its QEMU runs must not hand the guest
        over: its restart re-claims (same node, same epoch). If it does not
        come back within TTL, the lease expires and the peer may take over.
        """
        self._stop_keepalive()
        self._lease_id, self._held = None, None
        client, self._client = self._client, None
        if client is not None:
            try:
                await bounded(client.close(), self.deadline)
            except (TimeoutError, aetcd.exceptions.ClientError):
                pass

    async def __aenter__(self) -> Witness:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- keep-alive -------------------------------------------------------

    def _start_keepalive(self) -> None:
        if self._keepalive is None or self._keepalive.done():
            self._keepalive = asyncio.create_task(self._keep_alive(), name=f"witness-{self.ftserver}")

    def _stop_keepalive(self) -> None:
        if self._keepalive is not None:
            self._keepalive.cancel()
            self._keepalive = None
        self._drop_ka_stream()

    def _drop_ka_stream(self) -> None:
        stream, self._ka_stream = self._ka_stream, None
        if stream is not None:
            stream.cancel()

    async def _refresh(self, lease_id: int) -> Any:
        """One keep-alive round trip on the kept LeaseKeepAlive stream (opened here when there is
        none): etcd answers each request on it with the lease's TTL (0: gone). aetcd's refresh_lease
        opens a stream per call: at a refresh every ttl/3 that was ~3 ms of CPU each (0.36 CPU s/min
        idle, measured with a TLS etcd on loopback), one kept stream ~1.3 ms (0.20 s/min).

        A stream that failed, ended or was abandoned mid-call (the deadline: its answer could come
        later and be taken for the next one's) is dropped; the next refresh opens a new one. Errors
        are aetcd's, as from its own calls (_call maps them)."""
        etcd = self._etcd()
        await etcd.connect()
        if self._ka_stream is None or self._ka_stream.done():
            self._ka_stream = etcd.leasestub.LeaseKeepAlive(metadata=etcd.metadata)
        stream = self._ka_stream
        try:
            await stream.write(rpc.LeaseKeepAliveRequest(ID=lease_id))
            reply = await stream.read()
        except rpc.AioRpcError as exc:
            self._drop_ka_stream()
            aetcd.exceptions._handle_exception(exc)   # aetcd's mapping to its ClientError subclasses
            raise   # not reached: it always raises
        except BaseException:   # cancelled (the deadline) or anything else: its state is unknown
            self._drop_ka_stream()
            raise
        if reply is grpc.aio.EOF:
            self._drop_ka_stream()
            raise aetcd.exceptions.ConnectionFailedError("the witness ended the keep-alive stream")
        return reply

    async def _keep_alive(self) -> None:
        """Refresh every ttl/3; declare the lease lost when etcd says so, or the moment it may
        have expired by our clock (last refresh SENT + TTL: never later than etcd's own expiry).
        """
        period = self.ttl / 3
        next_refresh = self._clock() + period
        while self._held is not None and self._lease_id is not None:
            now = self._clock()
            if now >= self._expires_at:
                self._lost("not refreshed in time: it may have expired at the witness")
                return
            if now < next_refresh:
                await asyncio.sleep(min(next_refresh, self._expires_at) - now)
                continue
            next_refresh = now + period
            lease_id = self._lease_id
            try:
                reply = await self._call("keep-alive", self._refresh(lease_id),
                                         deadline=min(self.deadline, self._expires_at - now))
            except WitnessError as exc:
                self._log.warning("witness.keepalive.failed", error=str(exc),
                                  lease_left=round(self.lease_left(), 2))
                continue
            if lease_id != self._lease_id:
                continue  # released or re-claimed meanwhile
            if reply is None or reply.TTL <= 0:
                self._lost("the witness says the lease expired")
                return
            self._expires_at = now + reply.TTL

    def _lost(self, reason: str) -> None:
        held = self._held
        self._held, self._lease_id = None, None
        self._drop_ka_stream()
        self._log.warning("witness.lease.lost", reason=reason,
                          node=held.node if held else None, epoch=held.epoch if held else None)
        if self.on_lost is not None:
            self.on_lost(reason)

    async def _revoke_quietly(self, lease_id: int) -> None:
        try:
            await self._call("lease revoke", self._etcd().revoke_lease(lease_id))
        except WitnessError as exc:
            self._log.warning("witness.lease.revoke.failed", error=str(exc), note="the lease expires by itself")
