"""The peer check: a different pair key, site file or QEMU on the peer refuses protection, naming both values.

Real heartbeats on loopback UDP sockets (two endpoints, as two controllers), no mocks of our code."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest

from coserver.controller import peercheck
from coserver.controller.config import ControllerConfig
from coserver.controller.daemon import HostController
from coserver.controller.heartbeat import Heartbeats, LinkSpec
from coserver.controller.journal import Journal, JournalEntry
from coserver.controller.rejoin import Move, RejoinView, ReprotectPolicy, next_move
from coserver.controller.roles import Role
from coserver.controller.siteconfig import controller_config_for
from coserver.controller.statemachine import FtState
from coserver.site import load_site

from .test_daemon import FakeWitness, config
from .test_heartbeat import KEY, OTHER_KEY, FakeClock, Forger, link_pair, until
from .test_siteconfig import EXAMPLE_SITE, EXAMPLE_SPEC

KEY_FILE = "/etc/coserver/pair.key"


@pytest.fixture
def links() -> dict[str, tuple[LinkSpec, LinkSpec]]:
    """Two links with their own loopback addresses (each side's view of each link)."""
    return {"sync1": link_pair("sync1", "127.0.0.1", "127.0.0.2"),
            "sync2": link_pair("sync2", "127.0.0.3", "127.0.0.4")}


def endpoints(links, clock, *, key_a=KEY, key_b=KEY, a: dict | None = None, b: dict | None = None):
    """cs1 (side A) and cs2 (side B) of pair ft1 on the two loopback links."""
    hb_a = Heartbeats(pair="ft1", node="cs1", key=key_a, links=[links["sync1"][0], links["sync2"][0]],
                      clock=clock, **(a or {}))
    hb_b = Heartbeats(pair="ft1", node="cs2", key=key_b, links=[links["sync1"][1], links["sync2"][1]],
                      clock=clock, **(b or {}))
    return hb_a, hb_b


def test_a_different_key_is_reported_as_such_not_as_a_lost_peer(arun, links):
    clock = FakeClock()

    async def main():
        a, b = endpoints(links, clock, key_b=OTHER_KEY)
        await a.open()
        await b.open()
        try:
            a.send_once()
            b.send_once()
            await until(lambda: all(b.stats()[n].get("bad_mac") for n in ("sync1", "sync2"))
                        and all(a.stats()[n].get("bad_mac") for n in ("sync1", "sync2")))
            assert not a.peer_alive() and not b.peer_alive() and b.peer_state() is None
            assert b.auth_failing() == ["sync1", "sync2"] and a.auth_failing() == ["sync1", "sync2"]
            why = peercheck.refusal(b, host="cs2", peer="cs1", key_file=KEY_FILE)
            assert why == ("the peer's heartbeats fail authentication on all links: the pair key differs between "
                           "the hosts (copy /etc/coserver/pair.key from one host to the other, mode 0600, then "
                           "restart that host's controllers)")
            b.check()   # logs the condition once; events stay as they were (no PEER_UP from bad datagrams)
            assert b.events.empty()
            clock.t += b.timeout + 0.01   # nothing more arrives: plain silence again, no stale diagnosis
            assert b.auth_failing() == [] and peercheck.refusal(b, host="cs2", peer="cs1", key_file=KEY_FILE) is None
        finally:
            await a.close()
            await b.close()

    arun(main())


def test_bad_macs_from_elsewhere_or_beside_a_working_key_are_no_key_alert(arun, links):
    clock = FakeClock()

    async def main():
        a, b = endpoints(links, clock)
        await b.open()
        forger = Forger([links["sync1"][1], links["sync2"][1]])
        try:
            forger.send("sync1", key=OTHER_KEY)        # not from the peer's address: a stray sender
            forger.send("sync2", key=OTHER_KEY)
            await until(lambda: b.stats()["sync2"].get("bad_mac") == 1)
            assert b.auth_failing() == []
            await a.open()
            a.send_once()
            await until(b.peer_alive)
            assert b.auth_failing() == []              # heard: the key agrees, whatever else arrives
        finally:
            forger.close()
            await a.close()
            await b.close()

    arun(main())


def test_the_key_line_names_the_links_when_only_some_carry_bad_macs():
    why = peercheck.key_refusal(["sync2"], ["sync1", "sync2"], KEY_FILE)
    assert why is not None and why.startswith(
        "the peer's heartbeats fail authentication on sync2 (nothing from it on sync1): the pair key differs")
    assert peercheck.key_refusal([], ["sync1", "sync2"], KEY_FILE) is None


def _heard_identities(arun, links, a: dict, b: dict) -> str | None:
    """cs2's refusal once both sides have heard each other with these identities."""
    clock = FakeClock()

    async def main() -> str | None:
        hb_a, hb_b = endpoints(links, clock, a=a, b=b)
        await hb_a.open()
        await hb_b.open()
        try:
            hb_a.send_once()
            hb_b.send_once()
            await until(lambda: hb_a.peer_alive() and hb_b.peer_alive())
            peer = hb_b.peer_state()
            assert peer is not None and (peer.site, peer.qemu_version) == (a["site"], a["qemu_version"])
            mine = peercheck.refusal(hb_a, host="cs1", peer="cs2", key_file=KEY_FILE)
            theirs = peercheck.refusal(hb_b, host="cs2", peer="cs1", key_file=KEY_FILE)
            assert (mine is None) == (theirs is None)   # both sides refuse, or neither
            return theirs
        finally:
            await hb_a.close()
            await hb_b.close()

    return arun(main())


def test_different_site_files_refuse_protection_naming_both_digests(arun, links):
    why = _heard_identities(arun, links, a={"site": "3fa2aa00bb11cc22", "qemu_version": "10.2.2"},
                            b={"site": "91bc0011aabbccdd", "qemu_version": "10.2.2"})
    assert why == ("cannot protect: site file differs between cs2 (site 91bc0011aabbccdd) and cs1 "
                   "(site 3fa2aa00bb11cc22): copy one site.toml to both hosts")


def test_different_qemu_versions_refuse_protection_naming_both(arun, links):
    why = _heard_identities(arun, links, a={"site": "3fa2aa00bb11cc22", "qemu_version": "10.0.0"},
                            b={"site": "3fa2aa00bb11cc22", "qemu_version": "10.2.2"})
    assert why == "cannot protect: QEMU differs: cs2 10.2.2, cs1 10.0.0: run the same QEMU on both hosts"


def test_both_differences_are_named_together():
    why = peercheck.identity_refusal("cs1", "", "10.2.2", "cs2", "91bc0011aabbccdd", "9.2.0")
    assert why == ("cannot protect: site file differs between cs1 (no site file) and cs2 (site 91bc0011aabbccdd): "
                   "copy one site.toml to both hosts; QEMU differs: cs1 10.2.2, cs2 9.2.0: "
                   "run the same QEMU on both hosts")


def test_equal_identities_refuse_nothing(arun, links):
    same = {"site": "3fa2aa00bb11cc22", "qemu_version": "10.2.2"}
    assert _heard_identities(arun, links, a=dict(same), b=dict(same)) is None


def _view(role: Role, **kw) -> RejoinView:
    lost = role == Role.NONE
    base = dict(role=role, state=FtState.STOPPED if lost else FtState.SIMPLEX, epoch=2,
                policy=ReprotectPolicy.AUTO, maintenance=False, requested=False, since_last_attempt_s=math.inf,
                peer_heard=True, peer_role="simplex" if lost else "secondary",
                peer_state="simplex" if lost else "syncing", peer_epoch=2)
    base.update(kw)
    return RejoinView(**base)


def test_a_refusal_stops_both_rejoin_moves_with_its_reason():
    why = "cannot protect: QEMU differs: cs1 10.2.2, cs2 10.0.0: run the same QEMU on both hosts"
    assert next_move(_view(Role.NONE))[0] == Move.START_SECONDARY
    assert next_move(_view(Role.SIMPLEX))[0] == Move.PROTECT
    assert next_move(_view(Role.NONE, refusal=why)) == (Move.NONE, why)
    assert next_move(_view(Role.NONE, refusal=why, requested=True)) == (Move.NONE, why)  # not even on request
    assert next_move(_view(Role.SIMPLEX, refusal=why)) == (Move.NONE, why)
    key = peercheck.key_refusal(["sync1"], ["sync1"], KEY_FILE)
    assert next_move(_view(Role.NONE, refusal=key, peer_heard=False)) == (Move.NONE, key)


def test_the_controller_status_alert_says_the_key_differs(tmp_path: Path, links, arun):
    """The field `coserver lab status` shows as ALERT (hosts[h]["reprotect"]["alert"]) and the rejoin note."""
    clock = FakeClock()

    async def main() -> dict:
        cs2, cs1 = endpoints(links, clock, key_b=OTHER_KEY)   # cs1 (side B) holds another key
        cfg = config(tmp_path, key_file=KEY_FILE)
        journal = Journal(Path(cfg.journal_file))
        journal.save(JournalEntry(ftserver=cfg.ftserver, node=cfg.host, role=Role.NONE, epoch=1,
                                  state=FtState.STOPPED))
        controller = HostController(cfg, journal=journal, witness=FakeWitness(held_by=None),  # type: ignore[arg-type]
                                    heartbeats=cs1)
        await cs1.open()
        await cs2.open()
        try:
            cs2.send_once()
            await until(lambda: cs1.auth_failing() == ["sync1", "sync2"])
            await controller._rejoin_step()
            assert controller.rejoin_note.startswith("the peer's heartbeats fail authentication on all links")
            assert controller.busy is None          # nothing started
            return await controller.status()
        finally:
            await cs1.close()
            await cs2.close()

    status = arun(main())
    assert status["reprotect"]["alert"].startswith(
        "the peer's heartbeats fail authentication on all links: the pair key differs between the hosts "
        "(copy /etc/coserver/pair.key")
    assert status["peer"] is None
    assert status["identity"] == {"site": "", "qemu_version": "", "auth_failing": ["sync1", "sync2"]}


def test_site_configs_carry_the_site_files_digest_and_old_configs_load(tmp_path: Path):
    site = load_site(EXAMPLE_SITE)
    c1 = controller_config_for(site, EXAMPLE_SPEC, "cs1")
    c2 = controller_config_for(site, EXAMPLE_SPEC, "cs2")
    assert c1.site_digest == c2.site_digest == hashlib.sha256(EXAMPLE_SITE.read_bytes()).hexdigest()[:16]
    old = json.loads(json.dumps(vars(config(tmp_path))))
    old.pop("site_digest")
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old))
    assert ControllerConfig.load(path).site_digest == ""
