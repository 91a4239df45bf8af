"""What the heartbeats must remember across a controller restart: our generation and the peer's.

Replay protection by a random per-start instance id failed (issue 14): a receiver must accept a
restarted peer at once, so it accepted ANY instance it had not seen while the link was silent, and
a datagram captured earlier, replayed after a 1.5 s silence, made a dead peer alive with an old
epoch. Ordering restarts needs a number that only grows, whatever happens to either process:

* our generation: read, incremented and fsync'd here at every start (next_generation), so a
  restarted sender is strictly newer than anything it sent before. It is also at least the wall
  clock in milliseconds: a host whose state file was lost (a new disk) still starts above the
  generation its peer remembers, unless its clock also went back (then the peer drops it as a
  replay and counts it; remove the peer's entry here and restart the peer's controller).
* the peer's highest generation, and the freshness baseline of its timestamps (PeerMark),
  written when the generation grows or the baseline moves (rare: not per datagram). Persisting
  them is the choice made over "the first message after our restart wins": a receiver that
  forgot would accept a replay of any generation just after its own restart, exactly when it is
  deciding whether its peer is there.

The file is JSON, mode 0600, replaced atomically (write, fsync, rename, fsync the directory).
A file we cannot read is a one-line HeartbeatError at start: guessing a generation could make
the peer drop our heartbeats as replays, which looks like a dead host.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from coserver.controller.errors import HeartbeatError


@dataclass(frozen=True)
class PeerMark:
    """What we know of one peer: its highest generation, and (measured during our boot `boot_id`)
    the smallest delay baseline `offset` = our clock - its timestamp, taken at our clock `at`."""

    generation: int
    boot_id: str = ""
    offset: float = 0.0
    at: float = 0.0


class HeartbeatState:
    """The persistent heartbeat state of one controller (one FT server on one host).

    path None: nothing persists (unit tests, one-off tools); generations then still grow with the
    wall clock across starts."""

    def __init__(self, path: Path | None, *, wallclock: Callable[[], float] = time.time) -> None:
        self.path = Path(path) if path is not None else None
        self._wallclock = wallclock
        self.generation = 0
        self.peers: dict[str, PeerMark] = {}
        if self.path is not None:
            self._load(self.path)

    def _load(self, path: Path) -> None:
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise HeartbeatError(f"heartbeat state {path}: cannot read: {exc.strerror}") from None
        try:
            data: Any = json.loads(raw)
            generation = data["generation"]
            peers = data.get("peers", {})
            if not isinstance(generation, int) or isinstance(generation, bool) or generation < 0 \
                    or not isinstance(peers, dict):
                raise ValueError
            marks = {}
            for node, m in peers.items():
                mark = PeerMark(generation=m["generation"], boot_id=m.get("boot_id", ""),
                                offset=float(m.get("offset", 0.0)), at=float(m.get("at", 0.0)))
                if not isinstance(node, str) or not isinstance(mark.generation, int) \
                        or not isinstance(mark.boot_id, str) or not math.isfinite(mark.offset + mark.at):
                    raise ValueError
                marks[node] = mark
        except (ValueError, TypeError, KeyError, AttributeError):
            raise HeartbeatError(f"heartbeat state {path}: not a heartbeat state file ({len(raw)} bytes); "
                                 "move it away only if this host's peer is stopped or restarts after it "
                                 "(the generations start again from the clock)") from None
        self.generation, self.peers = generation, marks

    def next_generation(self) -> int:
        """This start's generation: above every earlier one, and saved before any heartbeat leaves."""
        self.generation = max(self.generation + 1, int(self._wallclock() * 1000))
        self.save()
        return self.generation

    def peer(self, node: str) -> PeerMark | None:
        return self.peers.get(node)

    def remember(self, node: str, mark: PeerMark) -> None:
        """Keep `mark` for `node` and save it. A write that fails is logged by the caller and
        retried at the next change: the in-memory state still protects this run."""
        self.peers[node] = mark
        self.save()

    def save(self) -> None:
        if self.path is None:
            return
        data = json.dumps({"generation": self.generation,
                           "peers": {n: asdict(m) for n, m in sorted(self.peers.items())}},
                          sort_keys=True).encode() + b"\n"
        tmp = self.path.with_name(f".{self.path.name}.new")
        try:
            tmp.unlink(missing_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
            dfd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError as exc:
            raise HeartbeatError(f"heartbeat state {self.path}: cannot write: {exc.strerror}") from None
