"""Run named QMP steps under deadlines, turning any QMP failure into a ColoStepError.

Sequences (start, sync, failover) are lists of named steps; when one fails
the error says which role, which node, which step and why, so an operator
reading one line knows where a start broke.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Callable

from coserver import log
from coserver.colo.errors import ColoStepError
from coserver.qmp.errors import QmpError, QmpTimeout
from coserver.qmp.session import QmpSession

_log = log.get("colo")


class StepRunner:
    """Executes QMP commands for one role on one node, each under a deadline."""

    def __init__(self, qmp: QmpSession, role: str, node: str, deadline: float) -> None:
        self.qmp, self.role, self.node, self.deadline = qmp, role, node, deadline

    def fail(self, step: str, reason: object) -> ColoStepError:
        return ColoStepError(self.role, self.node, step, reason)

    async def run(self, cmd: str, args: dict[str, Any] | None = None, *, step: str | None = None,
                  deadline: float | None = None) -> Any:
        """Execute one command; raise ColoStepError naming the step on any QMP error."""
        try:
            return await self.qmp.execute(cmd, args, deadline=deadline or self.deadline)
        except QmpError as exc:
            raise self.fail(step or cmd, exc) from exc

    async def run_all(self, commands: list[tuple[str, dict[str, Any]]], *, step: str) -> None:
        for cmd, args in commands:
            await self.run(cmd, args, step=f"{step}: {cmd} {args.get('id', '')}".rstrip())

    async def best_effort(self, cmd: str, args: dict[str, Any] | None = None, *, deadline: float | None = None) -> bool:
        """Execute, log and swallow a failure: for undo paths and failover clean-up.

        A missed deadline is *not* swallowed: a hung QEMU must be acted on.
        """
        try:
            await self.qmp.execute(cmd, args, deadline=deadline or self.deadline)
            return True
        except QmpError as exc:
            if isinstance(exc, QmpTimeout):
                raise self.fail(cmd, exc) from exc
            _log.info("colo.step.skipped", role=self.role, node=self.node, command=cmd, reason=str(exc))
            return False

    async def poll(self, step: str, probe: Callable[[], Any], *, timeout: float,
                   interval: float = 0.1) -> Any:
        """Call async `probe` until it returns a truthy value; ColoStepError on timeout."""
        end = time.monotonic() + timeout
        while True:
            result = await probe()
            if result:
                return result
            if time.monotonic() >= end:
                raise self.fail(step, f"not done after {timeout:.0f} s")
            await asyncio.sleep(interval)
