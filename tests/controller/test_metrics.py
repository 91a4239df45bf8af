"""controller.metrics: what a scrape shows, from a snapshot, over prometheus-client's own HTTP server.

No QEMU and no loop are needed to scrape: the collector only reads the daemon's last snapshot.
"""

from __future__ import annotations

import asyncio
import socket
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from coserver.controller.metrics import ControllerMetrics, Snapshot
from coserver.controller.observe import ColoEvents
from coserver.controller.replbytes import StreamBytes
from coserver.controller.roles import Role
from coserver.controller.statemachine import FtState

from .test_daemon import primary_controller


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """{(sample name, labels): value} of an exposition text."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    key = (name, frozenset({"server": "journal", "host": "cs1", **labels}.items()))
    assert key in found, f"{name}{labels} not scraped; have {sorted(k[0] for k in found)}"
    return found[key]


def scrape(m: ControllerMetrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return samples(generate_latest(m.registry).decode())


def protected_snapshot(clock: Clock, **kw: Any) -> Snapshot:
    fields: dict[str, Any] = dict(state="protected", role="primary", epoch=3, checkpoints=120,
                                  links={"sync1": True, "sync2": False}, witness_reachable=True, lease_left_s=1.5,
                                  taken_at=clock())
    fields.update(kw)
    return Snapshot(**fields)


def test_a_scrape_shows_the_snapshot() -> None:
    clock = Clock()
    m = ControllerMetrics("journal", "cs1", tick_s=0.1, clock=clock)
    assert not any(k[0].startswith("coserver_ft_state") for k in scrape(m))   # nothing before the first publish
    m.update(protected_snapshot(clock))
    clock.t += 0.35
    found = scrape(m)
    assert value(found, "coserver_ft_state", state="protected") == 1
    assert sum(value(found, "coserver_ft_state", state=s.value) for s in FtState) == 1
    assert value(found, "coserver_role", role="primary") == 1
    assert value(found, "coserver_role", role="secondary") == 0
    assert value(found, "coserver_epoch") == 3
    assert value(found, "coserver_checkpoints_total") == 120
    assert value(found, "coserver_sync_link_up", link="sync1") == 1
    assert value(found, "coserver_sync_link_up", link="sync2") == 0
    assert value(found, "coserver_witness_reachable") == 1
    assert value(found, "coserver_lease_seconds_left") == 1.5
    assert value(found, "coserver_seconds_since_protected") == 0
    assert value(found, "coserver_wants_run") == 1
    assert abs(value(found, "coserver_tick_lag_seconds") - 0.25) < 1e-9
    for cause in ("promote", "continue_simplex"):   # at 0 from the start: increase() sees the first
        assert value(found, "coserver_failovers_total", cause=cause) == 0
    assert any(k[0] == "process_cpu_seconds_total" for k in found)   # the default process collector


def test_seconds_since_protected_counts_from_leaving_colo() -> None:
    clock = Clock()
    m = ControllerMetrics("journal", "cs1", clock=clock, process=False)
    m.update(protected_snapshot(clock))
    clock.t += 5
    m.update(protected_snapshot(clock, state="failing_over"))
    clock.t += 2
    m.update(protected_snapshot(clock, state="simplex", role="simplex"))
    clock.t += 1
    assert value(scrape(m), "coserver_seconds_since_protected") == 3
    m.update(protected_snapshot(clock, state="degraded"))   # still replicated: protected
    assert value(scrape(m), "coserver_seconds_since_protected") == 0


def test_failovers_and_pauses_are_counted_once_each() -> None:
    m = ControllerMetrics("journal", "cs1", process=False)
    events = ColoEvents(on_pause=m.observe_pause)
    for t in (10.0, 12.0):
        events.record({"event": "STOP"}, Role.PRIMARY, "cs1", now=t)
        events.record({"event": "RESUME"}, Role.PRIMARY, "cs1", now=t + 0.04)
    events.record({"event": "RESUME"}, Role.PRIMARY, "cs1", now=13.0)   # no STOP before it: no pause
    m.failed_over("promote", 0.042, detection_s=1.2)
    m.update(protected_snapshot(Clock(), state="simplex"))
    found = scrape(m)
    assert value(found, "coserver_checkpoint_pause_seconds_count") == 2
    assert abs(value(found, "coserver_checkpoint_pause_seconds_sum") - 0.08) < 1e-6
    assert value(found, "coserver_checkpoint_pause_seconds_bucket", le="0.05") == 2
    assert value(found, "coserver_checkpoint_pause_seconds_bucket", le="0.025") == 0
    assert value(found, "coserver_failovers_total", cause="promote") == 1
    assert value(found, "coserver_failovers_total", cause="continue_simplex") == 0
    assert value(found, "coserver_last_failover_promotion_seconds") == 0.042
    assert value(found, "coserver_last_failover_detection_seconds") == 1.2


def test_served_over_http_and_stopped(arun) -> None:
    m = ControllerMetrics("journal", "cs1")
    m.update(protected_snapshot(Clock(), taken_at=0.0))
    assert m.serve("127.0.0.1", 0)
    port = m.port
    assert port
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            found = samples(reply.read().decode())
        assert value(found, "coserver_ft_state", state="protected") == 1
    finally:
        arun(m.close())
    assert m.port is None
    with socket.socket() as s, pytest.raises(ConnectionRefusedError):   # nobody listens any more
        s.connect(("127.0.0.1", port))


def test_a_port_in_use_is_logged_not_raised() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        m = ControllerMetrics("journal", "cs1", process=False)
        assert m.serve("127.0.0.1", s.getsockname()[1]) is False
        assert m.port is None


def test_the_daemon_publishes_its_view_and_pauses(tmp_path: Path, arun) -> None:
    controller, _, _ = primary_controller(tmp_path)
    m = controller.metrics

    async def go() -> None:
        controller._publish()
        assert value(scrape(m), "coserver_ft_state", state="protected") == 1
        await controller.tick()     # the dead QEMU: killed, released, stopped
        found = scrape(m)
        assert value(found, "coserver_ft_state", state="stopped") == 1
        assert value(found, "coserver_role", role="none") == 1
        assert value(found, "coserver_epoch") == 1
        assert value(found, "coserver_sync_link_up", link="sync1") == 1
        controller.events.record({"event": "STOP"}, Role.PRIMARY, "cs1", now=1.0)
        controller.events.record({"event": "RESUME"}, Role.PRIMARY, "cs1", now=1.1)
        assert value(scrape(m), "coserver_checkpoint_pause_seconds_count") == 1

    arun(go())


def test_scrape_does_not_need_the_loop(tmp_path: Path) -> None:
    """A scrape from another thread while the loop is busy: the snapshot answers, nothing awaits."""
    controller, _, _ = primary_controller(tmp_path)

    async def busy() -> float:
        controller._publish()
        return value(await asyncio.to_thread(scrape, controller.metrics), "coserver_epoch")

    assert asyncio.run(busy()) == 1


def test_a_state_shorter_than_a_scrape_is_still_counted() -> None:
    """Simplex for half a second between two scrapes: the gauge never shows it, the counter does."""
    m = ControllerMetrics("journal", "cs1", process=False)
    before = scrape(m)
    assert value(before, "coserver_state_changes_total", state="simplex") == 0
    for state in ("failing_over", "simplex", "syncing", "protected"):
        m.entered(state)
    m.update(protected_snapshot(Clock()))
    found = scrape(m)
    assert value(found, "coserver_state_changes_total", state="simplex") == 1
    assert value(found, "coserver_state_changes_total", state="protected") == 1
    assert value(found, "coserver_ft_state", state="simplex") == 0


def test_link_round_trips_resync_progress_and_replication_bytes() -> None:
    """The round trip of each live link (none for a dead one), a running re-sync's progress, and the
    replication streams' bytes, read at the scrape through the callable the daemon gives."""
    clock = Clock()
    reads = []

    def replication():
        reads.append(1)
        return {"checkpoint": StreamBytes(sent=5_000_000, received=300), "disk": StreamBytes(sent=4096, received=0)}

    m = ControllerMetrics("journal", "cs1", clock=clock, process=False, replication=replication)
    m.update(protected_snapshot(clock, state="syncing", link_rtt={"sync1": 0.0012, "sync2": None},
                                resync_done=256 * 2**20, resync_total=1024 * 2**20))
    assert reads == []   # nothing read before a scrape
    found = scrape(m)
    assert reads == [1]
    assert value(found, "coserver_heartbeat_rtt_seconds", link="sync1") == 0.0012
    assert not any(k[0] == "coserver_heartbeat_rtt_seconds" and ("link", "sync2") in k[1] for k in found)
    assert value(found, "coserver_resync_progress_ratio") == 0.25
    assert value(found, "coserver_resync_remaining_bytes") == 768 * 2**20
    assert value(found, "coserver_replication_sent_bytes_total", stream="checkpoint") == 5_000_000
    assert value(found, "coserver_replication_received_bytes_total", stream="disk") == 0
    m.update(protected_snapshot(clock))   # the sync is over: no progress series
    assert not any(k[0].startswith("coserver_resync") for k in scrape(m))
