"""Re-protection policy: when a CoServer rejoins as the new secondary, and when the survivor protects it.

Pure, like coserver.controller.policy, so every case is a unit test. The pair
heals itself in two moves, coordinated only through the heartbeats both
sides already exchange:

1. The side that lost (role none: its QEMU died, was killed, fenced or stood
   down) starts a fresh secondary QEMU (disk re-synced from the survivor)
   when the survivor is heard running the guest alone (simplex) in an epoch
   at least as new as ours, the re-protection policy is `auto` (or an
   operator asked: `coserver pair reprotect`), the host is not in maintenance,
   and the last attempt is `retry_after_s` old (a failing host must not flap).
2. The survivor (simplex) protects as soon as it hears the peer running a
   secondary that waits for it (state syncing): mirror the disk over NBD,
   then enter COLO (coserver.colo.primary.Primary.protect).
Rejoining as a *secondary* is safe even for a fenced side: it never serves,
and its disk is overwritten from the legitimate owner before COLO starts.

A crash loop is not re-protection: an attempt that does not *hold* (the pair
protected for `HOLD_S` or more) because the fresh secondary died, or because the
protection step itself failed, counts as failed (`AttemptLog`); an attempt ended
by an outside fault on the survivor, or by a controller's own kill (a hung QEMU,
a stand-down), does not: operators testing failovers back to back must not be
told the pair cannot be protected.
The side that lost starts the next secondary only after a wait that doubles
with each failure (5, 10, 20, 40 s, capped at 60 s), and after
`MAX_FAILED_ATTEMPTS` in a row it stops trying; both sides then report
"cannot protect: <reason>" (the failing QEMU's last log line where there is
one) until an attempt holds. An operator's `coserver pair reprotect` starts a
fresh count. The survivor never holds back: a fresh secondary that waits for
it means the other side decided to try.

Neither side moves while the peer check refuses (`RejoinView.refusal`, from
coserver.controller.peercheck: the hosts' site files, QEMU versions or pair keys
differ): the refusal, naming both values, is the reason. It only holds back new
protection; a pair already protected keeps running.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from coserver.controller.roles import Role
from coserver.controller.statemachine import FtState

DEFAULT_RETRY_AFTER_S = 5.0
MAX_RETRY_AFTER_S = 60.0
#: Failed attempts in a row after which the pair stops trying and raises "cannot protect".
MAX_FAILED_ATTEMPTS = 5
#: An attempt holds once the pair has stayed protected this long.
HOLD_S = 30.0


class ReprotectPolicy(StrEnum):
    AUTO = "auto"
    MANUAL = "manual"


class Move(StrEnum):
    NONE = "none"
    START_SECONDARY = "start_secondary"   # the side that lost: become the new secondary
    PROTECT = "protect"                   # the survivor: sync the new secondary and enter COLO


#: States in which an attempt has protected the pair.
_PROTECTED = frozenset({FtState.PROTECTED, FtState.DEGRADED})
#: States that end an attempt that has not held (STOPPING is an operator's stop: not a failure).
_ENDED = frozenset({FtState.SIMPLEX, FtState.STOPPED, FtState.FAILING_OVER, FtState.FENCED})


@dataclass
class AttemptLog:
    """Consecutive (re-)protection attempts that did not hold, and why the last one failed.

    The daemon calls start() when it starts a secondary or a protect, on_state() at every
    state change and tick() regularly; an attempt is open from start() until it held
    (protected for HOLD_S) or ended in a non-protected state first (a failure)."""

    failures: int = 0
    last_reason: str = ""
    open: bool = False
    protected_since: float | None = None
    kind: str = ""                  # "secondary" (this side rejoined) or "protect" (this side protected)

    def start(self, kind: str) -> None:
        self.open, self.protected_since, self.kind = True, None, kind

    def close(self) -> None:
        """The open attempt ended for a reason that is not its own failure: not counted."""
        self.open, self.protected_since = False, None

    def on_state(self, state: FtState, now: float) -> bool:
        """Note a state change; True when it ends the open attempt before it held: the caller then
        calls failed() if the attempt itself failed, or close() if something else ended it."""
        if not self.open:
            return False
        if state in _PROTECTED:
            if self.protected_since is None:
                self.protected_since = now
            return False
        if state == FtState.STOPPING:
            self.open = False
            return False
        return state in _ENDED

    def tick(self, now: float, hold_s: float = HOLD_S) -> bool:
        """True once, when the open attempt has held: the failure count starts again."""
        if self.open and self.protected_since is not None and now - self.protected_since >= hold_s:
            self.held()
            return True
        return False

    def failed(self, reason: str) -> None:
        self.failures += 1
        self.last_reason = reason
        self.open, self.protected_since = False, None

    def held(self) -> None:
        self.failures, self.last_reason = 0, ""
        self.open, self.protected_since = False, None

    @property
    def gave_up(self) -> bool:
        return self.failures >= MAX_FAILED_ATTEMPTS

    def alert(self) -> str | None:
        """The alert-level state for `status`, or None while the pair may still protect itself."""
        if not self.gave_up:
            return None
        return (f"cannot protect: {self.last_reason} ({self.failures} attempts in a row failed; "
                f"`coserver pair reprotect` tries again)")


def retry_after(failures: int, base_s: float = DEFAULT_RETRY_AFTER_S, cap_s: float = MAX_RETRY_AFTER_S) -> float:
    """Seconds to wait after the last attempt: base, doubled for each failure in a row, capped."""
    if failures <= 1:
        return base_s
    return min(base_s * float(2 ** (failures - 1)), cap_s)


@dataclass(frozen=True)
class RejoinView:
    """What the rejoin decision looks at (gathered by the daemon with its Observation)."""

    role: Role
    state: FtState
    epoch: int
    policy: ReprotectPolicy
    maintenance: bool
    requested: bool                 # an operator asked for re-protection (pair reprotect / maintenance off)
    since_last_attempt_s: float     # seconds since our last start or protect attempt (inf if none)
    peer_heard: bool
    peer_role: str | None
    peer_state: str | None
    peer_epoch: int | None
    peer_maintenance: bool = False
    busy: bool = False              # a start or protect is under way here
    failures: int = 0               # attempts in a row that did not hold (AttemptLog)
    last_failure: str = ""
    refusal: str | None = None      # peercheck.refusal(): the hosts differ (key, site file, QEMU)
    lease: bool = True              # we hold the witness's grant for our epoch (a live lease)


def next_move(v: RejoinView, retry_after_s: float = DEFAULT_RETRY_AFTER_S) -> tuple[Move, str]:
    """The re-protection move for this side now, and why."""
    if v.busy:
        return Move.NONE, "busy"
    if v.refusal:
        return Move.NONE, v.refusal
    if not v.peer_heard:
        return Move.NONE, "peer not heard"
    if v.role == Role.NONE and v.failures >= MAX_FAILED_ATTEMPTS and not v.requested:
        return Move.NONE, (f"cannot protect: {v.last_failure} ({v.failures} attempts in a row failed; "
                           f"`coserver pair reprotect` tries again)")
    wait_s = retry_after(v.failures, retry_after_s) if v.role == Role.NONE else retry_after_s
    if v.since_last_attempt_s < wait_s:
        why = f"last attempt {v.since_last_attempt_s:.1f} s ago (< {wait_s:g} s)"
        if v.failures:
            why += f"; {v.failures} failed in a row, last: {v.last_failure}"
        return Move.NONE, why
    if v.role == Role.NONE:
        if v.maintenance:
            return Move.NONE, "in maintenance: not rejoining"
        if v.policy == ReprotectPolicy.MANUAL and not v.requested:
            return Move.NONE, "re-protection policy is manual: waiting for `coserver pair reprotect`"
        if v.peer_role != Role.SIMPLEX.value:
            return Move.NONE, f"peer is {v.peer_role}, not running the guest alone"
        if v.peer_epoch is None or v.peer_epoch < v.epoch:
            return Move.NONE, f"peer's epoch {v.peer_epoch} is older than ours ({v.epoch}): not following it"
        return Move.START_SECONDARY, f"peer runs the guest alone in epoch {v.peer_epoch}: rejoin as its secondary"
    if v.role == Role.SIMPLEX and v.state == FtState.SIMPLEX:
        if v.peer_role == Role.SECONDARY.value and v.peer_state == FtState.SYNCING.value:
            if v.peer_epoch is not None and v.peer_epoch > v.epoch:
                return Move.NONE, f"peer's secondary follows epoch {v.peer_epoch}, newer than ours ({v.epoch})"
            if not v.lease:
                # A primary without its grant fences itself unless its secondary is in step (policy):
                # protecting now would fence the only guest during the sync. Renew first.
                return Move.NONE, "waiting for the witness's grant before protecting (we run without it)"
            return Move.PROTECT, "peer runs a fresh secondary: sync it and enter COLO"
    return Move.NONE, "nothing to re-protect"
