"""The failover policy: what one controller should do, given what it observes. Pure: no I/O.

Keeping the decision a pure function of one Observation makes every row of
the table testable without hosts, and the daemon's loop dumb: observe,
decide, act, journal. The rules that make it safe:

* Never two primaries. Promotion (a secondary taking over) and dropping the
  replica (a primary going simplex) both need a witness claim first; the
  decision says so (`claim_epoch`) and after_claim() turns the witness's answer
  into the final action. A side that can reach neither its peer nor the
  witness stops its guest side (FENCE_SELF), because the other side may be
  winning the claim right now.
* One cut link is not a failure: the peer answering on the other link proves
  it runs (DEGRADED_ALERT, never a failover).
* A newer epoch at the witness owned by the other node means this side
  missed a failover: it stops (STAND_DOWN), whatever its links say.
* Maintenance suppresses automatic actions, but never the safety ones
  (FENCE_SELF, STAND_DOWN).
* Heartbeats that fail authentication (the hosts' pair keys differ) are
  silence here, never evidence: anyone on the sync network can send them. The
  operator is told the key differs (coserver.controller.peercheck); protection
  with such a peer is refused there, not here.

Decision table (first matching row wins; E = my epoch; "peer lost" = no
valid heartbeat on any link; peer-reported health counts only while the peer
is heard):

  role      condition                                          action (claim)
  --------  -------------------------------------------------  ------------------------------
  none      anything                                           NONE (fenced stays fenced)
  any       witness: other node owns epoch > E                 STAND_DOWN
  prim/simp witness: other node holds a live lease              STAND_DOWN
  any       local QEMU dead                                    KILL_LOCAL_QEMU (reap, release)
  prim/sec  local QEMU hung >= kill_hung_after                 KILL_LOCAL_QEMU (then release)
  simplex   local QEMU hung >= kill_hung_after                 ALERT (nobody to take over)
  any       local QEMU hung < kill_hung_after                  NONE (wait: slow checkpoint?)
  secondary state starting|syncing, and peer lost / peer says
            its QEMU dead|hung / COLO exit on error            FENCE_SELF (incomplete replica)
  prim/sec  peer lost but checkpoints still flow               ALERT (its controller restarts;
            (colo_alive) and no COLO error                     the running peer QEMU proves it lives)
  primary   peer lost, witness unreachable                     FENCE_SELF
  primary   peer lost                                          CONTINUE_SIMPLEX (claim E+1)
  primary   COLO exit on error / peer says its QEMU dead|hung  CONTINUE_SIMPLEX (claim E+1)
  secondary peer lost, witness unreachable                     FENCE_SELF
  secondary peer lost                                          CLAIM_AND_PROMOTE (claim E+1)
  secondary COLO exit on error / peer says its QEMU dead|hung  CLAIM_AND_PROMOTE (claim E+1)
  prim/sec  some links lost, peer heard on another             DEGRADED_ALERT
  any       witness unreachable                                ALERT
  otherwise                                                    NONE
  + maintenance: CLAIM_AND_PROMOTE, CONTINUE_SIMPLEX, KILL_LOCAL_QEMU become NONE.

after_claim(observation, decision, outcome), for decisions with claim_epoch:

  decision           granted            denied                              unreachable
  -----------------  -----------------  ----------------------------------  ---------------------------
  CLAIM_AND_PROMOTE  PROMOTE            peer heard: NONE (retry: the peer   peer heard: ALERT
                                        must release); peer lost: newer     peer lost: FENCE_SELF
                                        epoch elsewhere STAND_DOWN; silent
                                        < lease_patience NONE (retry: its
                                        lease may lapse); else FENCE_SELF
                                        (its lease is refreshed: it won)
  CONTINUE_SIMPLEX   CONTINUE_SIMPLEX   STAND_DOWN (someone else owns it)   peer heard: CONTINUE_SIMPLEX
                                                                            (no bump); lost: FENCE_SELF

Why the primary bumps the epoch when it goes simplex: the partitioned
secondary still knows epoch E and would claim E+1; with the primary at E+1,
that claim can never win, even after the primary's lease lapses, so a stale
replica never comes back as a second primary.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from coserver.controller.roles import QemuHealth, Role
from coserver.controller.statemachine import FtState

#: Seconds a local QEMU may miss QMP deadlines before we kill it: the one
#: definition (ControllerConfig.kill_hung_after_s defaults to it). A healthy
#: QEMU here answers QMP within ~2 ms even at a checkpoint (the guest pauses
#: ~45-90 ms, measured in the lab), so 1.5 s of silence is a hung QEMU with a
#: 15x margin. Killing much sooner would turn a slow checkpoint into a
#: failover; much later and the guest's clients stall longer than TCP
#: retransmission hides.
DEFAULT_KILL_HUNG_AFTER = 1.5
#: Seconds since the peer was last heard during which a denied claim means
#: "its lease has not lapsed yet: retry", not "it won". A primary cut off from
#: everything stops refreshing its lease at about the moment we last heard
#: it; etcd deletes the key TTL (2 s) later, at its next expiry tick (every
#: 0.5 s), and our retry needs a round trip: 2 + 0.5 + 1 = 3.5 s. Past that, a
#: lease that still lives is being refreshed: the primary runs, we lost.
DEFAULT_LEASE_PATIENCE = 3.5


class Action(StrEnum):
    NONE = "none"
    ALERT = "alert"  # something needs a person; nothing automatic to do
    DEGRADED_ALERT = "degraded_alert"  # one sync link lost, peer still heard: alert only
    CLAIM_AND_PROMOTE = "claim_and_promote"  # secondary: claim at the witness, then after_claim()
    PROMOTE = "promote"  # secondary: the witness granted it: fail over to our side
    CONTINUE_SIMPLEX = "continue_simplex"  # primary: drop the replica, keep serving alone
    FENCE_SELF = "fence_self"  # stop the local guest side: we may be on the losing side
    KILL_LOCAL_QEMU = "kill_local_qemu"  # local QEMU hung or dead: kill/reap it, release the witness
    STAND_DOWN = "stand_down"  # the witness shows we are stale: stop, never a second primary


#: Pair states in which a secondary's replica is not (yet) a consistent copy.
_INCOMPLETE = {FtState.STARTING.value, FtState.SYNCING.value}

#: Actions that stop or take over the guest: what maintenance suppresses.
_AUTOMATIC = {Action.CLAIM_AND_PROMOTE, Action.PROMOTE, Action.CONTINUE_SIMPLEX, Action.KILL_LOCAL_QEMU}


class ClaimOutcome(StrEnum):
    GRANTED = "granted"
    DENIED = "denied"
    UNREACHABLE = "unreachable"


@dataclass(frozen=True)
class WitnessView:
    """What the witness said last: owner (node, epoch) and whether its lease lives."""

    reachable: bool
    owner: str | None = None
    epoch: int | None = None
    alive: bool = False


@dataclass(frozen=True)
class Observation:
    """Everything the policy looks at, gathered by the daemon at one instant."""

    node: str
    role: Role
    epoch: int
    qemu: QemuHealth
    links: Mapping[str, bool]  # per sync link: a valid heartbeat within the timeout?
    witness: WitnessView
    state: str = FtState.PROTECTED.value  # our FtState: a syncing secondary never takes over
    qemu_hung_for: float = 0.0  # seconds since QMP first missed a deadline (if HUNG)
    colo_exit_error: bool = False  # COLO_EXIT with reason "error" seen locally
    peer_qemu: QemuHealth | None = None  # the peer's own report (latest heartbeat)
    peer_silent_for: float = 0.0  # seconds since the last valid heartbeat on any link
    maintenance: bool = False
    colo_alive: bool = False  # checkpoints still flow between the two QEMUs (within a few periods)

    @property
    def peer_heard(self) -> bool:
        return any(self.links.values())

    @property
    def links_lost(self) -> list[str]:
        return sorted(name for name, up in self.links.items() if not up)


@dataclass(frozen=True)
class Thresholds:
    kill_hung_after: float = DEFAULT_KILL_HUNG_AFTER
    lease_patience: float = DEFAULT_LEASE_PATIENCE


@dataclass(frozen=True)
class Decision:
    """What to do and why. claim_epoch set: claim it at the witness first, then ask after_claim()."""

    action: Action
    reason: str
    claim_epoch: int | None = None
    suppressed: Action | None = field(default=None)  # what maintenance held back


def decide(obs: Observation, limits: Thresholds = Thresholds()) -> Decision:
    """The action for this observation (see the module's table)."""
    d = _decide(obs, limits)
    if obs.maintenance and d.action in _AUTOMATIC:
        return Decision(Action.NONE, f"maintenance: not acting on: {d.reason}", suppressed=d.action)
    return d


def _decide(obs: Observation, limits: Thresholds) -> Decision:
    role, w = obs.role, obs.witness
    if role == Role.NONE:
        return Decision(Action.NONE, "no guest side runs here")

    other_owner = w.reachable and w.owner is not None and w.owner != obs.node
    if other_owner and w.epoch is not None and w.epoch > obs.epoch:
        return Decision(Action.STAND_DOWN, f"witness: {w.owner} owns epoch {w.epoch}, ours is {obs.epoch}")
    if other_owner and w.alive and role in (Role.PRIMARY, Role.SIMPLEX):
        return Decision(Action.STAND_DOWN, f"witness: {w.owner} holds the lease (epoch {w.epoch}) "
                                           f"while we run as {role}")

    if obs.qemu == QemuHealth.DEAD:
        return Decision(Action.KILL_LOCAL_QEMU, f"local QEMU ({role}) is dead: reap it, release the witness")
    if obs.qemu == QemuHealth.HUNG:
        if obs.qemu_hung_for < limits.kill_hung_after:
            return Decision(Action.NONE, f"local QEMU hung for {obs.qemu_hung_for:.1f} s "
                                         f"(< {limits.kill_hung_after} s): waiting")
        if role == Role.SIMPLEX:
            return Decision(Action.ALERT, f"simplex QEMU hung for {obs.qemu_hung_for:.1f} s: "
                                          "no peer to take over")
        return Decision(Action.KILL_LOCAL_QEMU, f"local QEMU ({role}) hung for {obs.qemu_hung_for:.1f} s "
                                                f">= {limits.kill_hung_after} s: kill it so the peer takes over")

    peer_heard = obs.peer_heard
    peer_bad = peer_heard and obs.peer_qemu in (QemuHealth.DEAD, QemuHealth.HUNG)
    next_epoch = obs.epoch + 1

    if role == Role.SECONDARY and obs.state in _INCOMPLETE and (
            not peer_heard or peer_bad or obs.colo_exit_error):
        return Decision(Action.FENCE_SELF, f"secondary in {obs.state}: the replica is incomplete and "
                                           "can never take over; stop it")
    if role in (Role.PRIMARY, Role.SECONDARY):
        if not peer_heard and obs.colo_alive and not obs.colo_exit_error:
            return Decision(Action.ALERT, f"{role}: the peer's controller is silent on all links, but "
                                          "checkpoints still flow: its QEMU runs; no failover")
        if not peer_heard:
            if not w.reachable:
                return Decision(Action.FENCE_SELF, f"{role}: neither the peer (all links silent) nor the "
                                                   "witness answers: the other side may be taking over")
            if role == Role.PRIMARY:
                return Decision(Action.CONTINUE_SIMPLEX, "secondary lost on all links", next_epoch)
            return Decision(Action.CLAIM_AND_PROMOTE, "primary lost on all links", next_epoch)
        cause = ("COLO exited on error" if obs.colo_exit_error
                 else f"peer reports its QEMU {obs.peer_qemu}" if peer_bad else None)
        if cause is not None:
            if role == Role.PRIMARY:
                return Decision(Action.CONTINUE_SIMPLEX, f"replica lost: {cause}", next_epoch)
            return Decision(Action.CLAIM_AND_PROMOTE, f"primary side failed: {cause}", next_epoch)
        if obs.links_lost:
            return Decision(Action.DEGRADED_ALERT, f"sync link(s) {', '.join(obs.links_lost)} lost; "
                                                   "peer still heard: no failover")
    if not w.reachable:
        return Decision(Action.ALERT, f"{role}: witness unreachable: no safe failover possible now")
    return Decision(Action.NONE, f"{role}: all well" if peer_heard or role != Role.SIMPLEX
                    else "simplex: peer absent, witness reachable")


def after_claim(obs: Observation, decision: Decision, outcome: ClaimOutcome,
                owner: WitnessView | None = None, limits: Thresholds = Thresholds()) -> Decision:
    """The final action once the witness answered the claim `decision` asked for.

    owner: what the witness showed with a denial (for STAND_DOWN vs FENCE_SELF).
    """
    if decision.claim_epoch is None:
        raise ValueError(f"after_claim: {decision.action} asked for no claim")
    peer_heard = obs.peer_heard
    epoch = decision.claim_epoch
    if decision.action == Action.CLAIM_AND_PROMOTE:
        if outcome == ClaimOutcome.GRANTED:
            return Decision(Action.PROMOTE, f"witness granted epoch {epoch}: {decision.reason}")
        if outcome == ClaimOutcome.DENIED:
            if peer_heard:
                return Decision(Action.NONE, f"witness denied epoch {epoch} but the peer is heard: "
                                             "waiting for it to release")
            if owner is not None and owner.owner not in (None, obs.node) and (owner.epoch or 0) >= epoch:
                return Decision(Action.STAND_DOWN, f"witness: {owner.owner} owns epoch {owner.epoch}: "
                                                   "we missed a failover")
            if obs.peer_silent_for < limits.lease_patience:
                return Decision(Action.NONE, f"witness denied epoch {epoch}; peer silent for "
                                             f"{obs.peer_silent_for:.1f} s: its lease may still lapse, retry")
            return Decision(Action.FENCE_SELF, f"witness denied epoch {epoch} and the peer is silent: "
                                               "the other side holds it, we lose")
        if peer_heard:
            return Decision(Action.ALERT, f"cannot promote ({decision.reason}): witness unreachable")
        return Decision(Action.FENCE_SELF, "peer silent and witness unreachable: stop our side")
    if decision.action == Action.CONTINUE_SIMPLEX:
        if outcome == ClaimOutcome.GRANTED:
            return Decision(Action.CONTINUE_SIMPLEX, f"witness granted epoch {epoch}: {decision.reason}")
        if outcome == ClaimOutcome.DENIED:
            who = f"{owner.owner} (epoch {owner.epoch})" if owner and owner.owner else "another node"
            return Decision(Action.STAND_DOWN, f"witness denied epoch {epoch}: {who} owns it")
        if peer_heard:
            return Decision(Action.CONTINUE_SIMPLEX, f"{decision.reason}; witness unreachable: "
                                                     "epoch not bumped (the peer reported itself down)")
        return Decision(Action.FENCE_SELF, "peer silent and witness unreachable: stop our side")
    raise ValueError(f"after_claim: unexpected decision {decision.action}")
