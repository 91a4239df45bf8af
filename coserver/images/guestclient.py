"""Talk to an FT server's journal service from inside a lab namespace, and check nothing was lost.

"Nothing lost" everywhere in coserver means: every `OK <seq>` a client
received is still readable with GET and holds the same text.
missing_acks() is that check, shared by the self-test, the lab and tests.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import pairwise

from coserver.errors import CoserverError
from coserver.images.errors import JournalError
from coserver.images.journal_client import JournalClient
from coserver.sys import netns


def connect_journal(ns: str | None, host: str, port: int, timeout: float = 5.0) -> JournalClient:
    """A JournalClient whose TCP connection is made from namespace `ns` (here if None)."""
    return JournalClient(host, port, timeout, connect=functools.partial(_dial, ns))


def _dial(ns: str | None, host: str, port: int, timeout: float):
    return netns.socket_in(ns, host, port, timeout)


def missing_acks(client: JournalClient, acked: Mapping[int, str]) -> list[int]:
    """The acknowledged seqs whose record is gone or differs (empty list: nothing lost)."""
    missing = []
    for seq, text in sorted(acked.items()):
        try:
            if client.get(seq) != text:
                missing.append(seq)
        except JournalError as exc:
            if exc.reason is None:  # connection trouble, not an ERR reply: cannot judge
                raise
            missing.append(seq)
    return missing


@dataclass
class Ack:
    seq: int
    text: str
    sent: float   # time.monotonic() when the APPEND went out
    acked: float  # when its OK arrived


@dataclass
class WriterResult:
    acks: list[Ack] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    reconnects: int = 0

    @property
    def acked(self) -> dict[int, str]:
        return {a.seq: a.text for a in self.acks}

    def largest_gap(self) -> float:
        """The longest time between two consecutive acks: the client-visible outage."""
        times = [a.acked for a in self.acks]
        return max((b - a for a, b in pairwise(times)), default=0.0)


class Writer:
    """A client that appends every `interval` s from a thread until stopped, reconnecting on errors.

    It is what a user's application does to the FT server, and what every fault test and
    benchmark measures: each acknowledged append (for the nothing-lost check) and when it
    came (for the client-visible gap).
    """

    def __init__(self, ns: str | None, host: str, port: int, *, interval: float = 0.02, tag: str = "w",
                 timeout: float = 5.0) -> None:
        self.ns, self.host, self.port = ns, host, port
        self.interval, self.tag, self.timeout = interval, tag, timeout
        self.result = WriterResult()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"writer-{tag}", daemon=True)

    def start(self) -> Writer:
        self._thread.start()
        return self

    def stop(self) -> WriterResult:
        self._stop.set()
        self._thread.join(timeout=self.timeout + 5)
        return self.result

    def _run(self) -> None:
        client: JournalClient | None = None
        i = 0
        while not self._stop.is_set():
            try:
                if client is None:
                    client = connect_journal(self.ns, self.host, self.port, self.timeout)
                    if i:
                        self.result.reconnects += 1
                text = f"{self.tag}-{i}"
                sent = time.monotonic()
                seq = client.append(text)
                self.result.acks.append(Ack(seq, text, sent, time.monotonic()))
                i += 1
            except CoserverError as exc:
                self.result.errors.append(f"{time.monotonic():.3f} {exc}")
                if client is not None:
                    client.close()
                client = None
                i += 1  # a new text: the failed one may or may not have been applied
            self._stop.wait(self.interval)
        if client is not None:
            client.close()
