"""Bytes the kernel counted on TCP connections, per named port, read with `ss -ti`.

Why the kernel: it keeps tcpi_bytes_acked / tcpi_bytes_received for every connection, so a
stream's traffic is known without being on its data path (QEMU's COLO streams report nothing while
in COLO). One `ss -tinH` run lists every connection of the namespace; each is counted under the
name of the port it uses at either end (a stream we dialled or one we accept), optionally only
connections with one peer address. Used by the controller's metrics (at scrape time) and by the
benchmark (around each measured phase).
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field

from coserver.sys.netns import exec_argv

SS_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class StreamBytes:
    """One stream's totals over its live connections, as this host sees them."""

    sent: int = 0        # acknowledged by the peer (tcpi_bytes_acked): delivered
    received: int = 0    # tcpi_bytes_received
    #: Send-Q: written by the local end and not yet acknowledged by the peer (in flight or waiting).
    #: Not part of equality: "moved" means bytes delivered or received, not bytes queued.
    queued: int = field(default=0, compare=False)


def _endpoint(text: str) -> tuple[str, int]:
    """'10.0.0.1:9998' / '[fe80::1]:9998' / '::ffff:10.0.0.1:9998' → (address, port)."""
    addr, _, port = text.rpartition(":")
    addr = addr.strip("[]")
    if addr.startswith("::ffff:"):
        addr = addr[len("::ffff:"):]
    addr = addr.split("%", 1)[0]
    return addr, int(port) if port.isdigit() else -1


def counter(info: str, name: str) -> int:
    """One `name:N` counter of a connection's info line (0 if absent)."""
    for word in info.split():
        if word.startswith(name + ":"):
            value = word[len(name) + 1:]
            return int(value) if value.isdigit() else 0
    return 0


def ss_connections(text: str) -> list[tuple[list[str], str]]:
    """`ss -tiH` output as (columns of the connection line: State Recv-Q Send-Q Local Peer [Process],
    its info line) per connection; a connection without an info line gets ""."""
    out: list[tuple[list[str], str]] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        if not line[0].isspace():   # a connection
            cols = line.split()
            if len(cols) >= 5:
                out.append((cols, ""))
        elif out and not out[-1][1]:  # its info line
            out[-1] = (out[-1][0], line)
    return out


def parse_ss(text: str, ports: Mapping[str, int], peer: str | None = None) -> dict[str, StreamBytes]:
    """Sum `ss -tinH` output per stream: the connections on its port (at either end), with `peer`
    only when one is given. Every stream of `ports` is in the result (0 when it has no connection)."""
    by_port = {port: name for name, port in ports.items()}
    totals = {name: [0, 0, 0] for name in ports}
    for cols, info in ss_connections(text):
        (_, lport), (raddr, rport) = _endpoint(cols[3]), _endpoint(cols[4])
        if peer is not None and raddr != peer:
            continue
        name = by_port.get(rport) or by_port.get(lport)
        if name is not None:
            totals[name][0] += counter(info, "bytes_acked")
            totals[name][1] += counter(info, "bytes_received")
            totals[name][2] += int(cols[2]) if cols[2].isdigit() else 0
    return {name: StreamBytes(sent, received, queued) for name, (sent, received, queued) in totals.items()}


def stream_bytes(ports: Mapping[str, int], *, peer: str | None = None,
                 ns: str | None = None) -> dict[str, StreamBytes] | None:
    """parse_ss() of this namespace's (or `ns`'s) connections now; None if `ss` cannot be run."""
    try:
        res = subprocess.run(exec_argv(ns, ["ss", "-tinH"]), capture_output=True, text=True,
                             timeout=SS_TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    if res.returncode != 0:
        return None
    return parse_ss(res.stdout, ports, peer)


async def stream_bytes_async(ports: Mapping[str, int], *, peer: str | None = None) -> dict[str, StreamBytes] | None:
    """stream_bytes() for an asyncio loop (this namespace): the loop keeps running while `ss` does."""
    try:
        proc = await asyncio.create_subprocess_exec("ss", "-tinH", stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.DEVNULL)
    except OSError:
        return None
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), SS_TIMEOUT_S)
    except TimeoutError:
        # ss may have exited between the timeout and this kill (a host stalled for a second does that):
        # asyncio then raises ProcessLookupError, which stopped a controller's health task in the Vagrant lab
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        return None
    if proc.returncode != 0:
        return None
    return parse_ss(out.decode(errors="replace"), ports, peer)
