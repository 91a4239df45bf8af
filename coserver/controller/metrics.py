"""Prometheus metrics of one controller: what `coserver status` shows, for a monitoring system to keep.

Why a snapshot: a scrape arrives on prometheus-client's HTTP thread, any time. It must never wait
for the event loop, QMP or the witness (a hung QEMU must not hang the scrape, and the scrape must
not slow a tick), so the daemon hands over a frozen Snapshot of its view at each publish (every
tick and every state change) and the collector only reads the latest one. Its age is the tick lag:
a loop that stalls shows as coserver_tick_lag_seconds growing, which is itself worth an alert.

The checkpoint pauses (QEMU STOP to RESUME, observe.ColoEvents.on_pause) and the failovers are
events, not state: they are counted as they happen (observe_pause, failed_over), each once.

Served by prometheus-client's own HTTP server in a daemon thread on the host's management
address (site key metrics_port; ControllerConfig.metrics). Metrics are best effort: a port that
cannot be bound is logged and the controller runs on without them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from threading import Thread
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from coserver import log
from coserver.controller.replbytes import StreamBytes
from coserver.controller.roles import Role
from coserver.controller.statemachine import FtState

_log = log.get("controller")

#: Guest pauses at a checkpoint are tens to hundreds of ms; seconds mean trouble.
PAUSE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0)
#: Why a failover happened: the policy's action (controller.policy.Action) that ran it.
FAILOVER_CAUSES = ("promote", "continue_simplex")
#: States in which the guest is replicated (degraded: one sync link lost, still protected).
IN_COLO = frozenset({FtState.PROTECTED.value, FtState.DEGRADED.value})
LABELS = ("server", "host")


@dataclass(frozen=True)
class Snapshot:
    """One controller's view at one publish: plain values, safe to read from another thread."""

    state: str
    role: str
    epoch: int
    checkpoints: int
    links: Mapping[str, bool] = field(default_factory=dict)
    witness_reachable: bool = False
    lease_left_s: float = 0.0
    wants_run: bool = True            # the operator's wish (server start/stop): a stopped server is no alert
    link_rtt: Mapping[str, float | None] = field(default_factory=dict)   # per sync link: heartbeat round trip
    resync_done: int | None = None    # a running (re-)sync's bytes mirrored so far (None: none runs)
    resync_total: int | None = None
    taken_at: float = field(default_factory=time.monotonic)   # monotonic


class ControllerMetrics:
    """The metrics registry of one controller (one FT server on one host) and its HTTP endpoint."""

    def __init__(self, server: str, host: str, *, tick_s: float = 0.1,
                 clock: Callable[[], float] = time.monotonic, process: bool = True,
                 replication: Callable[[], Mapping[str, StreamBytes] | None] | None = None) -> None:
        """tick_s: the daemon's tick (the lag is the snapshot's age beyond it); process: add
        prometheus-client's process collector (CPU, memory, open files of this controller);
        replication: read at each scrape, the bytes each replication stream moved (replbytes)."""
        self.server, self.host = server, host
        self.tick_s = tick_s
        self.clock = clock
        self.registry = CollectorRegistry(auto_describe=True)
        self._snapshot: Snapshot | None = None
        self._unprotected_since: float | None = None    # monotonic; None while in COLO
        self.last_promotion_s: float | None = None
        self.last_detection_s: float | None = None
        self.replication = replication
        self._pauses = Histogram("coserver_checkpoint_pause_seconds",
                                 "Guest pause at a COLO checkpoint (QEMU STOP to RESUME)", LABELS,
                                 buckets=PAUSE_BUCKETS, registry=self.registry).labels(server, host)
        self._failovers = Counter("coserver_failovers", "Failovers this controller ran, by the action that ran it",
                                  (*LABELS, "cause"), registry=self.registry)
        for cause in FAILOVER_CAUSES:   # present from the start at 0, so increase() sees the first one
            self._failovers.labels(server, host, cause)
        # a state held for less than a scrape interval (simplex for half a second before the re-sync)
        # never shows in the coserver_ft_state gauge; counting entries does not miss it
        self._entered = Counter("coserver_state_changes", "Times this side's FT state changed into each state",
                                (*LABELS, "state"), registry=self.registry)
        for state in FtState:
            self._entered.labels(server, host, state.value)
        self.registry.register(_StatusCollector(self))
        if process:
            ProcessCollector(registry=self.registry)
        self._http: tuple[WSGIServer, Thread] | None = None

    # ---- fed by the daemon (event loop) --------------------------------------------------
    def update(self, snap: Snapshot) -> None:
        """The daemon's latest view; tracks since when the FT server is out of COLO here."""
        if snap.state in IN_COLO:
            self._unprotected_since = None
        elif self._unprotected_since is None:
            self._unprotected_since = snap.taken_at
        self._snapshot = snap

    def entered(self, state: str) -> None:
        """The FT state changed into `state` (the daemon's _to calls this once per change)."""
        self._entered.labels(self.server, self.host, state).inc()

    def observe_pause(self, seconds: float) -> None:
        """One checkpoint pause (observe.ColoEvents.on_pause calls this once per pause)."""
        self._pauses.observe(seconds)

    def failed_over(self, cause: str, promotion_s: float | None = None, detection_s: float | None = None) -> None:
        """A failover ran here (cause: the policy action). detection_s: from the last moment the pair
        was seen well to the decision; promotion_s: from the decision to running alone (the witness's
        promotion wait included)."""
        self._failovers.labels(self.server, self.host, cause).inc()
        if promotion_s is not None:
            self.last_promotion_s = promotion_s
        if detection_s is not None:
            self.last_detection_s = detection_s

    # ---- read by the collector (any thread) -----------------------------------------------
    def current(self) -> tuple[Snapshot | None, float | None]:
        """The latest snapshot and the seconds since the FT server left COLO here (0 while in it)."""
        snap, since = self._snapshot, self._unprotected_since
        if snap is None:
            return None, None
        return snap, 0.0 if since is None else max(0.0, self.clock() - since)

    # ---- the HTTP endpoint ---------------------------------------------------------------
    def serve(self, address: str, port: int) -> bool:
        """Serve /metrics on address:port in a daemon thread (port 0: any free one, for tests).
        False (logged) when the port cannot be bound: the controller runs on without metrics."""
        try:
            self._http = start_http_server(port, address, registry=self.registry)
        except OSError as exc:
            _log.error("controller.metrics.unavailable", host=self.host, address=address, port=port,
                       reason=exc.strerror or str(exc))
            return False
        _log.info("controller.metrics.serving", host=self.host, address=address, port=self.port)
        return True

    @property
    def port(self) -> int | None:
        """The port served on (None: not serving)."""
        return int(self._http[0].server_port) if self._http is not None else None

    async def close(self) -> None:
        """Stop serving (shutdown waits for the server's poll: off the event loop)."""
        http, self._http = self._http, None
        if http is None:
            return
        server, thread = http
        await asyncio.to_thread(server.shutdown)
        server.server_close()
        thread.join(timeout=1.0)


class _StatusCollector(Collector):
    """The gauges of the latest snapshot, computed at each scrape; nothing before the first."""

    def __init__(self, metrics: ControllerMetrics) -> None:
        self.m = metrics

    def describe(self) -> Iterable[Metric]:
        return []   # unchecked: the families depend on the snapshot (links by name)

    def collect(self) -> Iterable[Metric]:
        snap, unprotected = self.m.current()
        if snap is None:
            return
        lv = [self.m.server, self.m.host]

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            g = GaugeMetricFamily(name, doc, labels=LABELS)
            g.add_metric(lv, value)
            return g

        state = GaugeMetricFamily("coserver_ft_state", "The FT server's state here (1: the current one)",
                                  labels=(*LABELS, "state"))
        for s in FtState:
            state.add_metric([*lv, s.value], 1.0 if snap.state == s.value else 0.0)
        yield state
        role = GaugeMetricFamily("coserver_role", "This host's role for the FT server (1: the current one)",
                                 labels=(*LABELS, "role"))
        for r in Role:
            role.add_metric([*lv, r.value], 1.0 if snap.role == r.value else 0.0)
        yield role
        yield gauge("coserver_epoch", "The witness epoch this controller acts in", snap.epoch)
        checkpoints = CounterMetricFamily("coserver_checkpoints", "COLO checkpoints seen here", labels=LABELS)
        checkpoints.add_metric(lv, snap.checkpoints)
        yield checkpoints
        links = GaugeMetricFamily("coserver_sync_link_up", "A sync link's heartbeats are heard (1) or not (0)",
                                  labels=(*LABELS, "link"))
        for name, up in sorted(snap.links.items()):
            links.add_metric([*lv, name], 1.0 if up else 0.0)
        yield links
        rtt = GaugeMetricFamily("coserver_heartbeat_rtt_seconds",
                                "A sync link's heartbeat round trip (absent while the link is down)",
                                labels=(*LABELS, "link"))
        for name, seconds in sorted(snap.link_rtt.items()):
            if seconds is not None:
                rtt.add_metric([*lv, name], seconds)
        yield rtt
        yield gauge("coserver_witness_reachable", "The etcd witness answers this controller (1) or not (0)",
                    1.0 if snap.witness_reachable else 0.0)
        yield gauge("coserver_lease_seconds_left", "Seconds the witness lease surely still lives (0: none held)",
                    snap.lease_left_s)
        yield gauge("coserver_wants_run", "The operator wants the FT server running (1) or stopped (0)",
                    1.0 if snap.wants_run else 0.0)
        yield gauge("coserver_seconds_since_protected",
                    "Seconds since the FT server left COLO here, or since the controller started out of it "
                    "(0 while protected or degraded)", unprotected or 0.0)
        yield gauge("coserver_tick_lag_seconds", "How late the controller's last tick is (its view's age beyond "
                    "one tick)", max(0.0, self.m.clock() - snap.taken_at - self.m.tick_s))
        if snap.resync_total is not None and snap.resync_done is not None:
            yield gauge("coserver_resync_progress_ratio", "A running (re-)sync's share of the disk mirrored (0-1)",
                        snap.resync_done / snap.resync_total if snap.resync_total else 1.0)
            yield gauge("coserver_resync_remaining_bytes", "Bytes a running (re-)sync still has to mirror",
                        max(0, snap.resync_total - snap.resync_done))
        if self.m.last_promotion_s is not None:
            yield gauge("coserver_last_failover_promotion_seconds",
                        "The last failover run here, from its decision to running alone (promotion wait and "
                        "QMP takeover)", self.m.last_promotion_s)
        if self.m.last_detection_s is not None:
            yield gauge("coserver_last_failover_detection_seconds",
                        "The last failover run here, from the last moment the pair was seen well to the "
                        "decision", self.m.last_detection_s)
        streams = self.m.replication() if self.m.replication is not None else None
        if streams is not None:
            sent = CounterMetricFamily("coserver_replication_sent_bytes", "Bytes this host sent on a replication "
                                       "stream (checkpoint: COLO's; disk: NBD's), acknowledged by the peer",
                                       labels=(*LABELS, "stream"))
            received = CounterMetricFamily("coserver_replication_received_bytes", "Bytes this host received on a "
                                           "replication stream", labels=(*LABELS, "stream"))
            for stream, b in sorted(streams.items()):
                sent.add_metric([*lv, stream], b.sent)
                received.add_metric([*lv, stream], b.received)
            yield sent
            yield received
