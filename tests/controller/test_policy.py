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
    base = dict(node=node, role=role, epoch=4, qemu=Q.ALIVE, links=BOTH_UP, witness=W_PRIMARY_HOLDS,
                state="protected", peer_qemu=Q.ALIVE)
    base.update(kw)
    return Observation(**base)


def sec(**kw) -> Observation:
    return obs(**{"node": "cs2", "role": Role.SECONDARY, **kw})


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
    ("secondary, peer says its QEMU hung", sec(peer_qemu=Q.HUNG), Action.CLAIM_AND_PROMOTE, 5),
    ("secondary, COLO exit on error", sec(colo_exit_error=True), Action.CLAIM_AND_PROMOTE, 5),
    ("primary, secondary's QEMU dead", obs(peer_qemu=Q.DEAD), Action.CONTINUE_SIMPLEX, 5),
    ("primary, secondary's QEMU hung", obs(peer_qemu=Q.HUNG, links=ONE_CUT), Action.CONTINUE_SIMPLEX, 5),
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
    ("simplex, local QEMU hung past the deadline", obs(role=Role.SIMPLEX, qemu=Q.HUNG, qemu_hung_for=9.0),
     Action.ALERT, None),
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
    ("peer says hung, witness gone: alert", sec(peer_qemu=Q.HUNG), ClaimOutcome.UNREACHABLE, None, Action.ALERT),
    ("peer says dead, released: promote", sec(peer_qemu=Q.DEAD), ClaimOutcome.GRANTED, None, Action.PROMOTE),
    ("primary, both cut, granted: simplex", obs(links=BOTH_CUT), ClaimOutcome.GRANTED, None,
     Action.CONTINUE_SIMPLEX),
    ("primary, both cut, secondary got it: stand down", obs(links=BOTH_CUT), ClaimOutcome.DENIED,
     WitnessView(True, "cs2", 5, True), Action.STAND_DOWN),
    ("primary, both cut, witness gone: fence", obs(links=BOTH_CUT), ClaimOutcome.UNREACHABLE, None,
     Action.FENCE_SELF),
    ("primary, secondary's QEMU dead, witness gone: simplex anyway", obs(peer_qemu=Q.DEAD),
     ClaimOutcome.UNREACHABLE, None, Action.CONTINUE_SIMPLEX),
]


@pytest.mark.parametrize("o,outcome,owner,action", [c[1:] for c in CLAIMS], ids=[c[0] for c in CLAIMS])
def test_after_claim(o: Observation, outcome: ClaimOutcome, owner: WitnessView | None, action: Action):
    first = decide(o)
    assert first.claim_epoch == o.epoch + 1
    final = after_claim(o, first, outcome, owner)
    assert final.action == action, final.reason
    assert final.claim_epoch is None and "\n" not in final.reason


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
