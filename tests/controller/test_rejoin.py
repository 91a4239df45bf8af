"""The re-protection moves (coserver.controller.rejoin): who rejoins, who protects, when not."""

from __future__ import annotations

import math

import pytest

from coserver.controller.rejoin import (
    HOLD_S,
    MAX_FAILED_ATTEMPTS,
    AttemptLog,
    Move,
    RejoinView,
    ReprotectPolicy,
    next_move,
    retry_after,
)
from coserver.controller.roles import Role
from coserver.controller.statemachine import FtState


def lost(**kw) -> RejoinView:
    base = dict(role=Role.NONE, state=FtState.STOPPED, epoch=1, policy=ReprotectPolicy.AUTO, maintenance=False,
                requested=False, since_last_attempt_s=math.inf, peer_heard=True, peer_role="simplex",
                peer_state="simplex", peer_epoch=2)
    base.update(kw)
    return RejoinView(**base)


def survivor(**kw) -> RejoinView:
    base = dict(role=Role.SIMPLEX, state=FtState.SIMPLEX, epoch=2, policy=ReprotectPolicy.AUTO, maintenance=False,
                requested=False, since_last_attempt_s=math.inf, peer_heard=True, peer_role="secondary",
                peer_state="syncing", peer_epoch=2)
    base.update(kw)
    return RejoinView(**base)


@pytest.mark.parametrize("view, move", [
    (lost(), Move.START_SECONDARY),
    (lost(state=FtState.FENCED), Move.START_SECONDARY),           # a fenced loser may rejoin as a secondary
    (lost(maintenance=True), Move.NONE),
    (lost(policy=ReprotectPolicy.MANUAL), Move.NONE),
    (lost(policy=ReprotectPolicy.MANUAL, requested=True), Move.START_SECONDARY),
    (lost(peer_heard=False), Move.NONE),
    (lost(peer_role="primary"), Move.NONE),                        # still protected with someone else
    (lost(peer_epoch=0), Move.NONE),                               # never follow an older epoch
    (lost(since_last_attempt_s=1.0), Move.NONE),                   # no flapping
    (lost(busy=True), Move.NONE),
    (survivor(), Move.PROTECT),
    (survivor(peer_state="starting"), Move.NONE),                  # not ready for the sync yet
    (survivor(peer_role="none"), Move.NONE),
    (survivor(peer_epoch=3), Move.NONE),                           # it follows someone newer than us
    (survivor(state=FtState.SYNCING), Move.NONE),                  # a protect is already under way
    (survivor(since_last_attempt_s=2.0), Move.NONE),
    (survivor(role=Role.PRIMARY, state=FtState.PROTECTED), Move.NONE),
])
def test_next_move(view, move):
    assert next_move(view)[0] == move


def test_failed_attempts_back_off_doubling_to_a_cap():
    assert [retry_after(n) for n in range(0, 7)] == [5.0, 5.0, 10.0, 20.0, 40.0, 60.0, 60.0]
    assert next_move(lost(failures=2, last_failure="x", since_last_attempt_s=6.0))[0] == Move.NONE
    assert next_move(lost(failures=2, last_failure="x", since_last_attempt_s=10.5))[0] == Move.START_SECONDARY
    # the survivor never holds back: a fresh secondary waiting means the other side chose to try
    assert next_move(survivor(failures=3, since_last_attempt_s=6.0))[0] == Move.PROTECT
    assert next_move(survivor(failures=MAX_FAILED_ATTEMPTS, last_failure="x"))[0] == Move.PROTECT


def test_a_crash_loop_stops_with_the_reason_until_an_operator_asks():
    reason = "qemu: memory.c:2683: Assertion `!subregion->container' failed."
    move, why = next_move(lost(failures=MAX_FAILED_ATTEMPTS, last_failure=reason))
    assert move == Move.NONE
    assert why.startswith("cannot protect: ") and reason in why
    again = next_move(lost(failures=MAX_FAILED_ATTEMPTS, last_failure=reason, requested=True))[0]
    assert again == Move.START_SECONDARY


def test_attempt_log_counts_failures_in_a_row_and_a_hold_resets_it():
    log = AttemptLog()
    for n in range(1, MAX_FAILED_ATTEMPTS):
        log.failed(f"died {n}")
        assert log.alert() is None
    log.failed("died last")
    assert log.gave_up and log.alert() is not None and "died last" in log.alert()
    log.held()
    assert (log.failures, log.alert()) == (0, None)


def test_an_attempt_fails_when_it_ends_before_it_held_and_counts_once():
    log = AttemptLog()
    log.start("secondary")
    assert not log.on_state(FtState.SYNCING, 0.0)
    assert not log.on_state(FtState.PROTECTED, 1.0)
    assert not log.tick(10.0)                          # protected 9 s: not held yet
    assert log.on_state(FtState.FAILING_OVER, 12.0)    # the secondary died at a checkpoint
    log.failed("secondary QEMU exited: Assertion failed")
    assert not log.on_state(FtState.SIMPLEX, 12.5)     # the same attempt is not counted twice
    assert log.failures == 1


def test_an_attempt_that_holds_clears_the_count_and_later_faults_are_not_failures():
    log = AttemptLog(failures=3, last_reason="x")
    log.start("secondary")
    log.on_state(FtState.PROTECTED, 100.0)
    assert log.tick(100.0 + HOLD_S)
    assert (log.failures, log.alert()) == (0, None)
    assert not log.on_state(FtState.FAILING_OVER, 500.0)   # a real failover later: no attempt open


def test_an_operator_stop_is_not_a_failed_attempt():
    log = AttemptLog()
    log.start("secondary")
    assert not log.on_state(FtState.STOPPING, 1.0)
    assert not log.on_state(FtState.STOPPED, 2.0)
    assert log.failures == 0


def test_an_attempt_ended_by_something_else_is_closed_not_counted():
    log = AttemptLog()
    log.start("protect")
    log.on_state(FtState.PROTECTED, 1.0)
    assert log.on_state(FtState.FAILING_OVER, 5.0)     # e.g. an operator killed this primary's QEMU
    log.close()
    assert (log.failures, log.open) == (0, False)


def test_a_survivor_without_its_grant_does_not_protect():
    """It went on alone on its peer's own word (witness unreachable): as a primary without a grant it
    would fence itself while its new secondary syncs. It renews first, then protects."""
    move, why = next_move(survivor(lease=False))
    assert move == Move.NONE and "grant" in why
    assert next_move(survivor(lease=True))[0] == Move.PROTECT
