"""The FT server state machine: the table is the only way between states, and every step is kept."""

from __future__ import annotations

import json

import pytest

from coserver.controller.statemachine import RUNNING, TRANSITIONS, FtState, FtStateMachine, IllegalTransition

S = FtState


def walk(sm: FtStateMachine, *states: FtState) -> None:
    for s in states:
        sm.to(s, f"to {s}")


def test_a_primary_life_protection_link_loss_failover_reprotection():
    seen = []
    sm = FtStateMachine("ft1", clock=iter(range(100)).__next__, on_change=seen.append)
    walk(sm, S.STARTING, S.SYNCING, S.PROTECTED, S.DEGRADED, S.PROTECTED, S.FAILING_OVER, S.SIMPLEX,
         S.SYNCING, S.PROTECTED, S.STOPPING, S.STOPPED)
    assert sm.state == S.STOPPED and not sm.running
    assert [(t.src, t.dst) for t in sm.history][:3] == [(S.STOPPED, S.STARTING), (S.STARTING, S.SYNCING),
                                                          (S.SYNCING, S.PROTECTED)]
    assert seen == sm.history and [t.at for t in seen] == list(range(11))


@pytest.mark.parametrize("src,dst", [
    (S.STOPPED, S.PROTECTED),  # never protected without starting and syncing
    (S.SIMPLEX, S.PROTECTED),  # re-protection goes through syncing
    (S.FENCED, S.PROTECTED),  # healed links never revive a fenced side
    (S.FENCED, S.SIMPLEX),
    (S.FENCED, S.STARTING),  # clear the fence (-> stopped) first
    (S.SYNCING, S.FAILING_OVER),  # an incomplete replica never takes over
    (S.FAILING_OVER, S.PROTECTED),
    (S.PROTECTED, S.PROTECTED),  # no silent self-loops
    (S.STOPPING, S.STARTING),
])
def test_illegal_transitions_raise_and_leave_the_state_alone(src, dst):
    sm = FtStateMachine("ft1", src)
    with pytest.raises(IllegalTransition) as ei:
        sm.to(dst, "because")
    msg = str(ei.value)
    assert sm.state == src and sm.history == []
    assert "ft1" in msg and f"{src} -> {dst}" in msg and "\n" not in msg


def test_every_table_entry_is_accepted_and_nothing_else():
    for src in FtState:
        for dst in FtState:
            sm = FtStateMachine("ft1", src)
            assert sm.can(dst) == (dst in TRANSITIONS[src])
            if dst in TRANSITIONS[src]:
                assert sm.to(dst, "ok").dst == dst
            else:
                with pytest.raises(IllegalTransition):
                    sm.to(dst, "no")


def test_every_state_is_reachable_from_stopped_and_leads_back_to_stopped():
    reach, todo = {S.STOPPED}, [S.STOPPED]
    while todo:
        for nxt in TRANSITIONS[todo.pop()]:
            if nxt not in reach:
                reach.add(nxt)
                todo.append(nxt)
    assert reach == set(FtState)
    for s in FtState:
        assert s == S.STOPPED or S.STOPPED in TRANSITIONS[s] or S.STOPPING in TRANSITIONS[s]


def test_a_reason_is_required_and_kept_on_one_line():
    sm = FtStateMachine("ft1")
    with pytest.raises(IllegalTransition, match="needs a reason"):
        sm.to(S.STARTING, "  ")
    sm.to(S.STARTING, "operator\nasked")
    assert sm.history[-1].reason == "operator asked"


def test_history_is_short_and_status_is_json():
    sm = FtStateMachine("ft1", history=4)
    for _ in range(5):
        walk(sm, S.STARTING, S.STOPPED)
    assert len(sm.history) == 4
    st = json.loads(json.dumps(sm.status()))
    assert st["state"] == "stopped" and st["running"] is False and st["ftserver"] == "ft1"
    assert st["history"][-1]["from"] == "starting" and st["history"][-1]["to"] == "stopped"
    assert set(st["history"][0]) == {"at", "from", "to", "reason"}


def test_resume_records_the_restart_and_continues_from_the_journaled_state():
    sm = FtStateMachine.resume("ft1", "protected")
    assert sm.state == S.PROTECTED and sm.running
    assert sm.history[0].reason == "controller restarted"
    sm.to(S.DEGRADED, "sync2 lost")
    assert [t.dst for t in sm.history] == [S.PROTECTED, S.DEGRADED]


def test_running_states():
    assert RUNNING == {S.STARTING, S.SYNCING, S.PROTECTED, S.DEGRADED, S.FAILING_OVER, S.SIMPLEX}
