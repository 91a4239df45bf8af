"""PairClient against a fake site: what it asks the controllers, and when it refuses."""

from __future__ import annotations

from typing import Any

import pytest

from coserver.pair.client import PairClient, PairError


class FakeSite:
    """A protected pair cs1 (primary) / cs2 (secondary) that fails over when the primary relinquishes."""

    def __init__(self, state: str = "protected") -> None:
        self.state, self.primary, self.secondary = state, "cs1", "cs2"
        self.asked: list[tuple[str, dict[str, Any]]] = []

    def ask(self, host: str, request: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        self.asked.append((host, request))
        if request["cmd"] == "relinquish":
            self.state, self.primary, self.secondary = "simplex", self.secondary, None
        return {"ok": True}

    def status(self) -> dict[str, Any]:
        hosts = {h: {"role": "primary" if h == self.primary else "secondary" if h == self.secondary else "none",
                     "state": self.state} for h in ("cs1", "cs2")}
        return {"state": self.state, "primary": self.primary, "secondary": self.secondary, "hosts": hosts}


def test_failover_asks_the_primary_and_waits_for_the_takeover() -> None:
    site = FakeSite()
    out = PairClient(site, ("cs1", "cs2")).failover(None, timeout=2.0)
    assert site.asked == [("cs1", {"cmd": "relinquish", "reason": "coserver failover --to cs2"})]
    assert out["from"] == "cs1" and out["to"] == "cs2" and out["state"] == "simplex"


def test_failover_is_refused_unless_protected() -> None:
    site = FakeSite(state="simplex")
    with pytest.raises(PairError, match="not protected"):
        PairClient(site, ("cs1", "cs2")).failover(None, timeout=1.0)
    assert site.asked == []


def test_failover_to_the_primary_is_refused() -> None:
    with pytest.raises(PairError, match="already runs the guest"):
        PairClient(FakeSite(), ("cs1", "cs2")).failover("cs1", timeout=1.0)


def test_reprotect_needs_a_simplex_pair() -> None:
    with pytest.raises(PairError, match="already protected"):
        PairClient(FakeSite(), ("cs1", "cs2")).reprotect(timeout=1.0)


def test_maintenance_of_a_stopped_server_only_records_it() -> None:
    """Nothing runs: nothing to hand over or wait for (a site-wide `host maintenance` meets such servers)."""
    site = FakeSite(state="stopped")
    site.primary = site.secondary = None
    out = PairClient(site, ("cs1", "cs2")).maintenance("cs2", True, timeout=1.0)
    assert site.asked == [("cs2", {"cmd": "maintenance", "on": True})]
    assert out["ok"] and out["maintenance"] is True and out["state"] == "stopped" and out["primary"] is None
    out = PairClient(site, ("cs1", "cs2")).maintenance("cs2", False, timeout=1.0)
    assert out["maintenance"] is False and site.asked[-1] == ("cs2", {"cmd": "maintenance", "on": False})
