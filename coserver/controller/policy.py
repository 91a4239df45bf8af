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
* A side runs the guest alone only with the witness's grant for its epoch,
  or when the peer itself reports (authenticated, fresh heartbeat) that its
  QEMU is dead and its epoch is <= ours. A primary whose claim gets no answer
  otherwise keeps COLO (colo-compare holds its output: no failover command
  reaches its QEMU) or fences itself; it never goes simplex on a hunch.
* A heard peer that runs (or is promoting) at a higher epoch won the witness:
  we stand down at once, whatever the witness looks like from here.
* A primary that lost its lease re-claims its own epoch; if it cannot within
  fence_after (F) it is killed (must_self_fence; the daemon's watchdog does it
  without waiting for a tick) unless the peer is heard, fresh, as its
  in-step secondary at our epoch. The promoting side waits promote_wait (W)
  after its grant before it runs alone; W > fence_bound, proven at Thresholds.
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
  any       peer heard as primary/simplex/failing_over at > E  STAND_DOWN (it won the witness)
  primary   lease lost >= F, peer not heard as our in-step     FENCE_SELF (must_self_fence)
            secondary at <= E, nor reporting its QEMU dead
  prim/simp lease lost, witness reachable                      RENEW (re-claim E; the rows below
                                                               never let it go simplex meanwhile)
  any       local QEMU dead                                    KILL_LOCAL_QEMU (reap, release)
  prim/sec  local QEMU stuck (hung, no CPU, no COLO bytes),   KILL_LOCAL_QEMU (at once: stopped or
            peer heard                                         deadlocked, not slow)
  prim/sec  local QEMU hung >= kill_hung_after, peer heard     KILL_LOCAL_QEMU (then release; with
                                                               the peer lost, the rows below decide)
  simplex   local QEMU hung >= kill_hung_after                 ALERT (nobody to take over)
  any       local QEMU hung < kill_hung_after                  NONE (wait: slow checkpoint?)
  secondary state starting|syncing, and peer lost / peer says
            its QEMU dead|hung / COLO exit on error            FENCE_SELF (incomplete replica)
  prim/sec  peer lost but checkpoints still flow               ALERT (its controller restarts;
            (colo_alive) and no COLO error                     the running peer QEMU proves it lives)
  primary   peer lost, witness unreachable                     FENCE_SELF
  primary   peer lost                                          CONTINUE_SIMPLEX (claim E+1)
  primary   COLO exit on error / peer says its QEMU dead|hung  CONTINUE_SIMPLEX (claim E+1)
            (hung: reported for >= kill_hung_after, everywhere)
            / the replica's disk failing (QUORUM_REPORT_BAD
            on the replication child)
  secondary peer lost, witness unreachable                     FENCE_SELF
  secondary peer lost                                          CLAIM_AND_PROMOTE (claim E+1)
  secondary COLO exit on error / peer says its QEMU dead|hung  CLAIM_AND_PROMOTE (claim E+1)
  primary   in COLO, peer heard, no checkpoint for              CONTINUE_SIMPLEX (claim E+1: the
            replication_stall past the window                  replica is stale; re-sync later)
  secondary the same                                           ALERT (the primary decides)
  any       local disk failing (not handled above)             ALERT (the primary decides; alone:
                                                               nobody to fail over to)
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
  CONTINUE_SIMPLEX   CONTINUE_SIMPLEX   STAND_DOWN (someone else owns it)   peer reports its QEMU dead at
                                                                            <= E: CONTINUE_SIMPLEX (no
                                                                            bump); peer ahead: STAND_DOWN;
                                                                            lease held or lost < F: ALERT
                                                                            (keep COLO); else FENCE_SELF
  RENEW              NONE (lease back)  STAND_DOWN (someone else owns it)   ALERT (keep COLO; F fences)

PROMOTE carries `wait`: promote_wait(obs) seconds to wait after the grant
before running alone (0 when the peer itself reported its QEMU dead at <= E).

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
#: See Thresholds.replication_stall: the window (1.5 periods + 0.5 s) already allows a late checkpoint.
DEFAULT_REPLICATION_STALL = 1.0

# ---- The two-primaries bound: every number in one place -------------------------------------
#: The witness lease's TTL (= witness.DEFAULT_TTL; a test checks they agree).
DEFAULT_LEASE_TTL = 2.0
#: F: seconds a primary that lost its lease keeps trying to re-claim it before it kills its QEMU.
#: An etcd leader change blocks refreshes for about an election (1 s by default, see the README);
#: F = 1 s rides over most of them without a fence (etcd's new leader extends the lease itself).
DEFAULT_FENCE_AFTER = 1.0
#: h: the heartbeat silence after which the peer counts as not heard (= heartbeat.DEFAULT_TIMEOUT).
DEFAULT_HEARTBEAT_TIMEOUT = 1.0
#: The promoting side's wait beyond the losing primary's fence bound (see Thresholds).
DEFAULT_PROMOTE_MARGIN = 0.7
#: The daemon's self-fence watchdog polls this often once F has passed.
FENCE_POLL = 0.1
#: SIGKILL to the QEMU process, including the event loop waking for it.
KILL_LATENCY = 0.1
#: A heartbeat datagram on a sync link (a direct cable or one switch) arrives within this, or never.
DELIVERY = 0.1


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
    RENEW = "renew"  # primary whose lease was lost: re-claim our own epoch, then after_claim()


#: Pair states in which a secondary's replica is not (yet) a consistent copy.
_INCOMPLETE = {FtState.STARTING.value, FtState.SYNCING.value}
#: States in which the two QEMUs checkpoint with each other.
_IN_COLO = {FtState.PROTECTED.value, FtState.DEGRADED.value}

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
    #: HUNG, and the last missed probe saw QEMU use no CPU and move no COLO bytes: stopped or
    #: deadlocked (a slow QEMU uses CPU; a long checkpoint moves bytes)
    qemu_stuck: bool = False
    colo_exit_error: bool = False  # COLO_EXIT with reason "error" seen locally
    peer_qemu: QemuHealth | None = None  # the peer's own report (latest heartbeat)
    #: how long the peer has been reporting its QEMU HUNG without a break (0 unless it does)
    peer_qemu_hung_for: float = 0.0
    peer_silent_for: float = 0.0  # seconds since the last valid heartbeat on any link
    maintenance: bool = False
    #: checkpoints still flow between the two QEMUs (within a few periods, and the stream not found
    #: stalled on a silent peer: daemon._watch_stalled_checkpoint)
    colo_alive: bool = False
    # the peer's own fresh, authenticated report (latest heartbeat; counts only while peer_heard)
    peer_role: str | None = None
    peer_state: str | None = None
    peer_epoch: int | None = None
    lease: bool = False  # we hold the witness's grant (a live lease, by our clock) for `epoch`
    lease_lost_for: float | None = None  # seconds since we lost (or failed to get) our grant; None: not lost
    #: in COLO, how long past the checkpoint window (1.5 periods + 0.5 s) no checkpoint came (0: in time)
    replication_late_for: float = 0.0
    #: our own disk failed a request (BLOCK_IO_ERROR, or QUORUM_REPORT_BAD on our own quorum child)
    local_disk_failing: bool = False
    #: primary in COLO: the replica's disk failed a write (QUORUM_REPORT_BAD on the replication child)
    replica_disk_failing: bool = False
    #: primary in COLO: the peer, silent on every link for half the heartbeat timeout, acknowledges
    #: none of the bytes the COLO streams hold for it (daemon._watch_unresponsive_replica)
    replica_unresponsive: bool = False

    @property
    def peer_heard(self) -> bool:
        return any(self.links.values())

    @property
    def peer_ahead(self) -> bool:
        """The peer, heard now, runs or is promoting at an epoch newer than ours: it won the witness."""
        return (self.peer_heard and self.peer_epoch is not None and self.peer_epoch > self.epoch
                and (self.peer_role in (Role.PRIMARY.value, Role.SIMPLEX.value)
                     or self.peer_state == FtState.FAILING_OVER.value))

    @property
    def peer_reports_dead(self) -> bool:
        """The peer, heard now, says its QEMU is gone, at an epoch <= ours: it cannot run the guest.

        DEAD (its controller saw its QEMU exit) counts whatever role it still shows: a primary
        reports DEAD before it has reaped and released. NONE counts only from a side that is not
        primary/simplex: a restarting controller says NONE until it has re-attached to a live QEMU."""
        if not (self.peer_heard and self.peer_epoch is not None and self.peer_epoch <= self.epoch):
            return False
        if self.peer_qemu == QemuHealth.DEAD:
            return True
        return self.peer_qemu == QemuHealth.NONE and self.peer_role not in (Role.PRIMARY.value, Role.SIMPLEX.value)

    @property
    def pair_well(self) -> bool:
        """In COLO, both QEMUs alive by their controllers' own word, the peer heard, no COLO error:
        the last such moment before a failover is where its detection time starts."""
        return (self.qemu == QemuHealth.ALIVE and self.peer_heard and self.peer_qemu == QemuHealth.ALIVE
                and self.state in _IN_COLO and not self.colo_exit_error)

    @property
    def peer_in_step(self) -> bool:
        """The peer, heard now, is our secondary at our epoch, in COLO with us, not promoting."""
        return (self.peer_heard and self.peer_role == Role.SECONDARY.value
                and self.peer_epoch is not None and self.peer_epoch <= self.epoch
                and self.peer_state in (FtState.PROTECTED.value, FtState.DEGRADED.value)
                and self.peer_qemu == QemuHealth.ALIVE and not self.colo_exit_error)

    @property
    def links_lost(self) -> list[str]:
        return sorted(name for name, up in self.links.items() if not up)


@dataclass(frozen=True)
class Thresholds:
    """The policy's numbers. The two-primaries bound, proven:

    Claim: a primary P that loses to a secondary S has stopped its QEMU within
    fence_bound = max(F, h + DELIVERY) + FENCE_POLL + KILL_LATENCY seconds after
    S receives its grant (time g); S runs alone only at g + W, and
    W = promote_wait = fence_bound + promote_margin > fence_bound.

    S's claim for E+1 is granted only when nobody's lease holds the owner key
    (witness.py), so at some instant x <= g P's lease was gone:
    (i) P released it: P kills its QEMU before it releases (KILL_LOCAL_QEMU,
        relinquish, maintenance): stopped before g.
    (ii) it expired at etcd: P's keep-alive counts its lease from the SEND time
        of its last answered refresh, etcd from when that refresh arrived, so P
        declares it lost (on_lost) at some l <= x <= g. Both clocks count
        suspends (CLOCK_BOOTTIME here) and run at the same rate up to ppm.
    (iii) P never got one since it started (witness unreachable then): the
        daemon counts that as lost at its failed start claim, l <= g.
    From l, the daemon's watchdog kills P's QEMU at the first poll after l + F
    at which must_self_fence() holds. It does not hold only while P hears S,
    fresh (within h), as its in-step secondary at an epoch <= E, or reporting
    its QEMU dead at an epoch <= E (a dead QEMU promotes nothing; a restarted
    one is a syncing secondary, which can never take over). S publishes
    epoch E+1 and state failing_over BEFORE it waits W, so every heartbeat that
    vouches for S was sent before g, arrived by g + DELIVERY and is stale by
    g + DELIVERY + h. Hence P's QEMU is dead by
    max(l + F, g + h + DELIVERY) + FENCE_POLL + KILL_LATENCY <= g + fence_bound.

    Defaults: fence_bound = max(1.0, 1.0 + 0.1) + 0.1 + 0.1 = 1.3 s; W = 1.3 +
    0.7 = 2.0 s; margin 0.7 s. W counts from when S learns of its grant (>= g), so
    a grant S learns late only adds to the margin. No lease-TTL term is needed:
    (ii) shows P counts its own lease out no later than etcd does.
    What the bound does not cover: P's controller itself stalled (frozen host,
    SIGSTOP) past g. Then P's QEMU, still in COLO, cannot checkpoint with the
    promoted S: colo-compare holds P's IPv4 output; when P resumes its lease is
    lost at once (boottime) and it stands down on hearing S at E+1.
    """

    kill_hung_after: float = DEFAULT_KILL_HUNG_AFTER
    lease_patience: float = DEFAULT_LEASE_PATIENCE
    #: Replication stalled while heartbeats flow (an MTU black hole, a firewall on the replication
    #: ports): this long past the checkpoint window with no checkpoint, the primary goes on alone.
    replication_stall: float = DEFAULT_REPLICATION_STALL
    lease_ttl: float = DEFAULT_LEASE_TTL
    fence_after: float = DEFAULT_FENCE_AFTER
    heartbeat_timeout: float = DEFAULT_HEARTBEAT_TIMEOUT
    promote_margin: float = DEFAULT_PROMOTE_MARGIN

    def __post_init__(self) -> None:
        for name in ("kill_hung_after", "lease_patience", "lease_ttl", "fence_after", "heartbeat_timeout",
                     "promote_margin", "replication_stall"):
            if not getattr(self, name) > 0:
                raise ValueError(f"thresholds: {name} must be positive, not {getattr(self, name)!r}")
        if self.lease_patience < self.lease_ttl:
            raise ValueError(f"thresholds: lease_patience ({self.lease_patience} s) shorter than the lease "
                             f"TTL ({self.lease_ttl} s): a live primary's lease would look like a lost race")

    @property
    def fence_bound(self) -> float:
        """Seconds after the winner's grant by which a losing primary's QEMU is dead (see the class)."""
        return max(self.fence_after, self.heartbeat_timeout + DELIVERY) + FENCE_POLL + KILL_LATENCY

    @property
    def promote_wait(self) -> float:
        """W: seconds the promoting side waits after its grant before it runs alone."""
        return self.fence_bound + self.promote_margin

    @property
    def margin(self) -> float:
        """How much longer W is than the losing side's fence bound."""
        return self.promote_wait - self.fence_bound


@dataclass(frozen=True)
class Decision:
    """What to do and why. claim_epoch set: claim it at the witness first, then ask after_claim()."""

    action: Action
    reason: str
    claim_epoch: int | None = None
    suppressed: Action | None = field(default=None)  # what maintenance held back
    wait: float = 0.0  # PROMOTE: seconds to wait after the grant before running alone (promote_wait)


def must_self_fence(obs: Observation, limits: Thresholds = Thresholds()) -> bool:
    """A primary whose grant is gone for F seconds or more, and whose secondary is not heard in step
    with it at our epoch: kill its QEMU now (the daemon's watchdog asks this every FENCE_POLL).

    Not when the peer itself reports its QEMU dead at an epoch <= ours: a dead QEMU cannot be
    promoting, and that report is what lets this side go on alone without a grant (after_claim),
    so fencing it mid-failover would leave nobody serving (found by the cut-witness-then-kill-
    secondary trial: the watchdog fired between the decision and the end of the failover)."""
    return (obs.role == Role.PRIMARY and obs.state not in _INCOMPLETE and not obs.lease
            and obs.lease_lost_for is not None and obs.lease_lost_for >= limits.fence_after
            and not obs.peer_in_step and not obs.peer_reports_dead)


def promote_wait(obs: Observation, limits: Thresholds = Thresholds()) -> float:
    """Seconds to wait between the grant and running alone: W, unless the peer itself told us
    (fresh, authenticated) that its QEMU is dead at an epoch <= ours."""
    return 0.0 if obs.peer_reports_dead else limits.promote_wait


def _peer_side_failed(obs: Observation, peer_bad: bool) -> str | None:
    """Why the other side of a pair whose peer is still heard has failed, or None."""
    if obs.colo_exit_error:
        return "COLO exited on error"
    if peer_bad:
        return f"peer reports its QEMU {obs.peer_qemu}"
    if obs.role != Role.PRIMARY or obs.state not in _IN_COLO:
        return None
    if obs.replica_disk_failing:
        return "the replica's disk fails writes (quorum reports the replication child bad)"
    if obs.replica_unresponsive and obs.witness.reachable:
        # before its heartbeats time out: colo-compare holds the client's replies meanwhile
        return (f"the peer, silent on all links for {obs.peer_silent_for:.1f} s, acknowledges none of the "
                "COLO streams' bytes")
    return None


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
    if obs.peer_ahead:
        return Decision(Action.STAND_DOWN, f"peer heard as {obs.peer_role} ({obs.peer_state}) at epoch "
                                           f"{obs.peer_epoch}, ours is {obs.epoch}: it won the witness")
    if role in (Role.PRIMARY, Role.SIMPLEX) and obs.lease_lost_for is not None and not obs.lease:
        if must_self_fence(obs, limits):
            return Decision(Action.FENCE_SELF, f"lease lost {obs.lease_lost_for:.1f} s ago (>= "
                                               f"{limits.fence_after} s) and not renewed; the secondary is "
                                               "not heard in step with us: it may be promoting")
        if w.reachable:
            return Decision(Action.RENEW, f"lease lost {obs.lease_lost_for:.1f} s ago: re-claiming epoch "
                                          f"{obs.epoch}", obs.epoch)

    if obs.qemu == QemuHealth.DEAD:
        return Decision(Action.KILL_LOCAL_QEMU, f"local QEMU ({role}) is dead: reap it, release the witness")
    # A hung QEMU is killed so that the peer takes over; with the peer silent on every link nobody
    # would, and a COLO QEMU whose peer vanished mid-checkpoint looks hung until it is failed over:
    # then the peer-lost rows below decide (the failover yanks the stalled stream first).
    hung_peer_lost = not obs.peer_heard and role in (Role.PRIMARY, Role.SECONDARY)
    if obs.qemu == QemuHealth.HUNG and not hung_peer_lost:
        if obs.qemu_stuck and role in (Role.PRIMARY, Role.SECONDARY):
            return Decision(Action.KILL_LOCAL_QEMU, f"local QEMU ({role}) stuck: QMP silent, no CPU used and no "
                                                    "COLO bytes moved: kill it so the peer takes over")
        if obs.qemu_hung_for < limits.kill_hung_after:
            return Decision(Action.NONE, f"local QEMU hung for {obs.qemu_hung_for:.1f} s "
                                         f"(< {limits.kill_hung_after} s): waiting")
        if role == Role.SIMPLEX:
            return Decision(Action.ALERT, f"simplex QEMU hung for {obs.qemu_hung_for:.1f} s: "
                                          "no peer to take over")
        return Decision(Action.KILL_LOCAL_QEMU, f"local QEMU ({role}) hung for {obs.qemu_hung_for:.1f} s "
                                                f">= {limits.kill_hung_after} s: kill it so the peer takes over")

    # A failing primary disk: with vote-threshold 1 the guest's writes still succeed on the replica,
    # so the secondary's disk is the current one: hand over to it, exactly as for a dead QEMU.
    if role == Role.PRIMARY and obs.local_disk_failing and obs.peer_in_step and obs.state in _IN_COLO:
        return Decision(Action.KILL_LOCAL_QEMU, "local disk failing (our quorum child reports errors); the "
                                                "secondary's disk holds every write: kill our QEMU so it takes over")

    peer_heard = obs.peer_heard
    # A peer's HUNG counts once it has lasted kill_hung_after, as a local hang does: a QMP deadline
    # missed under load (four TCG QEMUs on two cores) is not yet a lost replica. A real hang is killed
    # by the peer's own controller at that bound and reported DEAD, whichever comes first.
    peer_bad = peer_heard and (obs.peer_qemu == QemuHealth.DEAD or (
        obs.peer_qemu == QemuHealth.HUNG and obs.peer_qemu_hung_for >= limits.kill_hung_after))
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
        cause = _peer_side_failed(obs, peer_bad)
        if cause is not None:
            if role == Role.PRIMARY:
                return Decision(Action.CONTINUE_SIMPLEX, f"replica lost: {cause}", next_epoch)
            return Decision(Action.CLAIM_AND_PROMOTE, f"primary side failed: {cause}", next_epoch)
        if obs.replication_late_for >= limits.replication_stall and obs.state in _IN_COLO:
            late = f"no checkpoint for {obs.replication_late_for:.1f} s past its window while the peer is heard"
            if role == Role.PRIMARY:
                return Decision(Action.CONTINUE_SIMPLEX, f"replication stalled: {late}", next_epoch)
            return Decision(Action.ALERT, f"replication stalled: {late}; the primary drops its replica")
        if obs.links_lost:
            return Decision(Action.DEGRADED_ALERT, f"sync link(s) {', '.join(obs.links_lost)} lost; "
                                                   "peer still heard: no failover")
    if obs.local_disk_failing:
        return Decision(Action.ALERT, f"{role}: local disk failing" + (
            "; no in-step secondary to hand over to" if role == Role.PRIMARY
            else "; the primary drops this replica" if role == Role.SECONDARY else ": nobody to fail over to"))
    if not w.reachable:
        return Decision(Action.ALERT, f"{role}: witness unreachable: no safe failover possible now")
    return Decision(Action.NONE, f"{role}: all well" if peer_heard or role != Role.SIMPLEX
                    else "simplex: peer absent, witness reachable")


def _lost_to_ourselves(obs: Observation, owner: WitnessView | None, epoch: int, limits: Thresholds) -> bool:
    """A denial that only our own claim caused: the witness shows no other owner (ours, or nobody's
    once our older lease expired) and no newer epoch, and our lease is gone for less than the fence
    bound. A claim compares the keys it read; our older lease expiring (or renewed by a slow earlier
    attempt) between the read and the write changes them: the Vagrant lab's TCG-in-TCG machines did
    that, and the only copy of the guest stood down to a witness that named this very host. Retrying
    is safe: anyone else's claim shows as their ownership, and the fence bound still applies."""
    if owner is None or owner.owner not in (None, obs.node) or (owner.epoch or 0) > epoch:
        return False
    return obs.lease_lost_for is None or obs.lease_lost_for < limits.fence_after


def after_claim(obs: Observation, decision: Decision, outcome: ClaimOutcome,
                owner: WitnessView | None = None, limits: Thresholds = Thresholds()) -> Decision:
    """The final action once the witness answered the claim `decision` asked for.

    owner: what the witness showed with a denial (for STAND_DOWN vs FENCE_SELF).
    """
    if decision.claim_epoch is None:
        raise ValueError(f"after_claim: {decision.action} asked for no claim")
    peer_heard = obs.peer_heard
    epoch = decision.claim_epoch
    who = f"{owner.owner} (epoch {owner.epoch})" if owner and owner.owner else "another node"
    if decision.action == Action.CLAIM_AND_PROMOTE:
        if outcome == ClaimOutcome.GRANTED:
            wait = promote_wait(obs, limits)
            return Decision(Action.PROMOTE, f"witness granted epoch {epoch}: {decision.reason}"
                                            + (f" (running alone after {wait:.1f} s)" if wait else ""), wait=wait)
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
    lost_to_ourselves = _lost_to_ourselves(obs, owner, epoch, limits)
    if decision.action == Action.CONTINUE_SIMPLEX:
        if outcome == ClaimOutcome.GRANTED:
            return Decision(Action.CONTINUE_SIMPLEX, f"witness granted epoch {epoch}: {decision.reason}")
        if outcome == ClaimOutcome.DENIED and lost_to_ourselves:
            return Decision(Action.ALERT, f"witness denied epoch {epoch} in a race with our own claim ({who}): "
                                          "retrying, never simplex without the grant")
        if outcome == ClaimOutcome.DENIED:
            return Decision(Action.STAND_DOWN, f"witness denied epoch {epoch}: {who} owns it")
        if obs.peer_reports_dead:
            return Decision(Action.CONTINUE_SIMPLEX, f"{decision.reason}; witness unreachable: epoch not "
                                                     f"bumped (the peer reports its QEMU {obs.peer_qemu} at "
                                                     f"epoch {obs.peer_epoch})")
        if obs.peer_ahead:
            return Decision(Action.STAND_DOWN, f"witness unreachable and the peer runs at epoch {obs.peer_epoch}")
        if not peer_heard:
            return Decision(Action.FENCE_SELF, "peer silent and witness unreachable: stop our side")
        if obs.lease or (obs.lease_lost_for is not None and obs.lease_lost_for < limits.fence_after):
            return Decision(Action.ALERT, f"{decision.reason}; witness unreachable and the peer does not "
                                          "report its QEMU dead: keeping COLO (the compare holds our output), "
                                          "never simplex without the grant")
        return Decision(Action.FENCE_SELF, f"{decision.reason}; no grant, witness unreachable, peer not "
                                           "reporting its QEMU dead: stop our side, it may be promoting")
    if decision.action == Action.RENEW:
        if outcome == ClaimOutcome.GRANTED:
            return Decision(Action.NONE, f"lease renewed: witness granted epoch {epoch} again")
        if outcome == ClaimOutcome.DENIED and lost_to_ourselves:
            return Decision(Action.ALERT, f"lease lost and epoch {epoch} denied in a race with our own claim "
                                          f"({who}): retrying until {limits.fence_after} s have passed, then fencing")
        if outcome == ClaimOutcome.DENIED:
            return Decision(Action.STAND_DOWN, f"lease lost and epoch {epoch} denied: {who} owns it")
        return Decision(Action.ALERT, f"lease lost, witness unreachable: keeping COLO until "
                                      f"{limits.fence_after} s have passed, then fencing")
    raise ValueError(f"after_claim: unexpected decision {decision.action}")
