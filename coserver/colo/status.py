"""Read a COLO side's state from QEMU itself: mode, exit reason, checkpoint count.

Checkpoints are counted from QEMU's own events: every COLO checkpoint ends
in one dirty-bitmap sync (ram_save_complete), and with the `events`
migration capability the primary emits MIGRATION_PASS for each sync, with
the running pass number. `query-migrate` cannot be used: in the COLO state
QEMU reports no RAM statistics at all (a TODO in migration.c). The guest's
pause per checkpoint is the time between the primary's STOP and RESUME
events (QEMU's own timestamps).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from coserver.qmp.errors import QmpError
from coserver.qmp.session import QmpListener, QmpSession, event_data


@dataclass(frozen=True)
class ColoState:
    """One side as QEMU reports it."""

    mode: str            # "primary" | "secondary" | "none"
    last_mode: str       # the mode before the last failover ("none" if never)
    reason: str          # "none" | "request" | "error" | "processing"
    migration: str       # query-migrate status, e.g. "colo", "none", "completed"
    running: bool


async def read_state(qmp: QmpSession, deadline: float) -> ColoState:
    """Three queries under `deadline` each; a hung QEMU raises QmpTimeout."""
    colo = await qmp.execute("query-colo-status", deadline=deadline)
    mig = await qmp.execute("query-migrate", deadline=deadline)
    st = await qmp.execute("query-status", deadline=deadline)
    return ColoState(
        mode=colo.get("mode", "none"),
        last_mode=colo.get("last-mode", "none"),
        reason=colo.get("reason", "none"),
        migration=mig.get("status", "none"),
        running=bool(st.get("running")),
    )


def _event_time(ev: Mapping[str, object]) -> float:
    stamp = ev.get("timestamp")
    ts: Mapping[str, Any] = stamp if isinstance(stamp, Mapping) else {}
    return float(ts.get("seconds", 0)) + float(ts.get("microseconds", 0)) / 1e6


@dataclass
class CheckpointWatch:
    """Counts the primary's checkpoints and guest pauses from its QMP events.

    Start it right after COLO is entered; it counts MIGRATION_PASS events
    from then on. Needs the `events` migration capability (Primary.protect
    sets it).
    """

    qmp: QmpSession
    count: int = 0
    pass_number: int = 0
    times: list[float] = field(default_factory=list)    # QEMU timestamps of each checkpoint
    pauses: list[float] = field(default_factory=list)   # seconds the guest was stopped, per STOP/RESUME
    _listener: QmpListener | None = None
    _task: asyncio.Task[None] | None = None
    _stopped_at: float | None = None

    def start(self) -> None:
        self._listener = self.qmp.listen("MIGRATION_PASS", "STOP", "RESUME")
        self._task = asyncio.get_running_loop().create_task(self._consume(), name="checkpoint-watch")

    async def _consume(self) -> None:
        assert self._listener is not None
        try:
            async for ev in self._listener:
                name, at = ev.get("event"), _event_time(ev)
                if name == "MIGRATION_PASS":
                    self.count += 1
                    self.pass_number = int(event_data(ev).get("pass", 0))
                    self.times.append(at)
                elif name == "STOP":
                    self._stopped_at = at
                elif name == "RESUME" and self._stopped_at is not None:
                    self.pauses.append(at - self._stopped_at)
                    self._stopped_at = None
        except QmpError:
            return  # connection gone: the count stands as it was

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, QmpError):
                pass
        if self._listener is not None:
            self._listener.close()
