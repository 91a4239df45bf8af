"""The alert hook: the site's command (site key alert_command), run on each FT state change here.

Why a command: every site alerts differently (mail, a pager, a chat); an argv the operator owns
covers them all without coserver knowing any. It gets one JSON object on stdin:

    {"component": "ftserver", "old": "protected", "new": "simplex", "severity": "critical",
     "ftserver": "journal", "host": "cs2", "reason": "FT server journal on cs2: Protected → Simplex
     (failover done in 40 ms: ...)", "time": "2024-05-01T12:00:00.123+00:00"}

Why it can never hold the controller up: the controller must act on the next tick whatever a
mail server does. Each run is a background task (asyncio's create_subprocess_exec, an argv, never
a shell), killed with its process group after TIMEOUT_S; at most MAX_IN_FLIGHT run at once, and a
change beyond that is dropped and counted (a hook that hangs on every call costs at most that many
processes). A hook that fails, hangs or cannot start is logged, never raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from coserver import log
from coserver.controller.statemachine import FtState, Transition

_log = log.get("controller")

TIMEOUT_S = 10.0
MAX_IN_FLIGHT = 4
#: How bad entering each state is (a recovery is info; losing the replica or fencing, critical).
SEVERITY: dict[FtState, str] = {
    FtState.PROTECTED: "info", FtState.SYNCING: "info", FtState.STARTING: "info", FtState.STOPPING: "info",
    FtState.DEGRADED: "warning", FtState.SIMPLEX: "warning", FtState.STOPPED: "warning",
    FtState.FAILING_OVER: "critical", FtState.FENCED: "critical",
}


def _title(state: FtState) -> str:
    return state.value.replace("_", " ").capitalize()


def event_for(t: Transition, *, ftserver: str, host: str) -> dict[str, Any]:
    """The JSON object a hook gets for one transition of the state machine."""
    return {"component": "ftserver", "old": t.src.value, "new": t.dst.value, "severity": SEVERITY[t.dst],
            "ftserver": ftserver, "host": host,
            "reason": f"FT server {ftserver} on {host}: {_title(t.src)} → {_title(t.dst)} ({t.reason})",
            "time": datetime.fromtimestamp(t.at, UTC).isoformat(timespec="milliseconds")}


class AlertHook:
    """Runs `argv` with each event on stdin, in the background, bounded in time and in number."""

    def __init__(self, argv: Sequence[str], *, ftserver: str, host: str, timeout_s: float = TIMEOUT_S,
                 max_in_flight: int = MAX_IN_FLIGHT) -> None:
        self.argv = list(argv)
        self.ftserver, self.host = ftserver, host
        self.timeout_s = timeout_s
        self.max_in_flight = max_in_flight
        self.dropped = 0       # changes not sent: too many hooks still running
        self.failed = 0        # runs that did not start, exited non-zero or were killed at the timeout
        self.sent = 0          # runs that exited 0
        self._running: set[asyncio.Task[None]] = set()

    def transition(self, t: Transition) -> bool:
        """Tell the hook about one state change (the daemon calls this from _to); never blocks."""
        return self.fire(event_for(t, ftserver=self.ftserver, host=self.host))

    def fire(self, event: dict[str, Any]) -> bool:
        """Start one run with `event` on stdin; False if there is no hook or it was dropped."""
        if not self.argv:
            return False
        if len(self._running) >= self.max_in_flight:
            self.dropped += 1
            _log.error("controller.alerthook.dropped", host=self.host, dropped=self.dropped,
                       running=len(self._running), change=f"{event.get('old')} -> {event.get('new')}")
            return False
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:   # no loop (a synchronous caller): nothing may be spawned
            self.dropped += 1
            return False
        task = loop.create_task(self._run(json.dumps(event, ensure_ascii=False).encode() + b"\n"), name="alert-hook")
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        return True

    @property
    def in_flight(self) -> int:
        return len(self._running)

    async def _run(self, payload: bytes) -> None:
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE, start_new_session=True)   # its own group: killed whole
        except OSError as exc:
            self.failed += 1
            _log.error("controller.alerthook.failed", host=self.host, argv=self.argv[0],
                       reason=exc.strerror or str(exc))
            return
        try:
            _, err = await asyncio.wait_for(proc.communicate(payload), self.timeout_s)
        except TimeoutError:
            self.failed += 1
            await self._kill(proc)
            _log.error("controller.alerthook.timeout", host=self.host, argv=self.argv[0], timeout_s=self.timeout_s)
            return
        except asyncio.CancelledError:
            await self._kill(proc)
            raise
        except Exception as exc:  # noqa: BLE001 - a broken pipe (the hook closed stdin) and such: logged
            self.failed += 1
            await self._kill(proc)
            _log.error("controller.alerthook.failed", host=self.host, argv=self.argv[0], reason=repr(exc))
            return
        if proc.returncode != 0:
            self.failed += 1
            last = (err or b"").decode(errors="replace").strip().splitlines()[-1:] or [""]
            _log.error("controller.alerthook.failed", host=self.host, argv=self.argv[0], status=proc.returncode,
                       stderr=last[0][:200])
        else:
            self.sent += 1

    @staticmethod
    async def _kill(proc: asyncio.subprocess.Process) -> None:
        """SIGKILL the hook's process group (a script's children too), then reap it."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(proc.wait(), 2.0)

    async def close(self) -> None:
        """At controller stop: end the runs still going (each kills its process)."""
        tasks = list(self._running)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
