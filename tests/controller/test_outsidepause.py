"""OutsidePause's rules (pure logic; a stand-in QMP answers query-status): a plain pause is undone
and counted, a checkpoint's stop (run state colo) or another stop is left alone."""

from __future__ import annotations

import asyncio
from typing import Any

from coserver.controller.outsidepause import OutsidePause


class FakeQmp:
    def __init__(self, status: str) -> None:
        self.status = status
        self.calls: list[str] = []

    async def execute(self, cmd: str, args: Any = None, *, deadline: float | None = None) -> Any:
        self.calls.append(cmd)
        if cmd == "query-status":
            return {"status": self.status, "running": self.status == "running"}
        if cmd == "cont":
            self.status = "running"
        return {}

    async def probe(self, cmd: str, *, deadline: float) -> Any:
        assert cmd.startswith("query-")
        return await self.execute(cmd, deadline=deadline)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_a_plain_pause_is_resumed_and_said() -> None:
    op, qmp = OutsidePause(), FakeQmp("paused")
    assert op.as_json() is None
    assert run(op.is_paused(qmp, deadline=1))
    assert run(op.resume(qmp, 100.0, host="cs1", ftserver="journal", role="primary", deadline=1, now=100.3))
    assert qmp.calls == ["query-status", "query-status", "cont"] and qmp.status == "running"
    got = op.as_json()
    assert got is not None and got["count"] == 1 and got["paused_ms"] == 300.0
    assert "coserver server stop" in got["message"]
    # resumed meanwhile (a checkpoint came first): nothing to undo, nothing counted
    assert not run(op.resume(qmp, 101.0, host="cs1", ftserver="journal", role="primary", deadline=1, now=101.2))
    assert op.count == 1 and qmp.calls[-1] == "query-status"


def test_a_checkpoint_or_other_stop_is_left_alone() -> None:
    for status in ("colo", "io-error", "inmigrate", "finish-migrate", "shutdown"):
        op, qmp = OutsidePause(), FakeQmp(status)
        assert not run(op.is_paused(qmp, deadline=1))
        assert not run(op.resume(qmp, 5.0, host="cs2", ftserver="journal", role="secondary", deadline=1, now=6.0))
        assert "cont" not in qmp.calls and op.as_json() is None
