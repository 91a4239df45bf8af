"""The control protocol over TCP on the management network: how one CoServer reaches the peer's controller.

Why it exists: the unix control socket (controller.control) only serves the host it sits on,
but an operator's command (`coserver status journal`, `coserver failover journal`) runs on
either CoServer and needs both controllers. So each site controller also serves the same
commands, through the same handler, on its CoServer's management address at the server's
control port (coserver.site.ports: slot + 5). The lab's controllers (--config JSON without
remote_control) do not listen.

Why HMAC with the pair key: the management network is shared with other machines, and whoever
can send a request can fail over or stop an FT server. Until the TLS issue lands, every
request and every reply is authenticated with the pair's key (the heartbeats' key, already on
both hosts, mode 0600): HMAC-SHA256 over the message's canonical JSON (sorted keys, no
spaces), checked over the exact bytes received. Each request carries a timestamp and a random
nonce: one more than MAX_SKEW_S off the server's clock is refused (the hosts' clocks must agree,
NTP), and a nonce already seen within that window is refused as a replay. A reply names the
request's nonce and is MAC'd as a reply, so a recorded reply never answers a later request and
a request cannot be reflected back as a reply. Nothing is encrypted: status travels in clear
(TLS will fix that too).

Wire format, one line each way:

    MAGIC + <64 hex digits: HMAC-SHA256(key, MAGIC + payload)> + " " + payload + "\\n"
    payload (request): {"body": {control request}, "kind": "request", "nonce": <32 hex>, "ts": <unix s>, "v": 1}
    payload (reply):   {"body": {control reply}, "kind": "reply", "nonce": ..., "re": <request nonce>, "ts": ..., "v": 1}

A refused request (bad MAC, stale, replayed, malformed) is answered with an authenticated
{"ok": false, "error": <one line>} and logged once; the connection is then closed.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
import socket
import time
from collections.abc import Callable
from typing import Any

from coserver import log
from coserver.controller.control import Handler, recv_line
from coserver.controller.errors import ControlError
from coserver.errors import CoserverError

_log = log.get("control")

MAGIC = b"CSCTL1 "
VERSION = 1
#: Oldest (or newest) request timestamp accepted, in seconds from the server's clock.
MAX_SKEW_S = 30.0
#: A request line longer than this is refused (requests are a few hundred bytes).
MAX_REQUEST = 64 * 1024
#: A reply longer than this is refused by the client (a status is tens of KiB).
MAX_REPLY = 16 * 1024 * 1024
#: A connection that sends nothing for this long is closed.
IDLE_S = 60.0
#: Nonces remembered at most (only requests with a valid MAC are remembered).
MAX_NONCES = 100_000

Clock = Callable[[], float]


class Refused(ControlError):
    """A message that is not authentic, fresh and well-formed: why, in one line."""


def _mac(key: bytes, payload: bytes) -> str:
    return hmac.new(key, MAGIC + payload, hashlib.sha256).hexdigest()


def seal(key: bytes, kind: str, body: dict[str, Any], *, ts: float | None = None, nonce: str | None = None,
         re: str | None = None) -> bytes:
    """One authenticated line: `kind` "request" or "reply" (a reply names its request's nonce in `re`)."""
    msg: dict[str, Any] = {"v": VERSION, "kind": kind, "ts": time.time() if ts is None else ts,
                           "nonce": nonce or secrets.token_hex(16), "body": body}
    if re is not None:
        msg["re"] = re
    payload = json.dumps(msg, sort_keys=True, separators=(",", ":"), default=str).encode()
    return MAGIC + _mac(key, payload).encode() + b" " + payload + b"\n"


def unseal(key: bytes, line: bytes, kind: str) -> dict[str, Any]:
    """The message in `line` if its MAC checks and it is a well-formed `kind`; else Refused (one line).

    Freshness is the caller's: the server checks ts and nonce, the client checks `re`."""
    line = line.rstrip(b"\n")
    if not line.startswith(MAGIC) or len(line) < len(MAGIC) + 65 or line[len(MAGIC) + 64:len(MAGIC) + 65] != b" ":
        raise Refused("not a coserver control message (wrong protocol or port?)")
    mac = line[len(MAGIC):len(MAGIC) + 64]
    payload = line[len(MAGIC) + 65:]
    if not hmac.compare_digest(mac, _mac(key, payload).encode()):
        raise Refused("bad MAC: the message was not made with this pair's key (key_file differs between the hosts?)")
    try:
        msg = json.loads(payload)
    except ValueError:
        raise Refused("malformed message: not JSON") from None
    if (not isinstance(msg, dict) or msg.get("v") != VERSION or msg.get("kind") != kind
            or not isinstance(msg.get("ts"), (int, float)) or isinstance(msg.get("ts"), bool)
            or not isinstance(msg.get("nonce"), str) or not isinstance(msg.get("body"), dict)):
        raise Refused(f"malformed message: not a version {VERSION} {kind}")
    return msg


class Nonces:
    """The nonces of accepted requests, each kept until its timestamp leaves the window."""

    def __init__(self, window: float = MAX_SKEW_S, limit: int = MAX_NONCES) -> None:
        self.window = window
        self.limit = limit
        self._expires: dict[str, float] = {}

    def check(self, msg: dict[str, Any], now: float) -> None:
        """Refused unless msg's timestamp is within the window of `now` and its nonce is new; then remember it."""
        off = float(msg["ts"]) - now
        if abs(off) > self.window:
            raise Refused(f"stale request: its timestamp is {abs(off):.0f} s {'ahead of' if off > 0 else 'behind'} "
                          f"this host's clock (more than {self.window:.0f} s: replayed, or the clocks disagree)")
        if len(self._expires) >= self.limit:
            self._expires = {n: t for n, t in self._expires.items() if t >= now}
        nonce = str(msg["nonce"])
        if nonce in self._expires:
            raise Refused("replayed request: its nonce was already used")
        if len(self._expires) >= self.limit:
            raise Refused("too many requests in the last minute: try again shortly")
        self._expires[nonce] = float(msg["ts"]) + self.window


async def serve(address: str, port: int, key: bytes, handle: Handler, *, clock: Clock = time.time,
                window: float = MAX_SKEW_S) -> asyncio.Server:
    """Serve `handle` (the control socket's handler) on TCP address:port, every message authenticated."""
    nonces = Nonces(window)

    async def one_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        who = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        try:
            while line := await asyncio.wait_for(reader.readline(), IDLE_S):
                try:
                    msg = unseal(key, line, "request")
                    nonces.check(msg, clock())
                except Refused as exc:
                    _log.warning("control.remote.refused", client=who, reason=str(exc))
                    writer.write(seal(key, "reply", {"ok": False, "error": f"refused: {exc}"}))
                    await writer.drain()
                    break
                try:
                    reply = await handle(msg["body"])
                except (ValueError, CoserverError) as exc:
                    reply = {"ok": False, "error": str(exc)}
                writer.write(seal(key, "reply", reply, re=msg["nonce"]))
                await writer.drain()
        except (ConnectionError, TimeoutError, ValueError):
            pass   # gone, idle, or a line over the limit (asyncio says ValueError): just close
        finally:
            writer.close()

    return await asyncio.start_server(one_client, host=address, port=port, limit=MAX_REQUEST, reuse_address=True)


async def serve_configured(remote_control: dict[str, Any], key: bytes | None, handle: Handler) -> asyncio.Server | None:
    """The controller's TCP control listener as its config says, or None: off (lab), or the address
    cannot be bound (logged; the controller keeps protecting the FT server without it)."""
    if not remote_control:
        return None
    address, port = str(remote_control["address"]), int(remote_control["port"])
    if key is None:
        _log.warning("control.remote.unavailable", address=address, port=port, reason="no pair key loaded")
        return None
    try:
        server = await serve(address, port, key, handle)
    except OSError as exc:
        _log.warning("control.remote.unavailable", address=address, port=port, reason=str(exc))
        return None
    _log.info("control.remote.listening", address=address, port=port)
    return server


def ask(address: str, port: int, key: bytes, request: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
    """One authenticated request/reply with a peer controller; ControlError (one line) unless the reply is ok."""
    where = f"{address}:{port}"
    nonce = secrets.token_hex(16)
    try:
        with socket.create_connection((address, port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(seal(key, "request", request, nonce=nonce))
            try:
                buf = recv_line(s, MAX_REPLY)
            except ControlError as exc:
                raise ControlError(f"{where}: {exc}") from None
    except TimeoutError:
        raise ControlError(f"{where}: no answer within {timeout:g} s") from None
    except OSError as exc:
        raise ControlError(f"{where}: {exc.strerror or exc}") from None
    if not buf:
        raise ControlError(f"{where}: closed without a reply")
    try:
        msg = unseal(key, buf, "reply")
    except Refused as exc:
        raise ControlError(f"{where}: unusable reply: {exc}") from None
    body = msg["body"]
    if msg.get("re") != nonce and body.get("ok") is not False:
        raise ControlError(f"{where}: the reply does not answer this request (replayed?)")
    if not body.get("ok"):
        raise ControlError(f"{where}: {body.get('error')}")
    return dict(body)
