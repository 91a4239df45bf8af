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
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from coserver.controller.roles import Role
from coserver.controller.statemachine import FtState

DEFAULT_RETRY_AFTER_S = 5.0


class ReprotectPolicy(StrEnum):
    AUTO = "auto"
    MANUAL = "manual"


class Move(StrEnum):
    NONE = "none"
    START_SECONDARY = "start_secondary"   # the side that lost: become the new secondary
    PROTECT = "protect"                   # the survivor: sync the new secondary and enter COLO


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


def next_move(v: RejoinView, retry_after_s: float = DEFAULT_RETRY_AFTER_S) -> tuple[Move, str]:
    """The re-protection move for this side now, and why."""
    if v.busy or not v.peer_heard:
        return Move.NONE, "busy" if v.busy else "peer not heard"
    if v.since_last_attempt_s < retry_after_s:
        return Move.NONE, f"last attempt {v.since_last_attempt_s:.1f} s ago (< {retry_after_s} s)"
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
            return Move.PROTECT, "peer runs a fresh secondary: sync it and enter COLO"
    return Move.NONE, "nothing to re-protect"
