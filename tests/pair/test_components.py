"""pair.components: the derivation table, from two controllers' status entries to each part's health."""

from __future__ import annotations

import copy
from typing import Any

from coserver.pair.components import Health, components, first_problem
from coserver.pair.summary import summarize


def entry(role: str, state: str = "protected", **kw: Any) -> dict[str, Any]:
    e: dict[str, Any] = {"role": role, "state": state, "qemu_health": "alive", "links": {"sync1": True, "sync2": True},
                         "witness": {"reachable": True}, "alerts": [], "desired": {"run": True},
                         "reprotect": {"maintenance": False, "alert": None}, "io_errors": 0, "quorum_bad": 0,
                         "history": [{"reason": "COLO running"}]}
    e.update(kw)
    return e


def pair(cs1: dict[str, Any], cs2: dict[str, Any]) -> dict[str, Any]:
    hosts = {"cs1": cs1, "cs2": cs2}
    return {**summarize(hosts), "ftserver": "journal", "hosts": hosts}


def health(summary: dict[str, Any]) -> dict[tuple[str, str], str]:
    return {(c.kind, c.name): c.health.value for c in components(summary)}


def protected() -> dict[str, Any]:
    return pair(entry("primary"), entry("secondary"))


def test_a_protected_pair_is_all_good() -> None:
    parts = components(protected())
    assert [(c.kind, c.name) for c in parts] == [
        ("coserver", "cs1"), ("coserver", "cs2"), ("link", "sync1"), ("link", "sync2"), ("witness", "witness"),
        ("ftserver", "journal"), ("copy", "journal@cs1"), ("disk", "journal@cs1"), ("copy", "journal@cs2"),
        ("disk", "journal@cs2")]
    assert all(c.health == Health.GOOD for c in parts), [c.line() for c in parts]
    assert first_problem(parts) is None
    assert parts[5].reason == "protected: cs1 primary, cs2 secondary"


def test_one_link_cut_fails_that_link_and_degrades_the_server() -> None:
    links = {"sync1": False, "sync2": True}
    h = health(pair(entry("primary", "degraded", links=links), entry("secondary", "degraded", links=links)))
    assert h[("link", "sync1")] == "failed"
    assert h[("link", "sync2")] == "good"
    assert h[("ftserver", "journal")] == "degraded"
    assert h[("coserver", "cs1")] == h[("coserver", "cs2")] == "good"


def test_a_link_heard_at_one_end_only_is_degraded() -> None:
    h = health(pair(entry("primary", links={"sync1": False, "sync2": True}), entry("secondary")))
    assert h[("link", "sync1")] == "degraded"
    assert h[("ftserver", "journal")] == "degraded"


def test_an_unreachable_controller_makes_its_coserver_offline() -> None:
    s = pair(entry("simplex", "simplex", links={"sync1": False, "sync2": False}),
             {"role": None, "error": "journal on cs2: connection refused"})
    parts = components(s)
    h = {(c.kind, c.name): c.health.value for c in parts}
    assert h[("coserver", "cs2")] == "offline"
    assert h[("copy", "journal@cs2")] == h[("disk", "journal@cs2")] == "offline"
    assert h[("link", "sync1")] == h[("link", "sync2")] == "offline"   # not judged: the other end is silent
    assert h[("ftserver", "journal")] == "degraded"                      # simplex on cs1
    assert h[("copy", "journal@cs1")] == "good" and h[("coserver", "cs1")] == "good"
    problem = first_problem(parts)
    assert problem is not None and problem.line() == (
        "coserver cs2: OFFLINE: its controller does not answer: journal on cs2: connection refused")


def test_no_controller_answers() -> None:
    s = pair({"role": None, "error": "a"}, {"role": None, "error": "b"})
    h = health(s)
    assert set(h.values()) == {"offline"}


def test_witness_unreachable_from_one_or_both() -> None:
    one = health(pair(entry("primary", witness={"reachable": False}), entry("secondary")))
    assert one[("witness", "witness")] == "degraded" and one[("ftserver", "journal")] == "degraded"
    both = health(pair(entry("primary", witness={"reachable": False}), entry("secondary", witness={})))
    assert both[("witness", "witness")] == "failed"


def test_after_a_failover_the_dead_side_has_failed() -> None:
    s = pair(entry("none", "stopped", qemu_health="none", reprotect={"alert": "cannot protect: cs1 QEMU died"}),
             entry("simplex", "simplex"))
    h = health(s)
    assert h[("copy", "journal@cs1")] == "failed"
    assert h[("disk", "journal@cs1")] == "offline"
    assert h[("ftserver", "journal")] == "degraded"
    assert h[("copy", "journal@cs2")] == "good"
    copy1 = next(c for c in components(s) if c.name == "journal@cs1" and c.kind == "copy")
    assert copy1.reason == "no copy runs here: cannot protect: cs1 QEMU died"


def test_qemu_hung_io_errors_fenced_and_syncing() -> None:
    assert health(pair(entry("primary", qemu_health="hung"), entry("secondary")))[("copy", "journal@cs1")] == "failed"
    assert health(pair(entry("primary", io_errors=2), entry("secondary")))[("disk", "journal@cs1")] == "failed"
    assert health(pair(entry("primary", quorum_bad=1), entry("secondary")))[("disk", "journal@cs1")] == "degraded"
    fenced = health(pair(entry("none", "fenced", qemu_health="none"), entry("simplex", "simplex")))
    assert fenced[("copy", "journal@cs1")] == "failed"
    sync = health(pair(entry("primary", "syncing"), entry("secondary", "syncing", sync={"percent": 40.0})))
    assert sync[("copy", "journal@cs2")] == "degraded" and sync[("disk", "journal@cs2")] == "degraded"
    assert sync[("ftserver", "journal")] == "degraded"


def test_a_server_stopped_on_purpose_is_good_and_a_crashed_one_failed() -> None:
    stopped = entry("none", "stopped", qemu_health="none", desired={"run": False})
    h = health(pair(stopped, copy.deepcopy(stopped)))
    assert set(h.values()) == {"good"}, h
    crashed = entry("none", "stopped", qemu_health="none")
    h = health(pair(crashed, copy.deepcopy(crashed)))
    assert h[("ftserver", "journal")] == "failed"
    assert h[("copy", "journal@cs1")] == "failed"


def test_maintenance_is_offline_and_an_own_alert_degrades_the_coserver() -> None:
    h = health(pair(entry("simplex", "simplex"),
                    entry("none", "stopped", qemu_health="none", reprotect={"maintenance": True},
                          alerts=["journal cannot be saved: disk full"])))
    assert h[("copy", "journal@cs2")] == "offline"
    assert h[("coserver", "cs2")] == "degraded"


def test_an_empty_lab_has_no_components() -> None:
    assert components({"state": "stopped", "hosts": {}}) == []
