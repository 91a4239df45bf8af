"""A pause the controller did not ask for (`virsh suspend`, another QMP client's `stop`) is refused.

An FT server's two copies stay in step only while both run: COLO's next checkpoint resumes a paused
copy by itself (QEMU starts the VM again after every checkpoint), so a `virsh suspend` of a protected
domain "works" for up to one checkpoint period and is then undone without a word, while libvirt
reports the domain running again and the operator believes it was paused. libvirt has no hook for
suspend (hooks see start and stop only), so it cannot be refused before it happens; the controller
sees it the moment QEMU reports STOP, resumes the guest at once and says why (its log, `coserver
status`: `pause_refused`), so the pause lasts a fraction of a second and nobody is misled. Pausing an
FT server on purpose is stopping it: `coserver server stop` (a planned stop on both hosts).

A checkpoint stops the guest too (QEMU's run state "colo" while it lasts): each STOP is told apart
by one query-status the moment it arrives (one per checkpoint: a fraction of a millisecond of the
controller's CPU). Waiting for the stop to last instead lost the race to the next checkpoint in about
one try in four at a 1 s period: the pause was then undone unseen. A `stop` that arrives while a
checkpoint holds the guest is applied by our QEMU when the checkpoint ends, with a STOP event of its
own (qemu/patches 0014): stock QEMU drops it without a word, so nobody could refuse it or say so.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol

from coserver import log

_log = log.get("controller")

#: QEMU's run state after a plain `stop` (QMP), which is what `virsh suspend` sends.
PAUSED = "paused"
MESSAGE = ("paused from outside coserver (virsh suspend or a QMP stop): resumed at once, a protected "
           "FT server's copies must run to stay in step; stop it with `coserver server stop`")


class _Qmp(Protocol):
    async def execute(self, cmd: str, args: Any = None, *, deadline: float | None = None) -> Any: ...

    async def probe(self, cmd: str, *, deadline: float) -> Any: ...


@dataclass
class OutsidePause:
    """Counts and undoes pauses of a protected copy that the controller did not make."""

    count: int = 0
    last_at: float | None = None        # wall clock of the last refusal
    last_paused_ms: float | None = None  # how long the guest had been stopped when it was resumed

    @staticmethod
    async def is_paused(qmp: _Qmp, *, deadline: float) -> bool:
        """Is the guest stopped by a plain `stop` (not a checkpoint, a migration or an I/O error)?

        A probe: a checkpoint of much dirty RAM holds QEMU's main loop for seconds, and a missed
        deadline must not mark the controller's one session unhealthy (the health loop judges hangs)."""
        st = await qmp.probe("query-status", deadline=deadline)
        return bool(st.get("status") == PAUSED)

    async def resume(self, qmp: _Qmp, stopped_since: float, *, host: str, ftserver: str, role: str,
                     deadline: float, now: float | None = None) -> bool:
        """Resume the guest if it is still so paused, and say so. True if it was."""
        if not await self.is_paused(qmp, deadline=deadline):
            return False
        await qmp.execute("cont", deadline=deadline)
        now = time.monotonic() if now is None else now
        self.count += 1
        self.last_at = time.time()
        self.last_paused_ms = round(1000 * (now - stopped_since), 1)
        _log.warning("controller.pause.refused", host=host, ftserver=ftserver, role=role,
                     paused_ms=self.last_paused_ms, count=self.count, message=MESSAGE)
        return True

    def as_json(self) -> dict[str, Any] | None:
        """`pause_refused` in status (None until a pause was refused)."""
        if not self.count:
            return None
        return {"count": self.count, "at": self.last_at, "paused_ms": self.last_paused_ms, "message": MESSAGE}
