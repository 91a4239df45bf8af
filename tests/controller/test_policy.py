"""Every row of the failover decision table (coserver.controller.policy), and the claim follow-ups."""

from __future__ import annotations

import pytest

from coserver.controller.policy import (
    Action,
    ClaimOutcome,
    Decision,
    Observation,
    Thresholds,
    WitnessView,
    after_claim,
    decide,
    must_self_fence,
    promote_wait,
)
from coserver.controller.roles import QemuHealth as Q
from coserver.controller.roles import Role

BOTH_UP = {"sync1": True, "sync2": True}
ONE_CUT = {"sync1": False, "sync2": True}
BOTH_CUT = {"sync1": False, "sync2": False}
#: Normal protection: the primary cs1 holds epoch 4.
W_PRIMARY_HOLDS = WitnessView(reachable=True, owner="cs1", epoch=4, alive=True)
W_DOWN = WitnessView(reachable=False)


def obs(node: str = "cs1", role: Role = Role.PRIMARY, **kw) -> Observation:
    """The primary cs1's view (its peer: an in-step secondary at epoch 4), unless kw say otherwise.

    `lease` defaults to what the witness view shows: we own a live lease at our epoch."""
    base = dict(node=node, role=role, epoch=4, qemu=Q.ALIVE, links=BOTH_UP, witness=W_PRIMARY_HOLDS,
                state="protected", peer_qemu=Q.ALIVE, peer_role="secondary", peer_state="protected",
                peer_epoch=4)
    base.update(kw)
    if "lease" not in kw:
        w = base["witness"]
        base["lease"] = bool(w.reachable and w.alive and w.owner == base["node"] and w.epoch == base["epoch"])
    return Observation(**base)


def sec(**kw) -> Observation:
    return obs(**{"node": "cs2", "role": Role.SECONDARY, "peer_role": "primary", **kw})


ROWS = [
    # (id, observation, action, claim_epoch)
    ("healthy primary", obs(), Action.NONE, None),
    ("healthy secondary", sec(), Action.NONE, None),
    ("nothing runs here", obs(role=Role.NONE, qemu=Q.NONE, links=BOTH_CUT, witness=W_DOWN), Action.NONE, None),
    ("fenced stays fenced after links heal",
     sec(role=Role.NONE, qemu=Q.NONE, state="fenced", peer_qemu=Q.DEAD), Action.NONE, None),
    # one link: alert, never failover
    ("primary, one link cut", obs(links=ONE_CUT), Action.DEGRADED_ALERT, None),
    ("secondary, one link cut", sec(links=ONE_CUT), Action.DEGRADED_ALERT, None),
    ("secondary, one link cut, witness unreachable", sec(links=ONE_CUT, witness=W_DOWN),
     Action.DEGRADED_ALERT, None),
    # both links
    ("secondary, both cut, witness reachable", sec(links=BOTH_CUT), Action.CLAIM_AND_PROMOTE, 5),
    ("secondary, both cut, no witness", sec(links=BOTH_CUT, witness=W_DOWN), Action.FENCE_SELF, None),
    ("primary, both cut, witness reachable", obs(links=BOTH_CUT), Action.CONTINUE_SIMPLEX, 5),
    ("primary, both cut, no witness", obs(links=BOTH_CUT, witness=W_DOWN), Action.FENCE_SELF, None),
    # a silent peer controller whose QEMU still checkpoints with ours is alive: no failover
    ("secondary, both cut but checkpoints flow", sec(links=BOTH_CUT, colo_alive=True), Action.ALERT, None),
    ("primary, both cut but checkpoints flow", obs(links=BOTH_CUT, colo_alive=True), Action.ALERT, None),
    ("secondary, silent peer, checkpoints flow, COLO error", sec(links=BOTH_CUT, colo_alive=True,
                                                                 colo_exit_error=True),
     Action.CLAIM_AND_PROMOTE, 5),
    # peer reports / COLO events
    ("secondary, peer says its QEMU dead", sec(peer_qemu=Q.DEAD), Action.CLAIM_AND_PROMOTE, 5),
    ("secondary, peer says its QEMU hung", sec(peer_qemu=Q.HUNG, peer_qemu_hung_for=1.5), Action.CLAIM_AND_PROMOTE, 5),
    # a peer's QMP deadline missed under load is not yet a lost replica: it counts after kill_hung_after
    ("secondary, peer says hung for 0.5 s: wait", sec(peer_qemu=Q.HUNG, peer_qemu_hung_for=0.5), Action.NONE, None),
    ("secondary, COLO exit on error", sec(colo_exit_error=True), Action.CLAIM_AND_PROMOTE, 5),
    ("primary, secondary's QEMU dead", obs(peer_qemu=Q.DEAD), Action.CONTINUE_SIMPLEX, 5),
    ("primary, secondary's QEMU hung", obs(peer_qemu=Q.HUNG, peer_qemu_hung_for=1.5, links=ONE_CUT),
     Action.CONTINUE_SIMPLEX, 5),
    ("primary, secondary's QEMU hung for 1 s: wait", obs(peer_qemu=Q.HUNG, peer_qemu_hung_for=1.0),
     Action.NONE, None),
    ("primary, COLO exit on error", obs(colo_exit_error=True), Action.CONTINUE_SIMPLEX, 5),
    # a replica still syncing is incomplete: it never takes over
    ("syncing secondary, primary lost", sec(state="syncing", links=BOTH_CUT), Action.FENCE_SELF, None),
    ("syncing secondary, primary says its QEMU died", sec(state="syncing", peer_qemu=Q.DEAD),
     Action.FENCE_SELF, None),
    ("starting secondary, COLO exit on error", sec(state="starting", colo_exit_error=True), Action.FENCE_SELF, None),
    ("syncing secondary, one link cut", sec(state="syncing", links=ONE_CUT), Action.DEGRADED_ALERT, None),
    ("syncing primary, secondary lost", obs(state="syncing", links=BOTH_CUT), Action.CONTINUE_SIMPLEX, 5),
    # local QEMU
    ("primary, local QEMU dead", obs(qemu=Q.DEAD), Action.KILL_LOCAL_QEMU, None),
    ("secondary, local QEMU dead", sec(qemu=Q.DEAD, links=BOTH_CUT, witness=W_DOWN), Action.KILL_LOCAL_QEMU, None),
    ("primary, local QEMU hung past the deadline", obs(qemu=Q.HUNG, qemu_hung_for=3.0),
     Action.KILL_LOCAL_QEMU, None),
    ("secondary, local QEMU hung past the deadline", sec(qemu=Q.HUNG, qemu_hung_for=10.0),
     Action.KILL_LOCAL_QEMU, None),
    ("primary, local QEMU hung briefly", obs(qemu=Q.HUNG, qemu_hung_for=1.0, peer_qemu=Q.DEAD),
     Action.NONE, None),
    ("secondary, local QEMU hung, primary silent on all links (a power cut mid-checkpoint): promote",
     sec(qemu=Q.HUNG, qemu_hung_for=3.0, links=BOTH_CUT, peer_silent_for=3.0), Action.CLAIM_AND_PROMOTE, 5),
    ("primary, local QEMU hung, secondary silent on all links: go on alone (the failover yanks)",
     obs(qemu=Q.HUNG, qemu_hung_for=3.0, links=BOTH_CUT, peer_silent_for=3.0), Action.CONTINUE_SIMPLEX, 5),
    ("simplex, local QEMU hung past the deadline", obs(role=Role.SIMPLEX, qemu=Q.HUNG, qemu_hung_for=9.0),
     Action.ALERT, None),
    ("primary, local QEMU stuck (no CPU, no COLO bytes): killed at once",
     obs(qemu=Q.HUNG, qemu_hung_for=0.4, qemu_stuck=True), Action.KILL_LOCAL_QEMU, None),
    ("secondary, local QEMU stuck: killed at once", sec(qemu=Q.HUNG, qemu_hung_for=0.4, qemu_stuck=True),
     Action.KILL_LOCAL_QEMU, None),
    ("simplex, local QEMU stuck: nobody to take over, wait as for a hang",
     obs(role=Role.SIMPLEX, qemu=Q.HUNG, qemu_hung_for=0.4, qemu_stuck=True), Action.NONE, None),
    ("primary, local QEMU stuck, secondary silent on all links: the peer-lost rows decide",
     obs(qemu=Q.HUNG, qemu_hung_for=3.0, qemu_stuck=True, links=BOTH_CUT, peer_silent_for=3.0),
     Action.CONTINUE_SIMPLEX, 5),
    # stale epochs
    ("primary, after heal the other owns a newer epoch",
     obs(witness=WitnessView(True, "cs2", 5, True)), Action.STAND_DOWN, None),
    ("simplex, after heal the other owns a newer epoch (lease expired)",
     obs(role=Role.SIMPLEX, witness=WitnessView(True, "cs2", 5, False), links=BOTH_UP), Action.STAND_DOWN, None),
    ("secondary, the primary moved on to a newer epoch", sec(witness=WitnessView(True, "cs1", 5, True)),
     Action.STAND_DOWN, None),
    ("primary, other node holds a live lease at our epoch", obs(witness=WitnessView(True, "cs2", 4, True)),
     Action.STAND_DOWN, None),
    ("stale primary with a dead QEMU still stands down first",
     obs(qemu=Q.DEAD, witness=WitnessView(True, "cs2", 9, True)), Action.STAND_DOWN, None),
    # simplex
    ("simplex, peer absent", obs(role=Role.SIMPLEX, links=BOTH_CUT, witness=WitnessView(True, "cs1", 5, True),
                                  epoch=5), Action.NONE, None),
    ("simplex, peer absent, witness unreachable", obs(role=Role.SIMPLEX, links=BOTH_CUT, witness=W_DOWN),
     Action.ALERT, None),
    ("primary, witness unreachable, peer fine", obs(witness=W_DOWN), Action.ALERT, None),
    # a stale peer report does not count once the peer is silent
    ("secondary, silent peer's old 'dead' report, no witness", sec(links=BOTH_CUT, witness=W_DOWN,
                                                                    peer_qemu=Q.DEAD), Action.FENCE_SELF, None),
    # maintenance
    ("maintenance holds a promotion", sec(links=BOTH_CUT, maintenance=True), Action.NONE, None),
    ("maintenance holds a kill", obs(qemu=Q.HUNG, qemu_hung_for=60, maintenance=True), Action.NONE, None),
    ("maintenance never holds a fence", sec(links=BOTH_CUT, witness=W_DOWN, maintenance=True),
     Action.FENCE_SELF, None),
    ("maintenance never holds a stand-down", obs(witness=WitnessView(True, "cs2", 5, True), maintenance=True),
     Action.STAND_DOWN, None),
    # issue 13: never two primaries. W_DOWN: the witness does not answer us; the peer is heard (fresh).
    ("(a) primary, no witness, COLO error, peer heard as primary at E+1",
     obs(witness=W_DOWN, colo_exit_error=True, peer_role="primary", peer_state="protected", peer_epoch=5),
     Action.STAND_DOWN, None),
    ("(a) ... or as a secondary promoting at E+1 (failing_over)",
     obs(witness=W_DOWN, colo_exit_error=True, peer_role="secondary", peer_state="failing_over", peer_epoch=5),
     Action.STAND_DOWN, None),
    ("(d) resumed after a freeze past the lease, no witness, peer simplex at E+1",
     obs(witness=W_DOWN, lease_lost_for=0.0, colo_exit_error=True, peer_role="simplex", peer_state="simplex",
         peer_epoch=5, peer_qemu=Q.ALIVE), Action.STAND_DOWN, None),
    ("(d) ... even while our own QEMU looks hung after the freeze",
     obs(witness=W_DOWN, lease_lost_for=0.0, qemu=Q.HUNG, qemu_hung_for=0.2, peer_role="simplex",
         peer_state="simplex", peer_epoch=5), Action.STAND_DOWN, None),
    ("(e) simplex hears the peer primary at a higher epoch",
     obs(role=Role.SIMPLEX, state="simplex", epoch=5, witness=W_DOWN, peer_role="primary", peer_epoch=6),
     Action.STAND_DOWN, None),
    ("(e) simplex hears the peer simplex at a higher epoch, witness still shows us",
     obs(role=Role.SIMPLEX, state="simplex", epoch=5, witness=WitnessView(True, "cs1", 5, False),
         peer_role="simplex", peer_state="simplex", peer_epoch=6), Action.STAND_DOWN, None),
    ("a peer at a higher epoch that runs nothing is no reason to stand down",
     obs(peer_role="none", peer_state="fenced", peer_epoch=6, peer_qemu=Q.NONE), Action.NONE, None),
    ("a silent peer's old report of a higher epoch does not count",
     obs(role=Role.SIMPLEX, state="simplex", epoch=5, links=BOTH_CUT, witness=WitnessView(True, "cs1", 5, True),
         peer_role="primary", peer_epoch=6), Action.NONE, None),
    ("secondary hears the primary moved to simplex at E+1", sec(peer_role="simplex", peer_epoch=5),
     Action.STAND_DOWN, None),
    # a primary that lost its lease: re-claim, keep COLO, fence after F unless the secondary vouches
    ("primary, lease just lost, witness answers again: re-claim our epoch",
     obs(lease=False, lease_lost_for=0.3, witness=WitnessView(True, "cs1", 4, False)), Action.RENEW, 4),
    ("primary, lease lost < F, witness unreachable, all well: keep COLO",
     obs(lease=False, lease_lost_for=0.5, witness=W_DOWN), Action.ALERT, None),
    ("primary, lease lost >= F, secondary heard in step: keep COLO",
     obs(lease=False, lease_lost_for=30.0, witness=W_DOWN), Action.ALERT, None),
    ("primary, lease lost >= F, COLO error: fence",
     obs(lease=False, lease_lost_for=1.0, witness=W_DOWN, colo_exit_error=True), Action.FENCE_SELF, None),
    ("primary, lease lost >= F, secondary hung: fence",
     obs(lease=False, lease_lost_for=1.5, witness=W_DOWN, peer_qemu=Q.HUNG), Action.FENCE_SELF, None),
    ("primary, lease lost >= F, peer silent: fence",
     obs(lease=False, lease_lost_for=1.5, witness=W_DOWN, links=BOTH_CUT), Action.FENCE_SELF, None),
    ("primary, lease lost >= F, local QEMU hung: fence first",
     obs(lease=False, lease_lost_for=2.0, witness=W_DOWN, links=BOTH_CUT, qemu=Q.HUNG, qemu_hung_for=0.5),
     Action.FENCE_SELF, None),
    ("primary still syncing a new secondary: its lease loss fences nothing (no replica could take over)",
     obs(state="syncing", lease=False, lease_lost_for=9.0, witness=W_DOWN, peer_state="syncing"),
     Action.ALERT, None),
    ("simplex, lease lost: no fence (no replica could take over)",
     obs(role=Role.SIMPLEX, state="simplex", lease=False, lease_lost_for=9.0, witness=W_DOWN, links=BOTH_CUT),
     Action.ALERT, None),
]


@pytest.mark.parametrize("o,action,claim", [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
def test_decision_table(o: Observation, action: Action, claim: int | None):
    d = decide(o)
    assert (d.action, d.claim_epoch) == (action, claim), d.reason
    assert d.reason and "\n" not in d.reason


def test_one_link_cut_never_fails_over_whatever_else_is_fine():
    for role in (Role.PRIMARY, Role.SECONDARY):
        for links in ({"sync1": False, "sync2": True}, {"sync1": True, "sync2": False}):
            d = decide(obs(role=role, node="cs1" if role == Role.PRIMARY else "cs2", links=links))
            assert d.action == Action.DEGRADED_ALERT and "sync" in d.reason
            assert d.claim_epoch is None


def test_maintenance_says_what_it_held_back():
    d = decide(sec(links=BOTH_CUT, maintenance=True))
    assert d.suppressed == Action.CLAIM_AND_PROMOTE and "maintenance" in d.reason


def test_kill_deadline_is_a_threshold():
    o = obs(qemu=Q.HUNG, qemu_hung_for=5.0)
    assert decide(o, Thresholds(kill_hung_after=6.0)).action == Action.NONE
    assert decide(o, Thresholds(kill_hung_after=5.0)).action == Action.KILL_LOCAL_QEMU


# -- after the claim -------------------------------------------------------------------------

PEER_WINS = WitnessView(True, "cs1", 4, True)

CLAIMS = [
    ("both cut, witness grants: promote", sec(links=BOTH_CUT), ClaimOutcome.GRANTED, None, Action.PROMOTE),
    ("both cut, peer's lease may still lapse: retry", sec(links=BOTH_CUT, peer_silent_for=1.0),
     ClaimOutcome.DENIED, PEER_WINS, Action.NONE),
    ("both cut, peer keeps its lease: secondary loses", sec(links=BOTH_CUT, peer_silent_for=3.5),
     ClaimOutcome.DENIED, PEER_WINS, Action.FENCE_SELF),
    ("both cut, primary already moved to a newer epoch", sec(links=BOTH_CUT), ClaimOutcome.DENIED,
     WitnessView(True, "cs1", 5, True), Action.STAND_DOWN),
    ("both cut, witness gone during the claim", sec(links=BOTH_CUT), ClaimOutcome.UNREACHABLE, None,
     Action.FENCE_SELF),
    ("peer says dead, not yet released: wait", sec(peer_qemu=Q.DEAD), ClaimOutcome.DENIED, PEER_WINS, Action.NONE),
    ("peer says hung, witness gone: alert", sec(peer_qemu=Q.HUNG, peer_qemu_hung_for=2.0), ClaimOutcome.UNREACHABLE, None, Action.ALERT),
    ("peer says dead, released: promote", sec(peer_qemu=Q.DEAD), ClaimOutcome.GRANTED, None, Action.PROMOTE),
    ("primary, both cut, granted: simplex", obs(links=BOTH_CUT), ClaimOutcome.GRANTED, None,
     Action.CONTINUE_SIMPLEX),
    ("primary, both cut, secondary got it: stand down", obs(links=BOTH_CUT), ClaimOutcome.DENIED,
     WitnessView(True, "cs2", 5, True), Action.STAND_DOWN),
    ("primary, both cut, witness gone: fence", obs(links=BOTH_CUT), ClaimOutcome.UNREACHABLE, None,
     Action.FENCE_SELF),
    ("primary, secondary's QEMU dead, witness gone: simplex anyway", obs(peer_qemu=Q.DEAD),
     ClaimOutcome.UNREACHABLE, None, Action.CONTINUE_SIMPLEX),
    # issue 13
    ("(b) primary, no witness, peer reports its QEMU dead at E: simplex",
     obs(witness=W_DOWN, lease=False, colo_exit_error=True, peer_qemu=Q.DEAD, peer_role="none",
         peer_state="stopped"), ClaimOutcome.UNREACHABLE, None, Action.CONTINUE_SIMPLEX),
    ("(b) ... at an older epoch too", obs(witness=W_DOWN, lease=False, peer_qemu=Q.DEAD, peer_epoch=3),
     ClaimOutcome.UNREACHABLE, None, Action.CONTINUE_SIMPLEX),
    ("peer's QEMU dead but at a newer epoch: no simplex without the witness",
     obs(witness=W_DOWN, lease=False, peer_qemu=Q.DEAD, peer_role="none", peer_epoch=5),
     ClaimOutcome.UNREACHABLE, None, Action.FENCE_SELF),
    ("peer's QEMU dead, epoch unknown: no simplex without the witness",
     obs(witness=W_DOWN, lease=False, peer_qemu=Q.DEAD, peer_epoch=None),
     ClaimOutcome.UNREACHABLE, None, Action.FENCE_SELF),
    ("the split brain of issue 13: COLO error, peer heard alive, lease held: keep COLO, never simplex",
     obs(colo_exit_error=True), ClaimOutcome.UNREACHABLE, None, Action.ALERT),
    ("... lease lost < F: keep COLO", obs(colo_exit_error=True, lease=False, lease_lost_for=0.4, witness=W_DOWN),
     ClaimOutcome.UNREACHABLE, None, Action.ALERT),
    ("... no grant at all: fence", obs(colo_exit_error=True, lease=False, witness=W_DOWN),
     ClaimOutcome.UNREACHABLE, None, Action.FENCE_SELF),
    ("secondary hung, not dead: no simplex without the witness", obs(peer_qemu=Q.HUNG, lease=False,
                                                                      peer_qemu_hung_for=2.0, witness=W_DOWN),
     ClaimOutcome.UNREACHABLE, None, Action.FENCE_SELF),
    ("(c) no grant, peer silent: fence", obs(links=BOTH_CUT, lease=False,
                                             witness=WitnessView(True, "cs1", 4, False)),
     ClaimOutcome.UNREACHABLE, None, Action.FENCE_SELF),
]


@pytest.mark.parametrize("o,outcome,owner,action", [c[1:] for c in CLAIMS], ids=[c[0] for c in CLAIMS])
def test_after_claim(o: Observation, outcome: ClaimOutcome, owner: WitnessView | None, action: Action):
    first = decide(o)
    assert first.claim_epoch == o.epoch + 1
    final = after_claim(o, first, outcome, owner)
    assert final.action == action, final.reason
    assert final.claim_epoch is None and "\n" not in final.reason


@pytest.mark.parametrize("outcome,owner,action", [
    (ClaimOutcome.GRANTED, None, Action.NONE),
    (ClaimOutcome.DENIED, WitnessView(True, "cs2", 5, True), Action.STAND_DOWN),
    (ClaimOutcome.DENIED, WitnessView(True, "cs2", 4, True), Action.STAND_DOWN),
    # denied by a race with our own older lease (its expiry, or a slow renewal, changed the keys):
    # the witness names us, or nobody, at our epoch: retry, never stand down
    (ClaimOutcome.DENIED, WitnessView(True, "cs1", 4, True), Action.ALERT),
    (ClaimOutcome.DENIED, WitnessView(True, None, 4, False), Action.ALERT),
    (ClaimOutcome.DENIED, WitnessView(True, None, 5, False), Action.STAND_DOWN),   # a newer epoch was granted
    (ClaimOutcome.UNREACHABLE, None, Action.ALERT),
])
def test_a_lost_lease_is_reclaimed_at_our_own_epoch(outcome, owner, action):
    o = obs(lease=False, lease_lost_for=0.2, witness=WitnessView(True, "cs1", 4, False), colo_exit_error=True)
    first = decide(o)
    assert (first.action, first.claim_epoch) == (Action.RENEW, 4)
    assert after_claim(o, first, outcome, owner).action == action


def test_a_simplex_denied_by_its_own_claim_retries_until_the_fence_bound():
    """The Vagrant lab's case: the only copy of the guest (simplex) lost its lease to slow keep-alives;
    its re-claim lost a race with its own older lease, and the witness named this very host. It retries
    (ALERT) while its lease is gone for less than fence_after; past it, it stands down as before."""
    limits = Thresholds()
    ours = WitnessView(True, "cs1", 4, True)
    for lost, action in ((0.5, Action.ALERT), (limits.fence_after - 0.1, Action.ALERT),
                         (limits.fence_after, Action.STAND_DOWN)):
        o = obs(role=Role.SIMPLEX, state="simplex", links=BOTH_CUT, peer_qemu=None, peer_role=None,
                peer_state=None, peer_epoch=None, lease=False, lease_lost_for=lost, witness=ours)
        d = decide(o)
        assert (d.action, d.claim_epoch) == (Action.RENEW, 4), d.reason
        final = after_claim(o, d, ClaimOutcome.DENIED, ours, limits)
        assert final.action == action, (lost, final.reason)


def test_c_no_grant_peer_silent_never_simplex():
    """(c): every way a primary without a grant and without its peer can turn out: never simplex."""
    for w in (W_DOWN, WitnessView(True, "cs1", 4, False)):
        for lost in (None, 0.1, 5.0):
            o = obs(links=BOTH_CUT, lease=False, lease_lost_for=lost, witness=w, colo_exit_error=True)
            d = decide(o)
            if d.claim_epoch is not None:
                d = after_claim(o, d, ClaimOutcome.UNREACHABLE)
            assert d.action in (Action.FENCE_SELF, Action.ALERT), (w, lost, d)


def test_a_granted_promotion_waits_unless_the_peer_reported_its_qemu_dead():
    limits = Thresholds()
    silent = sec(links=BOTH_CUT)
    d = after_claim(silent, decide(silent), ClaimOutcome.GRANTED)
    assert d.action == Action.PROMOTE and d.wait == limits.promote_wait
    colo = sec(colo_exit_error=True)   # the primary is heard alive: it may still be serving
    assert after_claim(colo, decide(colo), ClaimOutcome.GRANTED).wait == limits.promote_wait
    dead = sec(peer_qemu=Q.DEAD, peer_role="none", peer_state="stopped")
    assert after_claim(dead, decide(dead), ClaimOutcome.GRANTED).wait == 0.0


def test_the_bound_and_its_margin():
    t = Thresholds()
    assert t.promote_wait == pytest.approx(t.fence_bound + t.promote_margin) == pytest.approx(2.0)
    assert t.fence_bound == pytest.approx(1.3)
    assert t.margin == pytest.approx(0.7) and t.margin > 0
    assert Thresholds(heartbeat_timeout=5.0).promote_wait == pytest.approx(5.1 + 0.2 + 0.7)  # W follows the bound
    with pytest.raises(ValueError):
        Thresholds(lease_patience=1.0)


def test_the_bound_uses_the_real_defaults():
    from coserver.controller import heartbeat, witness
    from coserver.controller.policy import DEFAULT_HEARTBEAT_TIMEOUT, DEFAULT_LEASE_TTL
    assert DEFAULT_LEASE_TTL == witness.DEFAULT_TTL
    assert DEFAULT_HEARTBEAT_TIMEOUT == heartbeat.DEFAULT_TIMEOUT


def test_after_claim_refuses_a_decision_without_claim():
    with pytest.raises(ValueError):
        after_claim(obs(), Decision(Action.NONE, "x"), ClaimOutcome.GRANTED)


class RuleWitness:
    """The witness's claim rules (coserver.controller.witness) as plain logic, for the model below."""

    def __init__(self, owner: str, epoch: int, alive: bool) -> None:
        self.owner, self.epoch, self.alive = owner, epoch, alive

    def claim(self, node: str, epoch: int) -> ClaimOutcome:
        if self.alive and self.owner != node:
            return ClaimOutcome.DENIED
        if epoch < self.epoch or (epoch == self.epoch and self.owner != node):
            return ClaimOutcome.DENIED
        self.owner, self.epoch, self.alive = node, epoch, True
        return ClaimOutcome.GRANTED

    def view(self) -> WitnessView:
        return WitnessView(True, self.owner, self.epoch, self.alive)


@pytest.mark.parametrize("p_reach", [True, False])
@pytest.mark.parametrize("s_reach", [True, False])
@pytest.mark.parametrize("p_first", [True, False])
def test_the_two_sides_of_a_partition_never_both_run_as_primary(p_reach, s_reach, p_first):
    """A full partition between the hosts at t=0, every reachability of the witness, both claim orders.

    Each side re-decides every 0.5 s from t=1 s (heartbeat timeout) as the daemon will. The
    primary's lease lives on only while it reaches the witness, else it lapses at t=2.5 s
    (TTL 2 s + etcd's 0.5 s expiry tick).
    """
    witness = RuleWitness("cs1", 4, alive=True)
    roles = {"p": Role.PRIMARY, "s": Role.SECONDARY}
    epochs = {"p": 4, "s": 4}
    node = {"p": "cs1", "s": "cs2"}
    reach = {"p": p_reach, "s": s_reach}
    promoted = set()
    for step in range(2, 13):
        t = step / 2
        if not p_reach and t >= 2.5 and witness.owner == "cs1" and witness.epoch == 4:
            witness.alive = False
        for side in (("p", "s") if p_first else ("s", "p")):
            if roles[side] == Role.NONE:
                continue
            o = (obs if side == "p" else sec)(role=roles[side], epoch=epochs[side], links=BOTH_CUT,
                                              witness=witness.view() if reach[side] else W_DOWN,
                                              peer_silent_for=t)
            d = decide(o)
            if d.claim_epoch is not None:
                outcome = witness.claim(node[side], d.claim_epoch) if reach[side] else ClaimOutcome.UNREACHABLE
                d = after_claim(o, d, outcome, witness.view())
            if d.action in (Action.FENCE_SELF, Action.STAND_DOWN, Action.KILL_LOCAL_QEMU):
                roles[side] = Role.NONE
            elif d.action in (Action.PROMOTE, Action.CONTINUE_SIMPLEX):
                roles[side], epochs[side] = Role.SIMPLEX, epochs[side] + 1
                promoted.add(side)
            # the primary serves unless stopped; the secondary only once promoted
            serving = [x for x in ("p", "s") if roles[x] in (Role.PRIMARY, Role.SIMPLEX)]
            assert len(serving) <= 1, (t, roles)
    if p_reach or s_reach:
        assert len(serving) == 1, roles  # with a witness somebody serves
    if not p_reach and s_reach:
        assert serving == ["s"]
    if p_reach:
        assert serving == ["p"]


@pytest.mark.parametrize("peer_qemu, peer_role, peer_epoch, dead", [
    (Q.DEAD, "primary", 4, True),      # the old primary saw its QEMU die, before it reaped and released
    (Q.DEAD, "none", 4, True),
    (Q.NONE, "none", 4, True),         # reaped: nothing runs there
    (Q.NONE, "primary", 4, False),     # a restarting controller says NONE until it re-attaches
    (Q.DEAD, "primary", 5, False),     # a higher epoch than ours: not the side we replace
    (Q.ALIVE, "primary", 4, False),
])
def test_the_peer_reports_its_qemu_dead(peer_qemu, peer_role, peer_epoch, dead):
    o = sec(peer_qemu=peer_qemu, peer_role=peer_role, peer_epoch=peer_epoch, colo_exit_error=True)
    assert o.peer_reports_dead is dead
    assert promote_wait(o) == (0.0 if dead else Thresholds().promote_wait)


def test_replication_stalled_while_the_peer_is_heard():
    """An MTU black hole or a firewall on the replication ports: heartbeats flow, checkpoints do not.
    The primary goes on alone (claim E+1, re-sync later); the secondary only says so; within the
    window, or outside COLO, nothing."""
    late = Thresholds().replication_stall
    d = decide(obs(replication_late_for=late + 0.1))
    assert (d.action, d.claim_epoch) == (Action.CONTINUE_SIMPLEX, 5) and "replication stalled" in d.reason
    assert decide(sec(replication_late_for=late + 0.1)).action == Action.ALERT
    assert decide(obs(replication_late_for=late - 0.1)).action == Action.NONE
    assert decide(obs(replication_late_for=late + 5, state="syncing")).action != Action.CONTINUE_SIMPLEX
    assert decide(obs(replication_late_for=late + 5, maintenance=True)).action == Action.NONE


DISK_ROWS = [
    # (id, observation, action, claim_epoch)
    ("primary: the replica's disk fails writes -> simplex, a new epoch",
     obs(replica_disk_failing=True), Action.CONTINUE_SIMPLEX, 5),
    ("primary: its own disk fails, secondary in step -> kill our QEMU so it takes over",
     obs(local_disk_failing=True), Action.KILL_LOCAL_QEMU, None),
    ("primary: its own disk fails, secondary still syncing -> alert only (its replica is incomplete)",
     obs(local_disk_failing=True, peer_state="syncing"), Action.ALERT, None),
    ("primary: its own disk fails, secondary silent -> the peer-lost rows decide",
     obs(local_disk_failing=True, links=BOTH_CUT, peer_silent_for=5.0), Action.CONTINUE_SIMPLEX, 5),
    ("primary not in COLO (syncing): a replica error is the sync's business",
     obs(replica_disk_failing=True, state="syncing"), Action.NONE, None),
    ("secondary: its own disk fails -> alert; the primary drops the replica",
     sec(local_disk_failing=True), Action.ALERT, None),
    ("simplex: its disk fails -> alert, nobody to fail over to",
     obs(role=Role.SIMPLEX, state="simplex", local_disk_failing=True, links=BOTH_CUT, peer_qemu=None,
         peer_role=None, peer_state=None, peer_epoch=None), Action.ALERT, None),
    ("maintenance holds back the disk handover",
     obs(local_disk_failing=True, maintenance=True), Action.NONE, None),
]


@pytest.mark.parametrize("o, action, claim", [pytest.param(o, a, c, id=i) for i, o, a, c in DISK_ROWS])
def test_disk_errors(o: Observation, action: Action, claim: int | None):
    d = decide(o)
    assert (d.action, d.claim_epoch) == (action, claim), d.reason
    if action != Action.NONE and o.peer_heard:   # the operator is told it is the disk
        assert "disk" in d.reason


UNRESPONSIVE_ROWS = [
    # (id, observation, action, claim_epoch)
    ("primary: the peer silent for 0.6 s leaves the COLO streams' bytes unacknowledged -> simplex now",
     obs(replica_unresponsive=True, peer_silent_for=0.6), Action.CONTINUE_SIMPLEX, 5),
    ("primary: the same with the witness unreachable -> the alert it gets without it; the heartbeat "
     "timeout's rows decide", obs(replica_unresponsive=True, peer_silent_for=0.6, witness=W_DOWN, lease=True),
     Action.ALERT, None),
    ("primary not in COLO (syncing): nothing to hold, nothing to drop",
     obs(replica_unresponsive=True, peer_silent_for=0.6, state="syncing"), Action.NONE, None),
    ("secondary: never promotes on it (the primary's lease decides that)",
     sec(replica_unresponsive=True, peer_silent_for=0.6), Action.NONE, None),
]


@pytest.mark.parametrize("o, action, claim", [pytest.param(o, a, c, id=i) for i, o, a, c in UNRESPONSIVE_ROWS])
def test_an_unresponsive_replica_is_dropped_before_the_heartbeat_timeout(o: Observation, action: Action,
                                                                      claim: int | None):
    d = decide(o)
    assert (d.action, d.claim_epoch) == (action, claim), d.reason
    if action == Action.CONTINUE_SIMPLEX:
        assert "acknowledges none" in d.reason


def test_a_simplex_that_lost_its_lease_renews_it_and_never_fences_itself():
    """It runs the only guest: re-claim its epoch when the witness answers; never FENCE_SELF for it."""
    simplex = dict(role=Role.SIMPLEX, state="simplex", links=BOTH_CUT, peer_qemu=None, peer_role=None,
                   peer_state=None, peer_epoch=None, lease=False, lease_lost_for=30.0)
    d = decide(obs(**simplex))
    assert (d.action, d.claim_epoch) == (Action.RENEW, 4), d.reason
    d = decide(obs(**simplex, witness=W_DOWN))
    assert d.action == Action.ALERT, d.reason


def test_no_self_fence_while_the_peer_reports_its_qemu_dead():
    """Witness cut, then the secondary's QEMU died: the primary goes on alone on that report; the
    fence watchdog must not kill it mid-failover (nobody else can be promoting a dead QEMU)."""
    lost = dict(lease=False, lease_lost_for=5.0, witness=W_DOWN)
    assert must_self_fence(obs(**lost, peer_qemu=Q.HUNG, state="failing_over"))
    assert not must_self_fence(obs(**lost, peer_qemu=Q.DEAD, state="failing_over"))
    assert must_self_fence(obs(**lost, peer_qemu=Q.DEAD, peer_epoch=5, state="failing_over"))  # peer ahead
