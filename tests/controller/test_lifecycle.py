"""Which host may start an FT server's guest alone, and what the operator's wish does across restarts
(coserver.controller.lifecycle): pure, one case per row."""

from __future__ import annotations

import json
import os
import stat

import pytest

from coserver.controller.errors import ConfigError
from coserver.controller.lifecycle import Desired, StartMove, StartView, after_restart, start_move
from coserver.controller.roles import Role
from coserver.controller.statemachine import FtState


def view(**kw) -> StartView:
    base = dict(host="cs1", preferred=True, run=True, role=Role.NONE, state=FtState.STOPPED, maintenance=False,
                busy=False, witness_reachable=True, owner_alive=False, last_owner=None, peer_heard=True,
                peer_role="none")
    base.update(kw)
    return StartView(**base)


@pytest.mark.parametrize("v, move", [
    (view(), StartMove.START_SIMPLEX),                                  # first start, preferred host
    (view(preferred=False), StartMove.NONE),                            # the other waits for the preferred
    (view(preferred=False, last_owner="cs1", host="cs1"), StartMove.START_SIMPLEX),  # ran it last: its disk
    (view(last_owner="cs2"), StartMove.NONE),                           # the peer's disk is the current one
    (view(run=False), StartMove.NONE),                                  # stopped by the operator
    (view(witness_reachable=False), StartMove.NONE),                    # never alone without a grant
    (view(owner_alive=True, last_owner="cs2"), StartMove.NONE),         # someone holds the lease
    (view(peer_role="simplex"), StartMove.NONE),                        # join it (rejoin) instead
    (view(peer_role="primary"), StartMove.NONE),
    (view(role=Role.SECONDARY), StartMove.NONE),
    (view(state=FtState.FENCED), StartMove.NONE),                       # a fenced side never starts alone
    (view(maintenance=True), StartMove.NONE),
    (view(busy=True), StartMove.NONE),
    (view(peer_heard=False), StartMove.START_SIMPLEX),                  # a lone preferred host, granted
    (view(peer_heard=False, preferred=False, last_owner=None), StartMove.NONE),
])
def test_start_move(v, move):
    got, why = start_move(v)
    assert got == move, why
    assert why


def test_desired_survives_a_restart_and_a_reboot_obeys_enable(tmp_path):
    path = tmp_path / "desired.json"
    asked = Desired().asked(run=True, why="server start")
    asked.save(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    saved = Desired.load(path, default=Desired())
    assert saved == asked and saved.boot
    assert after_restart(saved, saved.boot) == saved                       # controller restart: keep it
    rebooted = after_restart(saved, "another-boot")
    assert not rebooted.run and "not enabled" in rebooted.why              # reboot, not enabled: stays off
    enabled = saved.asked(enabled=True, why="server enable")
    assert after_restart(enabled, "another-boot").run                      # reboot, enabled: starts


def test_a_damaged_desired_file_is_an_error_not_a_guess(tmp_path):
    path = tmp_path / "desired.json"
    assert Desired.load(path, default=Desired(run=True)).run               # none saved: the default
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="desired.json"):
        Desired.load(path, default=Desired())
    path.write_text(json.dumps({"enabled": True}))
    with pytest.raises(ConfigError, match="not a desired-state record"):
        Desired.load(path, default=Desired())
