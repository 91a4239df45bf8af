"""OutsidePause's rules (pure logic; a stand-in QMP answers query-status): a plain pause that lasts
is undone and counted once, a checkpoint's stop or a young stop is left alone."""

from __future__ import annotations

import asyncio
from typing import Any

from coserver.controller.outsidepause import OUTSIDE_PAUSE_AFTER_S, OutsidePause


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


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_a_lasting_plain_pause_is_resumed_and_said_once() -> None:
    op, qmp = OutsidePause(), FakeQmp("paused")
    assert op.as_json() is None
    assert not op.due(None, 100.0)                                  # running: nothing to ask
    assert not op.due(100.0, 100.0 + OUTSIDE_PAUSE_AFTER_S / 2)     # young: maybe a checkpoint
    assert op.due(100.0, 100.0 + OUTSIDE_PAUSE_AFTER_S)
    assert run(op.check(qmp, 100.0, host="cs1", ftserver="journal", role="primary", deadline=1, now=100.4))
    assert qmp.calls == ["query-status", "cont"] and qmp.status == "running"
    assert not op.due(100.0, 101.0)                                 # this stop was asked about already
    got = op.as_json()
    assert got is not None and got["count"] == 1 and got["paused_ms"] == 400.0
    assert "coserver server stop" in got["message"]


def test_a_checkpoint_or_other_stop_is_left_alone() -> None:
    for status in ("colo", "io-error", "inmigrate", "finish-migrate"):
        op, qmp = OutsidePause(), FakeQmp(status)
        assert not run(op.check(qmp, 5.0, host="cs2", ftserver="journal", role="secondary", deadline=1, now=6.0))
        assert qmp.calls == ["query-status"] and op.as_json() is None
        assert not op.due(5.0, 9.0)            # asked once per stop, however long it lasts
        assert op.due(7.0, 9.0)                # the next stop is asked about again
