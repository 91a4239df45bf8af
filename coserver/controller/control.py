"""The control socket: how operators (and the lab) talk to one controller.

A unix stream socket, mode 0600, one JSON object per line each way. Requests
carry "cmd" (a Command) and its arguments; every reply carries "ok" and, when
false, "error" (one line). The server side runs inside the daemon; the client
side (ask) is what `coserver status --socket`, the pair client and the lab use.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
from collections.abc import Awaitable, Callable
from enum import StrEnum
from pathlib import Path
from typing import Any

from coserver.controller.errors import ControlError
from coserver.errors import CoserverError

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class Command(StrEnum):
    STATUS = "status"            # -> {"status": {...}}
    RELINQUISH = "relinquish"    # {"reason"}: the primary stops so the secondary takes over (manual failover)
    REJOIN = "rejoin"            # re-protect now (also under reprotect=manual)
    MAINTENANCE = "maintenance"  # {"on": bool}: take this CoServer out of the pair, or bring it back
    START = "start"              # the operator wants the FT server running (server start)
    STOP = "stop"                # ... stopped: guest shut down, both sides stopped, no failover (server stop)
    ENABLE = "enable"            # {"on": bool}: start it when the host boots (server enable/disable)
    QEMU_RELEASED = "qemu-released"  # {"name", "reason", "domain", "role", "epoch"}: libvirt's hook says this
                                     # FT server's QEMU is gone (coserver.libvirt.hook; recorded, decides nothing)


async def serve(path: str | Path, handle: Handler) -> asyncio.Server:
    """Serve `handle` on a unix socket at `path` (0600): one JSON request per line, one reply per line.

    A request that is not JSON, or whose handling raises a CoserverError, is answered
    {"ok": false, "error": ...}; the connection stays usable.
    """

    async def one_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                try:
                    reply = await handle(json.loads(line))
                except (ValueError, CoserverError) as exc:
                    reply = {"ok": False, "error": str(exc)}
                writer.write(json.dumps(reply, default=str).encode() + b"\n")
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_unix_server(one_client, path=str(path))
    os.chmod(path, 0o600)
    return server


def recv_line(s: socket.socket, limit: int | None = None) -> bytes:
    """Read one reply line (up to the peer closing); ControlError past `limit` bytes."""
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
        if limit is not None and len(buf) > limit:
            raise ControlError(f"reply longer than {limit} bytes")
    return buf


def ask(path: str | Path, request: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
    """One JSON request/reply with a controller's control socket; ControlError unless the reply is ok."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(path))
            s.sendall(json.dumps(request).encode() + b"\n")
            buf = recv_line(s)
        reply = json.loads(buf)
    except (OSError, ValueError) as exc:
        raise ControlError(f"{path}: {exc}") from exc
    if not reply.get("ok"):
        raise ControlError(str(reply.get("error")))
    return dict(reply)
