"""What the controller watches, between ticks: QMP responsiveness and what QEMU's events said.

The health loop and the event loop write these; each tick reads them into an
Observation for the pure policy.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from coserver import log
from coserver.colo.argv import REPLICATION_NBD_NODE, REPLICATION_NODE_PRIMARY
from coserver.controller.roles import Role
from coserver.qmp.session import event_data

_log = log.get("controller")

#: The QMP events the controller listens to.
WATCHED_EVENTS = ("COLO_EXIT", "MIGRATION_PASS", "RESUME", "STOP", "QUORUM_REPORT_BAD", "BLOCK_IO_ERROR",
                  "MIGRATION", "SHUTDOWN", "RESET")


#: The primary's quorum children that are the replica (its replication driver and the NBD client under it).
REPLICA_NODES = (REPLICATION_NODE_PRIMARY, REPLICATION_NBD_NODE)


#: The longest a protected pair goes without a checkpoint, whatever its period: with a longer period
#: the primary's controller asks QEMU for one when none came for this long (Controller.nudge_checkpoint).
#: Checkpoints are each side's proof that the other's QEMU lives, so this bounds how long a lost host
#: or a stalled replication stream can go unnoticed: colo_window() <= 1.5 * 4 + 0.5 = 6.5 s.
MAX_CHECKPOINT_GAP_S = 4.0


def checkpoint_every(checkpoint_ms: int) -> float:
    """Seconds between checkpoints at the most: the period, or MAX_CHECKPOINT_GAP_S with a longer one."""
    return min(checkpoint_ms / 1000, MAX_CHECKPOINT_GAP_S)


def colo_window(checkpoint_ms: int) -> float:
    """How long after a checkpoint the next one is due at the latest: a checkpoint late by half a
    period plus 0.5 s means a stalled stream (COLO checkpoints at least once per period, and at
    least every MAX_CHECKPOINT_GAP_S with a longer period)."""
    return 1.5 * checkpoint_every(checkpoint_ms) + 0.5


#: SHUTDOWN reasons (guest: false) after which QEMU exits whatever -no-shutdown says (QEMU's
#: qemu_system_killed, the quit command): the host ends it, not the guest.
HOST_ENDINGS = ("host-signal", "host-qmp-quit", "host-error", "host-ui")

@dataclass
class QmpHealth:
    """QMP responsiveness since this controller started (the health loop's findings)."""

    polls: int = 0
    missed: int = 0
    max_latency_ms: float = 0.0
    last_latency_ms: float | None = None
    hung_since: float | None = None  # monotonic time of the first missed deadline in a row
    #: since when QMP misses its deadlines while the COLO stream keeps moving: a checkpoint holding
    #: QEMU's main loop (busy, not hung; daemon._classify_miss)
    busy_since: float | None = None
    busy_max_s: float = 0.0          # the longest such stretch since the controller started
    #: the last missed probe found QEMU using no CPU and its COLO stream still: stopped or deadlocked,
    #: not slow (policy: killed at once where a peer can take over)
    stuck: bool = False


@dataclass
class ColoEvents:
    """What QEMU's events told us."""

    checkpoints: int = 0
    last_checkpoint: float | None = None     # monotonic
    pauses: deque[float] = field(default_factory=lambda: deque(maxlen=256))
    colo_exit: dict[str, Any] | None = None
    quorum_bad: int = 0
    io_errors: int = 0
    #: since the pair last entered COLO (forget_colo): a failed request on our own disk / on the
    #: replica (the primary's replication child). Latched: one failed write makes a copy stale.
    local_disk_error: dict[str, Any] | None = None
    replica_disk_error: dict[str, Any] | None = None
    #: the guest powered itself off (SHUTDOWN, guest: true, reason guest-shutdown) in the QEMU we watch
    guest_shutdown: dict[str, Any] | None = None
    #: the QEMU we watch is quitting on the host's word (SHUTDOWN, guest: false: a SIGTERM, e.g.
    #: `virsh destroy`, a QMP quit, a host error): it is gone in a moment, and what it reports on its
    #: way out (a COLO_EXIT "error" on a primary) is not the peer's fault. Cleared for a new QEMU.
    qemu_ending: dict[str, Any] | None = None
    guest_resets: int = 0   # the guest rebooted itself (RESET, guest: true)
    _stopped_at: float | None = None
    #: called once with each new pause, in seconds (the metrics' histogram: controller.metrics)
    on_pause: Callable[[float], None] | None = field(default=None, repr=False, compare=False)

    @property
    def stopped_since(self) -> float | None:
        """Monotonic time of the STOP not yet followed by a RESUME (None while the guest runs)."""
        return self._stopped_at

    def record(self, event: Mapping[str, object], role: Role, host: str, now: float | None = None) -> None:
        """Take one QMP event into account (role: this side's role when it arrived)."""
        name, now = event.get("event"), time.monotonic() if now is None else now
        data = event_data(event)
        if name == "MIGRATION_PASS" and role == Role.PRIMARY:
            self.checkpoints += 1
            self.last_checkpoint = now
        elif name == "STOP":
            self._stopped_at = now
        elif name == "RESUME":
            if self._stopped_at is not None:
                pause = now - self._stopped_at
                self.pauses.append(pause)
                self._stopped_at = None
                if self.on_pause is not None:
                    self.on_pause(pause)
            if role == Role.SECONDARY:  # each checkpoint loaded resumes the secondary
                self.checkpoints += 1
                self.last_checkpoint = now
        elif name == "COLO_EXIT":
            self.colo_exit = {"mode": data.get("mode"), "reason": data.get("reason"), "at": time.time()}
            _log.warning("controller.colo.exit", host=host, **data)
        elif name == "QUORUM_REPORT_BAD":
            self.quorum_bad += 1
            _log.warning("controller.quorum.bad", host=host, **data)
            seen = {"node": data.get("node-name"), "type": data.get("type"), "error": data.get("error"),
                    "at": time.time()}
            if data.get("node-name") in REPLICA_NODES:
                self.replica_disk_error = self.replica_disk_error or seen
            else:
                self.local_disk_error = self.local_disk_error or seen
        elif name == "SHUTDOWN":
            _log.warning("controller.guest.shutdown", host=host, **data)
            if data.get("guest") and data.get("reason") == "guest-shutdown":
                self.guest_shutdown = {"reason": data.get("reason"), "at": time.time()}
            elif not data.get("guest") and data.get("reason") in HOST_ENDINGS:
                self.qemu_ending = {"reason": data.get("reason"), "at": time.time()}
        elif name == "RESET":
            if data.get("guest"):
                self.guest_resets += 1
                _log.info("controller.guest.reset", host=host, **data)
        elif name == "BLOCK_IO_ERROR":
            self.io_errors += 1
            _log.warning("controller.block.error", host=host, **data)
            self.local_disk_error = self.local_disk_error or {
                "node": data.get("node-name") or data.get("device"), "type": data.get("operation"),
                "error": data.get("reason"), "at": time.time()}

    def new_qemu(self) -> None:
        """A new QEMU is watched: what the last one said about its own end is history."""
        self.guest_shutdown = self.qemu_ending = None
        self.forget_colo()
        self.last_checkpoint = None

    def forget_colo(self) -> None:
        """A new COLO (fresh replica, fresh replication child), a failover out of it or a new QEMU: how
        the last one ended (its COLO_EXIT) and the disk errors seen in it are history."""
        self.colo_exit = None
        self.local_disk_error = self.replica_disk_error = None

    def colo_alive(self, checkpoint_ms: int, now: float | None = None) -> bool:
        """Checkpoints flowed recently: the peer's QEMU is alive whatever its controller says."""
        now = time.monotonic() if now is None else now
        return self.last_checkpoint is not None and now - self.last_checkpoint < colo_window(checkpoint_ms)

    def pause_median_ms(self) -> float | None:
        """The median guest pause at a checkpoint (STOP to RESUME), in ms."""
        if not self.pauses:
            return None
        return round(1000 * sorted(self.pauses)[len(self.pauses) // 2], 1)
