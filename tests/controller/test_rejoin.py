"""The re-protection moves (coserver.controller.rejoin): who rejoins, who protects, when not."""

from __future__ import annotations

import math

import pytest

from coserver.controller.rejoin import Move, RejoinView, ReprotectPolicy, next_move
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
