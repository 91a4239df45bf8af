"""The life of one FT server on one host, as an explicit state machine.

Why explicit: a failover controller that can drift into a combination nobody
thought of ("protected" while the replica is gone, "simplex" on both hosts) is
the thing that loses data. Every state change goes through to(), which checks
the TRANSITIONS table, logs (from, to, reason) and keeps the last few in a
history that `status --json` shows; anything not in the table raises
IllegalTransition, a bug to fix, never a state to be in.

States (this host's view of the pair):

  stopped       nothing runs for this FT server here
  starting      our QEMU is being launched (either role)
  syncing       COLO is being set up: secondary prepared, primary migrating the
                first full copy; not yet protected
  protected     COLO runs, both sync links heard
  degraded      COLO runs, one sync link lost (still protected, alert)
  failing_over  a takeover or a drop to simplex is in progress (claim, failover)
  simplex       the guest runs here alone, no replica
  fenced        we stopped our side for safety (peer and witness unreachable, or
                the witness showed a newer epoch); stays so until an operator or
                a fresh start clears it: healed links never revive it
  stopping      a clean stop is in progress
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from coserver import log
from coserver.controller.errors import IllegalTransition

_log = log.get("statemachine")

HISTORY_LEN = 32


class FtState(StrEnum):
    STOPPED = "stopped"
    STARTING = "starting"
    SYNCING = "syncing"
    PROTECTED = "protected"
    DEGRADED = "degraded"
    FAILING_OVER = "failing_over"
    SIMPLEX = "simplex"
    FENCED = "fenced"
    STOPPING = "stopping"


S = FtState

#: Every allowed transition. Why some are (not) there:
#: - a running side can go straight to stopped: its QEMU died under it;
#: - simplex -> syncing is re-protection (a new secondary), never simplex -> protected;
#: - fenced -> stopped only: clearing a fence is an explicit act, then a fresh start;
#: - failing_over -> protected is absent: a takeover ends in simplex (or fenced);
#: - syncing -> failing_over is absent: a replica still receiving its first full
#:   copy is incomplete and must never take over (the primary goes simplex).
TRANSITIONS: Mapping[FtState, frozenset[FtState]] = {
    S.STOPPED: frozenset({S.STARTING}),
    S.STARTING: frozenset({S.SYNCING, S.SIMPLEX, S.STOPPING, S.STOPPED, S.FENCED}),
    S.SYNCING: frozenset({S.PROTECTED, S.SIMPLEX, S.STOPPING, S.STOPPED, S.FENCED}),
    S.PROTECTED: frozenset({S.DEGRADED, S.FAILING_OVER, S.STOPPING, S.STOPPED, S.FENCED}),
    S.DEGRADED: frozenset({S.PROTECTED, S.FAILING_OVER, S.STOPPING, S.STOPPED, S.FENCED}),
    S.FAILING_OVER: frozenset({S.SIMPLEX, S.FENCED, S.STOPPED}),
    S.SIMPLEX: frozenset({S.SYNCING, S.STOPPING, S.STOPPED, S.FENCED}),
    S.FENCED: frozenset({S.STOPPED}),
    S.STOPPING: frozenset({S.STOPPED}),
}
assert set(TRANSITIONS) == set(FtState)

#: States in which a guest side runs here (and must be supervised).
RUNNING = frozenset({S.STARTING, S.SYNCING, S.PROTECTED, S.DEGRADED, S.FAILING_OVER, S.SIMPLEX})


@dataclass(frozen=True)
class Transition:
    at: float  # wall clock (for people; the order is the history's order)
    src: FtState
    dst: FtState
    reason: str

    def as_json(self) -> dict[str, Any]:
        return {"at": self.at, "from": self.src.value, "to": self.dst.value, "reason": self.reason}


class FtStateMachine:
    """One FT server's state on this host; on_change(transition) is called after each change."""

    def __init__(self, ftserver: str, initial: FtState = S.STOPPED, *, history: int = HISTORY_LEN,
                 clock: Callable[[], float] = time.time,
                 on_change: Callable[[Transition], None] | None = None) -> None:
        self.ftserver = ftserver
        self._state = FtState(initial)
        self._history: deque[Transition] = deque(maxlen=history)
        self._clock = clock
        self._on_change = on_change
        self._log = _log.bind(ftserver=ftserver)

    @property
    def state(self) -> FtState:
        return self._state

    @property
    def running(self) -> bool:
        return self._state in RUNNING

    def can(self, dst: FtState) -> bool:
        return FtState(dst) in TRANSITIONS[self._state]

    def to(self, dst: FtState, reason: str) -> Transition:
        """Move to dst for `reason` (one line), or raise IllegalTransition and stay."""
        dst = FtState(dst)
        reason = " ".join(str(reason).split())
        if not reason:
            raise IllegalTransition(f"ft server {self.ftserver}: {self._state} -> {dst} needs a reason")
        if dst not in TRANSITIONS[self._state]:
            allowed = ", ".join(sorted(TRANSITIONS[self._state])) or "nothing"
            raise IllegalTransition(f"ft server {self.ftserver}: {self._state} -> {dst} is not allowed "
                                    f"(from {self._state}: {allowed}); reason given: {reason}")
        t = Transition(self._clock(), self._state, dst, reason)
        self._state = dst
        self._history.append(t)
        level = self._log.warning if dst in (S.FENCED, S.FAILING_OVER, S.DEGRADED) else self._log.info
        level("state.changed", **{"from": t.src.value, "to": t.dst.value, "reason": reason})
        if self._on_change is not None:
            self._on_change(t)
        return t

    @property
    def history(self) -> list[Transition]:
        """The last transitions, oldest first."""
        return list(self._history)

    def status(self) -> dict[str, Any]:
        """JSON-able, for `status --json`."""
        return {"ftserver": self.ftserver, "state": self._state.value, "running": self.running,
                "history": [t.as_json() for t in self._history]}

    @classmethod
    def resume(cls, ftserver: str, state: FtState | str, reason: str = "controller restarted",
               **kw: Any) -> FtStateMachine:
        """A machine that starts in a journaled state (re-attach after a controller restart).

        The history records the resume, so `status` shows the restart.
        """
        sm = cls(ftserver, FtState(state), **kw)
        t = Transition(sm._clock(), sm._state, sm._state, reason)
        sm._history.append(t)
        sm._log.info("state.resumed", state=sm._state.value, reason=reason)
        return sm

