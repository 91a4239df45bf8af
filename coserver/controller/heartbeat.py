"""Authenticated UDP heartbeats between the two controllers of a pair, on every sync link.

QEMU COLO has no heartbeat of its own: the controllers must tell "my peer is
gone" from "one cable is out". So each controller sends a small datagram on
EACH sync link every `interval` and watches what arrives per link:

* a link is alive while a valid message arrived on it within `timeout`;
* the peer is alive while any link is alive. One link down is an alert
  (degraded), never a failover: the peer is demonstrably still there.

Why it looks like this:

* UDP, one socket per link, bound to that link's local address (and, with
  `device`, to the interface via SO_BINDTODEVICE): cutting one veth silences
  exactly that link. TCP would hide a dead link behind retransmissions for
  many seconds and couple both links' fates to one connection state.
* HMAC-SHA256 with a per-pair key over the exact payload bytes: a stray or
  forged datagram (another pair's controller, a test, an attacker on the sync
  network) can never make a dead peer look alive or a live one look dead.
* replays (issue 14): every message carries the sender's persistent
  `generation` (grows at every controller start, saved before the first
  heartbeat: coserver.controller.hbstate), a `seq` strictly increasing within
  it, and `ts`, the sender's boot-time clock at sending. Per link, a receiver
  accepts only a (generation, seq) above the last one it accepted and a `ts`
  not older than it; per peer, a generation below the highest one seen is
  never accepted (it is remembered across the receiver's restarts too), and a
  higher one (a restarted peer) is accepted at once and reported. A message
  older than `timeout` by the peer's own clock, measured against the smallest
  delay seen from that generation, is "stale": whether replayed or merely
  late, it proves nothing about the peer being alive now. The old scheme (a
  random instance id per start, any new instance accepted after a silence)
  let a captured datagram replayed after a 1.5 s silence revive a dead peer
  with an old epoch and retire the real one.
* keys (issue 14): a message names its key (key id: 8 hex digits of its
  SHA-256); a receiver accepts its current and its previous key (the key
  file's two lines, coserver.site.keygen), so a rotation is hitless. A message
  also lists the key ids its sender accepts, and a sender uses its current key
  unless the peer's last message says it does not know it yet (then the
  previous one): whichever host restarts with the new key file first, both
  keep hearing each other. An unknown key id is an authentication failure,
  exactly like a bad MAC.
* every drop is counted by reason (`stats()`), so "why is the link down" has
  an answer: nothing arrives, or it arrives with a bad MAC, or from the wrong
  pair, or replayed.
* datagrams from the peer's configured address that fail the MAC are noted per
  link (`auth_failing()`): when they are all that arrives, the two hosts hold
  different pair keys, and the controller says so instead of "peer lost". They
  are never liveness evidence: anyone on the sync network can send them.
* every heartbeat carries the sender's identity (`site`: a digest of its site
  file, `qemu_version`): the controller refuses to protect with a peer whose
  identity differs (coserver.controller.peercheck).
* time comes from an injectable monotonic `clock`: unit tests drive timeouts
  without sleeping.

Wire format: MAGIC (6 bytes) + key id (8 ASCII hex digits) + HMAC-SHA256(key,
MAGIC + key id + payload) (32 bytes) + payload, where payload is canonical JSON
(sorted keys, no spaces). The first format (MAGIC "CSHB1", no key id, no
generation) is dropped and counted as "old_version": both hosts must run the
same coserver.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import json
import os
import secrets
import socket
import stat
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from typing import Any

from coserver import log
from coserver.controller.errors import HeartbeatError
from coserver.controller.hbstate import HeartbeatState, PeerMark
from coserver.site import keygen
from coserver.site.errors import SiteError
from coserver.site.keygen import KeyRing, key_id
from coserver.sys import netns
from coserver.sys.aio import sleep_to_grid
from coserver.sys.proc import boot_id

_log = log.get("heartbeat")

MAGIC = b"CSHB2\n"
OLD_MAGIC = b"CSHB1\n"
KEY_ID_LEN = 8
MAC_LEN = 32
MAX_DATAGRAM = 2048
KEY_BYTES = 32
MIN_KEY_BYTES = 16

#: Default send period. Five chances per timeout on each of two links: losing one or two datagrams
#: (a full queue during a COLO checkpoint burst on link 1) is invisible. A change of state, role,
#: epoch or QEMU health is sent at once, not at the next round, so the period does not delay what
#: the peer acts on; at 0.1 s the heartbeats were a third of an idle controller's CPU.
DEFAULT_INTERVAL = 0.2
#: Default silence after which a link counts as lost. Why 1.0 s:
#: - false-alarm-free: it takes 5 consecutive lost datagrams on each of two dedicated
#:   link, or an event loop stalled for a second. Our loop never blocks that
#:   long (every QMP and witness call has a deadline of about a second), and
#:   a saturated link 1 still leaves link 2 carrying heartbeats.
#: - fast: failover cannot be faster than the witness lease (2 s TTL) anyway
#:   when the primary vanished without releasing it, so detecting in 1 s keeps
#:   the heartbeat off the critical path; a clean QEMU death is signalled in
#:   the payload (qemu=dead) and by a witness release, not by a timeout.
DEFAULT_TIMEOUT = 1.0
_EVENT_QUEUE_MAX = 1024
#: How fast the two hosts' boot-time clocks may drift apart (100 ppm, a bad crystal without NTP):
#: the freshness baseline may creep up this fast, so drift never turns fresh messages stale.
MAX_DRIFT = 1e-4
#: The freshness baseline is saved when it moved this much since last saved (rare writes).
_SAVE_OFFSET_MOVE = 0.05

#: IP precedence "network control" (CS6) and a high socket priority: a qdisc
#: that honours them sends heartbeats ahead of bulk migration traffic.
_STR_STATUS = frozenset({"role", "state", "qemu", "site", "qemu_version"})
#: Status fields that change in normal running (every checkpoint): no reason for an extra round.
_COUNTERS = frozenset({"checkpoints"})
#: The silence timer fires this much after a link's deadline, so the link is past it when judged.
_SILENCE_SLACK = 0.002
_TOS_CS6 = 0xC0
_SO_PRIORITY = 6


def load_or_create_key(path: Path, size: int = KEY_BYTES) -> bytes:
    """The pair's shared key from `path`, created (0600, random) if missing.

    Refuses a key file readable or writable by group or others: a leaked key
    lets anyone on the sync network impersonate a controller. Both hosts of a
    pair need the SAME key: create it once, copy it (keeping 0600) to the peer.
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    except OSError as exc:
        raise HeartbeatError(f"heartbeat key {path}: cannot create: {exc.strerror}") from exc
    else:
        try:
            os.write(fd, secrets.token_bytes(size))
            os.fsync(fd)
        finally:
            os.close(fd)
        _log.info("heartbeat.key.created", path=str(path))
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise HeartbeatError(f"heartbeat key {path}: not a regular file")
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o077:
            raise HeartbeatError(f"heartbeat key {path}: mode {mode:04o} is broader than 0600 "
                                 f"(chmod 600 {path})")
        key = path.read_bytes()
    except OSError as exc:
        raise HeartbeatError(f"heartbeat key {path}: cannot read: {exc.strerror}") from exc
    if len(key) < MIN_KEY_BYTES:
        raise HeartbeatError(f"heartbeat key {path}: {len(key)} bytes, need at least {MIN_KEY_BYTES}")
    return key


def load_key(path: Path) -> bytes:
    """The pair's current key from `path`, as `coserver site keygen` wrote it; never created here.

    A controller that invented a missing key would disagree with its peer's and report
    "peer lost on all links" instead of the real fault, so a missing, unsafe (not 0600, not
    ours) or malformed key is one line at start (the site path; the lab still uses
    load_or_create_key)."""
    return load_keys(path).current


def load_keys(path: Path) -> KeyRing:
    """The pair's keys from `path` (current, and previous after `site keygen --rotate`): what the
    heartbeats accept. Checked as load_key checks them."""
    try:
        keygen.check_key(path)
        return keygen.read_keys(path)
    except SiteError as exc:
        raise HeartbeatError(f"heartbeat {exc}") from None


@dataclass(frozen=True)
class LinkSpec:
    """One sync link as this controller sees it.

    local: (address, port) to bind, on this host's end of the link.
    peer: (address, port) of the peer controller's socket on the same link.
    device: the link's interface; if given, the socket is bound to it
    (SO_BINDTODEVICE) so no route via another interface can carry it.
    """

    name: str
    local: tuple[str, int]
    peer: tuple[str, int]
    device: str | None = None


@dataclass(frozen=True)
class LocalStatus:
    """What this controller tells its peer about itself in every heartbeat."""

    epoch: int = 0
    role: str = "none"
    state: str = "stopped"
    qemu: str = "none"
    checkpoints: int = 0
    site: str = ""             # digest of this host's site file ("" without one: the lab's --config path)
    qemu_version: str = ""     # the QEMU this host runs, e.g. "10.2.2"
    guest_off: int = 0         # this side stopped the FT server: its guest powered itself off in this epoch
    replica_off: int = 0       # this side's copy (a secondary) saw the guest power itself off, in this epoch


@dataclass(frozen=True)
class Heartbeat:
    """One heartbeat's payload (what the MAC covers).

    `sent` is the sender's wall clock: for people reading logs, never for
    timeouts (the two hosts' clocks are not comparable). `generation` orders
    the sender's starts (persistent, see hbstate), `seq` its messages within
    one, `ts` is its boot-time clock at sending (freshness, see _reject).
    `keys`: the key ids the sender accepts, comma-separated.
    """

    pair: str
    link: str
    node: str
    generation: int
    seq: int
    ts: float
    epoch: int
    role: str
    state: str
    qemu: str
    checkpoints: int
    sent: float
    site: str = ""
    qemu_version: str = ""
    keys: str = ""
    guest_off: int = 0
    replica_off: int = 0
    #: the round trip: the `ts` of the peer's last message we accepted on this link (0.0: none yet), and
    #: how long we held it before this message left (our clock); the peer's now - echo_ts - echo_held
    #: is the link's round-trip time, on its own clock alone
    echo_ts: float = 0.0
    echo_held: float = 0.0

    def encode(self, key: bytes) -> bytes:
        payload = _CANONICAL.encode({name: getattr(self, name) for name in _HEARTBEAT_FIELDS}).encode()
        kid = _key_id(key).encode()
        mac = hmac.digest(key, MAGIC + kid + payload, "sha256")
        return MAGIC + kid + mac + payload

    def key_ids(self) -> set[str]:
        return set(self.keys.split(",")) if self.keys else set()


#: The payload's JSON: sorted keys, no spaces (what json.dumps(sort_keys=True, separators=(",", ":"))
#: makes), one encoder for every message instead of a new one per call (20 messages a second).
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"))
_HEARTBEAT_FIELDS = tuple(f.name for f in fields(Heartbeat))
#: What a peer says that its partner decides on: its status but the counters, and its generation.
_SAID_FIELDS = ("generation",) + tuple(f.name for f in fields(LocalStatus) if f.name not in _COUNTERS)


def _said(hb: Heartbeat) -> tuple[Any, ...]:
    return tuple(getattr(hb, name) for name in _SAID_FIELDS)


@functools.lru_cache(maxsize=8)
def _key_id(key: bytes) -> str:
    """keygen.key_id, remembered: a SHA-256 per message (sent or received) for the same two keys."""
    return key_id(key)


@functools.lru_cache(maxsize=8)
def _ring_by_id(ring: KeyRing) -> dict[str, bytes]:
    """ring.by_id(), remembered per ring (a KeyRing is frozen: its keys never change)."""
    return {_key_id(k): k for k in ring.keys()}


_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "pair": (str,), "link": (str,), "node": (str,), "generation": (int,), "seq": (int,), "ts": (int, float),
    "epoch": (int,), "role": (str,), "state": (str,), "qemu": (str,),
    "checkpoints": (int,), "sent": (int, float), "site": (str,), "qemu_version": (str,), "keys": (str,),
    "guest_off": (int,), "replica_off": (int,), "echo_ts": (int, float), "echo_held": (int, float),
}
assert set(_FIELD_TYPES) == {f.name for f in fields(Heartbeat)}
#: Fields a peer one release older does not send (they take their defaults): it is still heard.
_OPTIONAL_FIELDS = frozenset({"echo_ts", "echo_held"})


class Drop(StrEnum):
    """Why a datagram was not accepted."""

    MALFORMED = "malformed"  # wrong magic, too short/long, bad JSON or fields
    BAD_MAC = "bad_mac"
    WRONG_PAIR = "wrong_pair"
    WRONG_LINK = "wrong_link"  # valid, but sent for the other link: cross-wired
    OWN = "own"  # our own node name: a loop or a misconfigured peer
    REPLAY = "replay"  # (generation, seq) not above the last accepted, ts going back, or an older generation
    STALE = "stale"  # sent more than `timeout` before it arrived (the peer's clock against its best delay)
    OLD_VERSION = "old_version"  # the first wire format (a peer running an older coserver)


def decode(data: bytes, key: bytes | KeyRing) -> Heartbeat | Drop:
    """The heartbeat in `data` if it is well-formed and MAC'd by one of the ring's keys, else why
    not (an unknown key id is BAD_MAC: an authentication failure like any other)."""
    if data.startswith(OLD_MAGIC):
        return Drop.OLD_VERSION
    head = len(MAGIC) + KEY_ID_LEN + MAC_LEN
    if len(data) <= head or len(data) > MAX_DATAGRAM or not data.startswith(MAGIC):
        return Drop.MALFORMED
    kid = data[len(MAGIC):len(MAGIC) + KEY_ID_LEN]
    mac = data[len(MAGIC) + KEY_ID_LEN:head]
    payload = data[head:]
    k = _ring_by_id(KeyRing.of(key)).get(kid.decode("ascii", "replace"))
    if k is None:
        return Drop.BAD_MAC
    want = hmac.digest(k, MAGIC + kid + payload, "sha256")
    if not hmac.compare_digest(mac, want):
        return Drop.BAD_MAC
    try:
        obj = json.loads(payload)
    except ValueError:
        return Drop.MALFORMED
    if not isinstance(obj, dict) or not set(_FIELD_TYPES) - _OPTIONAL_FIELDS <= set(obj) <= set(_FIELD_TYPES):
        return Drop.MALFORMED
    for name, types in _FIELD_TYPES.items():
        if name not in obj:
            continue
        v = obj[name]
        if isinstance(v, bool) or not isinstance(v, types):
            return Drop.MALFORMED
    return Heartbeat(**obj)


class EventKind(StrEnum):
    LINK_UP = "link_up"  # a valid heartbeat arrived on a link that was down (or never up)
    LINK_DOWN = "link_down"  # no valid heartbeat on a link for `timeout`
    PEER_UP = "peer_up"  # first contact, or back after being lost
    PEER_LOST = "peer_lost"  # every link down
    PEER_RESTARTED = "peer_restarted"  # the peer controller started again (a higher generation)


@dataclass(frozen=True)
class HeartbeatEvent:
    kind: EventKind
    at: float  # our monotonic clock
    link: str | None = None
    detail: str = ""


@dataclass
class _LinkState:
    spec: LinkSpec
    last_valid: float | None = None
    up: bool = False
    generation: int = -1     # of the last message accepted on this link (-1: none yet)
    seq: int = 0
    ts: float = 0.0
    last_bad_mac: float | None = None   # our clock: a datagram from the peer's address failed the MAC
    rtt: float | None = None   # the link's last measured round trip (seconds), None before the first
    counts: dict[str, int] = field(default_factory=dict)

    def count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1


class HeartbeatLink(asyncio.DatagramProtocol):
    """The socket of one sync link: sends what Heartbeats gives it, hands valid arrivals back."""

    def __init__(self, owner: Heartbeats, state: _LinkState) -> None:
        self._owner = owner
        self._state = state
        self.transport: asyncio.DatagramTransport | None = None

    @property
    def name(self) -> str:
        return self._state.spec.name

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a datagram endpoint's transport is a DatagramTransport; asyncio's signature says BaseTransport
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self._owner._received(self._state, data, addr)

    def error_received(self, exc: Exception) -> None:
        # ENETUNREACH on a downed link, ECONNREFUSED when the peer's socket is
        # closed: both mean "nothing arrives"; the timeout reports it.
        self._state.count(f"send_error:{getattr(exc, 'errno', None) or type(exc).__name__}")

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def send(self, data: bytes) -> None:
        if self.transport is None:
            self._state.count("send_skipped")
            return
        self.transport.sendto(data, self._state.spec.peer)
        self._state.count("sent")


def _make_socket(spec: LinkSpec) -> socket.socket:
    family = socket.AF_INET6 if ":" in spec.local[0] else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, _TOS_CS6)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_PRIORITY, _SO_PRIORITY)
        if spec.device:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, spec.device.encode())
        sock.bind(spec.local)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class Heartbeats:
    """Heartbeats with one peer over all sync links: send, receive, judge liveness, report changes.

    Typical use in the daemon:

        hb = Heartbeats(pair="ft1", node="cs1", key=key, links=[l1, l2])
        await hb.start()                 # sockets + the periodic send/check task
        hb.update_local(role="primary", epoch=3, ...)   # whenever it changes
        ev = await hb.events.get()       # LINK_DOWN / PEER_LOST / ...
        hb.link_alive("sync1"), hb.peer_alive(), hb.peer_state()
        await hb.close()

    `netns` opens the sockets inside that network namespace (tests, the lab).
    """

    def __init__(self, *, pair: str, node: str, key: bytes | KeyRing, links: Sequence[LinkSpec],
                 interval: float = DEFAULT_INTERVAL, timeout: float = DEFAULT_TIMEOUT,
                 clock: Callable[[], float] = time.monotonic,
                 wallclock: Callable[[], float] = time.time,
                 netns: str | None = None, state_file: Path | None = None,
                 boot: Callable[[], str] = boot_id,
                 site: str = "", qemu_version: str = "") -> None:
        """`clock` is what timeouts and the messages' `ts` are measured on (the daemon: boot time, so
        the peer's restarts of its controller keep one clock). `state_file` keeps the generations
        (hbstate; None: nothing persists, generations follow the wall clock); `boot` is this boot's id
        (a freshness baseline measured during another boot is no baseline)."""
        if not links:
            raise HeartbeatError(f"heartbeats for pair {pair}: no links given")
        names = [link.name for link in links]
        if len(set(names)) != len(names):
            raise HeartbeatError(f"heartbeats for pair {pair}: duplicate link names {names}")
        ring = KeyRing.of(key)
        for k in ring.keys():
            if len(k) < MIN_KEY_BYTES:
                raise HeartbeatError(f"heartbeats for pair {pair}: key of {len(k)} bytes is too short")
        if not 0 < interval < timeout:
            raise HeartbeatError(f"heartbeats for pair {pair}: need 0 < interval ({interval}) "
                                 f"< timeout ({timeout})")
        self.pair = pair
        self.node = node
        self.interval = interval
        self.timeout = timeout
        self._keys = ring
        self._key_ids = ",".join(sorted(ring.by_id()))
        self._state = HeartbeatState(state_file, wallclock=wallclock)
        self._boot = boot()
        self.generation = self._state.next_generation()
        self._clock = clock
        self._wallclock = wallclock
        self._netns = netns
        self._links: dict[str, _LinkState] = {s.name: _LinkState(s) for s in links}
        self._protocols: dict[str, HeartbeatLink] = {}
        self._seq = 0
        self._local = LocalStatus(site=site, qemu_version=qemu_version)
        self._local_fields = asdict(self._local)   # what every heartbeat carries of it, made once per change
        self._peer: Heartbeat | None = None
        self._peer_up = False
        self._marks: dict[str, PeerMark] = {}   # per peer node: highest generation, freshness baseline
        self._auth_failing: list[str] = []
        self._task: asyncio.Task[None] | None = None
        self.events: asyncio.Queue[HeartbeatEvent] = asyncio.Queue(maxsize=_EVENT_QUEUE_MAX)
        #: called (no arguments) when the peer's word changes (its role, state, epoch, QEMU health,
        #: ...) and on every event (a link or the peer lost or back), the moment it is known: the
        #: daemon's decide loop wakes on it instead of finding it at its next tick. Silence is found
        #: by a timer at the first link's deadline (_silence_due), not only at the next round.
        self.on_change: Callable[[], None] | None = None
        self._silence: asyncio.TimerHandle | None = None
        self._log = _log.bind(pair=pair, node=node)

    # -- life cycle -------------------------------------------------------

    async def open(self) -> None:
        """Open one socket per link (inside `netns` if set); no sending yet."""
        loop = asyncio.get_running_loop()
        for name, st in self._links.items():
            try:
                sock = (netns.run_in(self._netns, _make_socket, st.spec) if self._netns
                        else _make_socket(st.spec))
            except OSError as exc:
                await self.close()
                where = f" in netns {self._netns}" if self._netns else ""
                raise HeartbeatError(f"heartbeat link {name}: cannot bind {st.spec.local[0]}:"
                                     f"{st.spec.local[1]}{where}: {exc.strerror or exc}") from exc
            _, proto = await loop.create_datagram_endpoint(functools.partial(HeartbeatLink, self, st),
                                                           sock=sock)
            self._protocols[name] = proto

    async def start(self) -> None:
        """open() and run the periodic send + liveness check every `interval`."""
        if not self._protocols:
            await self.open()
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"heartbeats-{self.pair}")

    async def wait(self) -> None:
        """Until the send/check task ends: a daemon watches it (HostController runs it as a task).
        Raises what killed it; cancelled when close() stops it."""
        if self._task is None:
            raise HeartbeatError(f"heartbeats for pair {self.pair}: wait() before start()")
        await asyncio.shield(self._task)

    async def close(self) -> None:
        if self._silence is not None:
            self._silence.cancel()
            self._silence = None
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            except Exception:  # noqa: BLE001 - a task that died: wait() reported it; close the sockets anyway
                pass
            self._task = None
        for proto in self._protocols.values():
            if proto.transport is not None:
                proto.transport.close()
        self._protocols.clear()

    async def __aenter__(self) -> Heartbeats:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _run(self) -> None:
        while True:
            self.send_once()
            self.check()
            # Fixed-rate, on the loop's common grid (sys.aio): a slow round does not stretch the
            # period, and the daemon's tick wakes at the same instants, so both share one wake-up.
            await sleep_to_grid(self.interval)

    # -- sending ----------------------------------------------------------

    def update_local(self, **changes: Any) -> None:
        """Change what the next heartbeats say about us (epoch, role, state, qemu, checkpoints, site,
        qemu_version, guest_off, replica_off). Once started, a change of anything but the checkpoint
        count goes out at once, in an extra round."""
        cur = dict(self._local_fields)
        unknown = set(changes) - set(cur)
        if unknown:
            raise HeartbeatError(f"heartbeats for pair {self.pair}: unknown status fields {sorted(unknown)}")
        cur.update({k: str(v) if k in _STR_STATUS else int(v) for k, v in changes.items()})
        if cur == self._local_fields:   # the daemon publishes every tick; most ticks change nothing
            return
        said = {k for k, v in cur.items() if v != self._local_fields[k]} - _COUNTERS
        self._local = LocalStatus(**cur)
        self._local_fields = cur
        if said and self._task is not None:
            # what the peer decides on changed (a dead QEMU, a new epoch, a state): it hears it now,
            # not at the next round (which shares the tick's wake-up and may run just before it)
            self.send_once()

    @property
    def local(self) -> LocalStatus:
        return self._local

    def send_once(self) -> None:
        """Send one heartbeat on every open link (each with its own seq, all with this round's ts)."""
        now = self._wallclock()
        ts = self._clock()
        key = self._send_key()
        for name, proto in self._protocols.items():
            self._seq += 1
            st = self._links[name]
            echo_ts, held = (st.ts, max(0.0, ts - st.last_valid)) if st.last_valid is not None else (0.0, 0.0)
            hb = Heartbeat(pair=self.pair, link=name, node=self.node, generation=self.generation, seq=self._seq,
                           ts=ts, sent=now, keys=self._key_ids, echo_ts=echo_ts, echo_held=held,
                           **self._local_fields)
            proto.send(hb.encode(key))

    def _send_key(self) -> bytes:
        """The current key, unless the peer's last message says it accepts only our previous one (it
        still runs the key file from before a rotation): then the previous, so it keeps hearing us."""
        ring, peer = self._keys, self._peer
        if peer is None or ring.previous is None:
            return ring.current
        accepted = peer.key_ids()
        if key_id(ring.current) not in accepted and key_id(ring.previous) in accepted:
            return ring.previous
        return ring.current

    # -- receiving --------------------------------------------------------

    def _received(self, st: _LinkState, data: bytes, addr: tuple[str, int]) -> None:
        now = self._clock()
        st.count("received")
        hb = decode(data, self._keys)
        if isinstance(hb, Drop):
            st.count(hb.value)
            if hb == Drop.BAD_MAC and tuple(addr[:2]) == tuple(st.spec.peer):
                st.last_bad_mac = now
            return
        why = self._reject(st, hb, now)
        if why is not None:
            st.count(why.value)
            return
        st.count("accepted")
        st.generation, st.seq, st.ts = hb.generation, hb.seq, hb.ts
        st.last_valid = now
        if hb.echo_ts > 0.0:   # an echo of one of ours (authenticated): both ends on our clock
            rtt = now - hb.echo_ts - hb.echo_held
            if 0.0 <= rtt <= self.timeout:
                st.rtt = rtt
        self._remember(hb, now)
        self._update_peer(hb, now, st.spec.name)
        if self._silence is None and self.on_change is not None:
            self._silence = asyncio.get_running_loop().call_later(self.timeout + _SILENCE_SLACK, self._silence_due)
        if not st.up:
            st.up = True
            self._emit(EventKind.LINK_UP, now, st.spec.name, f"from {addr[0]}:{addr[1]}")
        if not self._peer_up:
            self._peer_up = True
            self._emit(EventKind.PEER_UP, now, st.spec.name, f"{hb.node} {hb.role} {hb.state}")

    def _update_peer(self, hb: Heartbeat, now: float, link: str) -> None:
        """Follow the newest message (by generation, then seq), whichever link brought it."""
        peer = self._peer
        if peer is not None and (hb.generation, hb.seq) <= (peer.generation, peer.seq):
            return
        self._peer = hb
        if peer is not None and hb.generation > peer.generation:
            self._emit(EventKind.PEER_RESTARTED, now, link, f"{hb.node} generation {hb.generation}")
        elif self.on_change is not None and (peer is None or _said(peer) != _said(hb)):
            self.on_change()

    def _silence_due(self) -> None:
        """The first live link's deadline (its last valid heartbeat + timeout): judge the links now
        (check() emits LINK_DOWN / PEER_LOST, which wake on_change); else wait for the next deadline.
        Re-armed lazily: about once per timeout while heartbeats flow, not once per datagram."""
        self._silence = None
        now = self._clock()
        deadlines = [st.last_valid + self.timeout for st in self._links.values()
                     if st.up and st.last_valid is not None]
        if not deadlines:
            return
        due = min(deadlines)
        if due <= now:
            self.check(now)
            later = [d for d in deadlines if d > now]
            if not later:
                return
            due = min(later)
        self._silence = asyncio.get_running_loop().call_later(due - now + _SILENCE_SLACK, self._silence_due)

    def _mark(self, node: str) -> PeerMark | None:
        """What we know of `node`: this run's view, else what an earlier run of ours saved."""
        mark = self._marks.get(node)
        if mark is None:
            saved = self._state.peer(node)
            if saved is not None:
                # a baseline measured during another boot of ours is on another clock: keep the generation
                mark = saved if saved.boot_id == self._boot else PeerMark(saved.generation)
                self._marks[node] = mark
        return mark

    def _remember(self, hb: Heartbeat, now: float) -> None:
        """After accepting `hb`: its generation, and the freshness baseline (the smallest delay seen,
        allowed to creep up at MAX_DRIFT); saved when either changes noticeably (rarely)."""
        mark = self._mark(hb.node)
        delay = now - hb.ts
        if mark is None or hb.generation > mark.generation or mark.boot_id != self._boot:
            new = PeerMark(hb.generation, self._boot, delay, now)
        else:
            base = mark.offset + MAX_DRIFT * max(0.0, now - mark.at)
            new = PeerMark(hb.generation, self._boot, min(delay, base), now)
        self._marks[hb.node] = new
        saved = self._state.peer(hb.node)
        if saved is None or saved.generation != new.generation or saved.boot_id != new.boot_id \
                or abs(saved.offset - new.offset) > _SAVE_OFFSET_MOVE:
            try:
                self._state.remember(hb.node, new)
            except HeartbeatError as exc:   # this run still knows; the next change tries again
                self._log.warning("heartbeat.state.unsaved", reason=str(exc))

    def _reject(self, st: _LinkState, hb: Heartbeat, now: float) -> Drop | None:
        if hb.pair != self.pair:
            return Drop.WRONG_PAIR
        if hb.node == self.node:
            return Drop.OWN
        if hb.link != st.spec.name:
            return Drop.WRONG_LINK
        mark = self._mark(hb.node)
        if mark is not None and hb.generation < mark.generation:
            return Drop.REPLAY   # an older start of the peer: a newer one has spoken (maybe before our restart)
        if hb.generation < st.generation or (hb.generation == st.generation and
                                              (hb.seq <= st.seq or hb.ts < st.ts)):
            return Drop.REPLAY
        if mark is not None and hb.generation == mark.generation and mark.boot_id == self._boot:
            # Sent more than `timeout` before it arrived, by the peer's clock against the smallest
            # delay seen from this generation: replayed or late, it proves nothing about now.
            base = mark.offset + MAX_DRIFT * max(0.0, now - mark.at)
            if (now - hb.ts) - base > self.timeout:
                return Drop.STALE
        # A higher generation: the peer started again; accepted at once.
        return None

    # -- liveness ---------------------------------------------------------

    def check(self, now: float | None = None) -> list[HeartbeatEvent]:
        """Judge every link at `now` (default: the clock); emit and return LINK_DOWN/PEER_LOST."""
        now = self._clock() if now is None else now
        out: list[HeartbeatEvent] = []
        for name, st in self._links.items():
            if st.up and not self.link_alive(name, now):
                st.up = False
                out.append(self._emit(EventKind.LINK_DOWN, now, name,
                                      f"silent for {now - (st.last_valid or now):.2f} s"))
        if self._peer_up and not any(st.up for st in self._links.values()):
            self._peer_up = False
            out.append(self._emit(EventKind.PEER_LOST, now, None, "no link alive"))
        failing = self.auth_failing(now)
        if failing != self._auth_failing:   # logged when it starts and when it ends, not every round
            self._auth_failing = failing
            if failing:
                self._log.warning("heartbeat.auth.failing", links=failing,
                                  detail="the peer's heartbeats fail authentication: the pair key differs")
            else:
                self._log.info("heartbeat.auth.ok")
        return out

    def now(self) -> float:
        """The clock last_heard() and the timeouts are measured on (the daemon: CLOCK_BOOTTIME)."""
        return self._clock()

    def link_alive(self, link: str, now: float | None = None) -> bool:
        """Did a valid heartbeat arrive on `link` within `timeout` before `now`?"""
        st = self._links.get(link)
        if st is None:
            raise HeartbeatError(f"heartbeats for pair {self.pair}: no link named {link!r}")
        now = self._clock() if now is None else now
        return st.last_valid is not None and now - st.last_valid <= self.timeout

    def links_alive(self, now: float | None = None) -> dict[str, bool]:
        now = self._clock() if now is None else now
        return {name: self.link_alive(name, now) for name in self._links}

    def peer_alive(self, now: float | None = None) -> bool:
        """Alive on any link: one working link is proof enough that the peer runs."""
        return any(self.links_alive(now).values())

    def peer_state(self) -> Heartbeat | None:
        """The peer's latest valid heartbeat (None before first contact); may be stale: check peer_alive()."""
        return self._peer

    def auth_failing(self, now: float | None = None) -> list[str]:
        """The links on which the peer's address sent datagrams that failed the MAC within `timeout`,
        while no valid heartbeat arrived on any link for `timeout` ([] otherwise).

        Non-empty: the peer runs, but with a different pair key. It is a diagnosis for the operator,
        never liveness evidence (an unauthenticated datagram proves nothing about the peer)."""
        now = self._clock() if now is None else now
        if self.peer_alive(now):
            return []
        return [name for name, st in self._links.items()
                if st.last_bad_mac is not None and now - st.last_bad_mac <= self.timeout]

    def link_names(self) -> list[str]:
        return list(self._links)

    def rtts(self) -> dict[str, float | None]:
        """Per link: its last measured heartbeat round trip in seconds (None: not measured yet, or
        the link is down now: an old figure would pass for a live one)."""
        now = self._clock()
        return {name: st.rtt if self.link_alive(name, now) else None for name, st in self._links.items()}

    def last_heard(self, link: str) -> float | None:
        return self._links[link].last_valid

    def stats(self) -> dict[str, dict[str, int]]:
        """Per link: sent, received, accepted, and drops by reason (for status --json and tests)."""
        return {name: dict(st.counts) for name, st in self._links.items()}

    def _emit(self, kind: EventKind, at: float, link: str | None, detail: str) -> HeartbeatEvent:
        ev = HeartbeatEvent(kind, at, link, detail)
        level = self._log.warning if kind in (EventKind.LINK_DOWN, EventKind.PEER_LOST) else self._log.info
        level("heartbeat." + kind.value.replace("_", "."), link=link, detail=detail)
        if self.events.full():
            self.events.get_nowait()  # keep the newest: the daemon wants the current picture
        self.events.put_nowait(ev)
        if self.on_change is not None:
            self.on_change()
        return ev
