"""Talk to an FT server's journal service from inside a lab namespace, and check nothing was lost.

"Nothing lost" everywhere in coserver means: every `OK <seq>` a client
received is still readable with GET and holds the same text.
missing_acks() is that check, shared by the self-test, the lab and tests.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

from coserver.controller import netns
from coserver.images.errors import JournalError
from coserver.images.journal_client import JournalClient


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
