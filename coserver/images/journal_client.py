"""A small synchronous client of the lab guest's journal service (TCP, one line each way).

    with JournalClient("127.0.0.1", 7777) as j:
        seq = j.append("hello")      # returns only after the guest fsync'ed it
        assert j.get(seq) == "hello" and j.count() >= seq

append/count/get/info raise JournalError on an `ERR <reason>` reply (its .reason holds the
text) and on a broken or timed-out connection; request() returns any reply line as it is.
"""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass
from typing import Any, Callable

from coserver.images.errors import JournalError

MAX_TEXT = 4096  # bytes of one record's text (journal.c MAX_TEXT)
MAX_REPLY = MAX_TEXT + 64


@dataclass(frozen=True)
class MemStat:
    """The guest's MEMSTAT reply."""

    mib: int
    filled_mib: int
    rate_mib_s: int
    dirtied_pages: int


class JournalClient:
    """One TCP connection to a journal service."""

    def __init__(self, host: str, port: int, timeout: float = 10.0, *,
                 connect: Callable[[str, int, float], socket.socket] | None = None) -> None:
        """connect(host, port, timeout) makes the TCP connection; the default dials from here.
        The lab passes one that dials from inside a network namespace."""
        self.host, self.port, self.timeout = host, port, timeout
        self._where = f"journal {host}:{port}"
        try:
            if connect is None:
                self._sock = socket.create_connection((host, port), timeout=timeout)
            else:
                self._sock = connect(host, port, timeout)
                self._sock.settimeout(timeout)
        except OSError as exc:
            raise JournalError(f"{self._where}: cannot connect: {exc.strerror or exc}") from exc
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buf = b""

    # -- plumbing

    def close(self) -> None:
        try:
            self._sock.close()
        except OSError:
            pass

    def __enter__(self) -> JournalClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send_raw(self, data: bytes) -> None:
        """Send bytes as they are (tests use it for partial and pipelined requests)."""
        try:
            self._sock.sendall(data)
        except OSError as exc:
            raise JournalError(f"{self._where}: send failed: {exc.strerror or exc}") from exc

    def read_line(self) -> str:
        """The next reply line, without its newline."""
        while b"\n" not in self._buf:
            if len(self._buf) > MAX_REPLY:
                raise JournalError(f"{self._where}: reply longer than {MAX_REPLY} bytes")
            try:
                chunk = self._sock.recv(65536)
            except socket.timeout as exc:
                raise JournalError(f"{self._where}: no reply within {self.timeout:g} s") from exc
            except OSError as exc:
                raise JournalError(f"{self._where}: receive failed: {exc.strerror or exc}") from exc
            if not chunk:
                raise JournalError(f"{self._where}: connection closed by the service")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line.decode("utf-8", "replace")

    def request(self, line: str) -> str:
        """Send one request line, return the reply line (ERR replies included, not raised)."""
        if "\n" in line:
            raise JournalError(f"{self._where}: a request is one line (no newline)")
        self.send_raw(line.encode() + b"\n")
        return self.read_line()

    def _expect(self, line: str, word: str) -> str:
        reply = self.request(line)
        if reply.startswith("ERR"):
            reason = reply[4:] if reply.startswith("ERR ") else ""
            raise JournalError(f"{self._where}: {line.split(' ', 1)[0]} refused: {reason}", reason)
        head, _, rest = reply.partition(" ")
        if head != word:
            raise JournalError(f"{self._where}: unexpected reply {reply[:80]!r} to {line[:40]!r}")
        return rest

    # -- the protocol

    def append(self, text: str) -> int:
        """Append one record; returns its seq once the service has fsync'ed it."""
        if any(c in text for c in "\n\r\0"):
            raise JournalError(f"{self._where}: text may not hold newline, CR or NUL")
        if len(text.encode()) > MAX_TEXT:
            raise JournalError(f"{self._where}: text longer than {MAX_TEXT} bytes")
        rest = self._expect(f"APPEND {text}", "OK")
        try:
            return int(rest)
        except ValueError as exc:
            raise JournalError(f"{self._where}: bad OK reply {rest[:40]!r}") from exc

    def count(self) -> int:
        rest = self._expect("COUNT", "COUNT")
        try:
            return int(rest)
        except ValueError as exc:
            raise JournalError(f"{self._where}: bad COUNT reply {rest[:40]!r}") from exc

    def get(self, seq: int) -> str:
        rest = self._expect(f"GET {int(seq)}", "LINE")
        got, _, text = rest.partition(" ")
        if got != str(seq):
            raise JournalError(f"{self._where}: asked for record {seq}, got {got[:20]!r}")
        return text

    def info(self) -> dict[str, Any]:
        rest = self._expect("INFO", "INFO")
        try:
            data = json.loads(rest)
        except ValueError as exc:
            raise JournalError(f"{self._where}: INFO reply is not JSON ({exc})") from exc
        if not isinstance(data, dict):
            raise JournalError(f"{self._where}: INFO reply is not a JSON object")
        return data

    def reboot(self) -> None:
        """Ask the guest to reboot itself (after this reply the connection dies with the guest)."""
        self._expect("REBOOT", "OK")

    def poweroff(self) -> None:
        """Ask the guest to power itself off (a guest-initiated shutdown, not the power button)."""
        self._expect("POWEROFF", "OK")

    def memload(self, mib: int, rate_mib_s: int = 32) -> None:
        """Have the guest fill `mib` MiB of RAM (non-zero) and keep dirtying it at `rate_mib_s`; 0 ends it."""
        self._expect(f"MEMLOAD {int(mib)} {int(rate_mib_s)}", "OK")

    def memstat(self) -> MemStat:
        """The guest's memory load: asked, filled so far, dirtying rate, pages dirtied since it filled."""
        rest = self._expect("MEMSTAT", "MEMSTAT")
        try:
            mib, filled, rate, pages = (int(x) for x in rest.split())
        except ValueError as exc:
            raise JournalError(f"{self._where}: bad MEMSTAT reply {rest[:60]!r}") from exc
        return MemStat(mib, filled, rate, pages)

    def wait_memload(self, mib: int, rate_mib_s: int = 32, timeout: float = 120.0) -> MemStat:
        """memload(), then wait until the guest has filled all of it (TCG: about 1 s per 100 MiB)."""
        self.memload(mib, rate_mib_s)
        end = time.monotonic() + timeout
        while True:
            stat = self.memstat()
            if stat.filled_mib >= mib:
                return stat
            if stat.mib != mib or time.monotonic() > end:
                raise JournalError(f"{self._where}: the guest filled {stat.filled_mib} of {mib} MiB "
                                   f"in {timeout:.0f} s" + ("" if stat.mib == mib else " (the load ended: out of memory?)"))
            time.sleep(0.2)


def wait_for_journal(host: str, port: int, timeout: float = 60.0,
                     interval: float = 0.2) -> JournalClient:
    """A connected client once the service answers COUNT; JournalError after `timeout` s.

    Answering matters, not connecting: QEMU's user-mode hostfwd accepts a connection even
    while nothing listens in the guest, then closes it.
    """
    deadline = time.monotonic() + timeout
    last = "no attempt"
    while True:
        attempt = max(0.5, min(5.0, deadline - time.monotonic()))
        try:
            c = JournalClient(host, port, timeout=attempt)
            try:
                c.count()
            except JournalError:
                c.close()
                raise
            c.timeout = 10.0
            c._sock.settimeout(c.timeout)
            return c
        except JournalError as exc:
            last = str(exc).removeprefix(f"journal {host}:{port}: ")
        if time.monotonic() >= deadline:
            raise JournalError(f"journal {host}:{port}: not answering after {timeout:g} s ({last})")
        time.sleep(interval)
