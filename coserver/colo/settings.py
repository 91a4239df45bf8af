"""Tunables of a COLO pair and the ports it uses on the sync link.

Defaults are the ones measured to work on TCG lab machines (see
shared/design/COLO-RECIPE.md): a 2 s checkpoint period keeps the guest pause
(~90 ms under TCG) under 5 % of wall time; colo-compare keeps QEMU's own
3 s timeout / 1 s scan cycle, which only govern packets the secondary never
matched.
"""

from __future__ import annotations

from dataclasses import dataclass

from coserver.errors import CoserverError


class ColoSettingsError(CoserverError):
    """A COLO tunable out of range."""


@dataclass(frozen=True)
class SyncPorts:
    """TCP ports on the replication (sync) link; the primary listens on mirror/compare,
    the secondary on migration/nbd."""

    mirror: int = 9003
    compare: int = 9004
    migration: int = 9998
    nbd: int = 9999

    def __post_init__(self) -> None:
        ports = [self.mirror, self.compare, self.migration, self.nbd]
        for p in ports:
            if not 1 <= p <= 65535:
                raise ColoSettingsError(f"sync port {p}: must be 1..65535")
        if len(set(ports)) != len(ports):
            raise ColoSettingsError(f"sync ports must differ, got {ports}")


PROTECT_ORDERS = ("live", "stopped")


@dataclass(frozen=True)
class ColoSettings:
    """Checkpointing and comparison tunables, plus QMP deadlines for the COLO steps."""

    checkpoint_ms: int = 2000
    compare_timeout_ms: int = 3000
    expired_scan_cycle_ms: int = 1000
    max_queue_size: int = 1024
    qmp_deadline_s: float = 5.0
    migrate_timeout_s: float = 120.0
    sync_timeout_s: float = 600.0
    #: Cap on the initial/re-sync copy rate (MiB/s, 0 = as fast as it goes), so a resync
    #: does not starve the running guest's own disk and network traffic.
    sync_speed_mib_s: int = 0
    #: How the pair enters COLO: "live" copies the RAM with the guest running and stops it only
    #: for the switchover (tens of ms, whatever the RAM size); "stopped" is QEMU's documented
    #: "resume replication" order, the guest stopped for the whole RAM copy (kept to compare).
    protect_order: str = "live"
    #: Live order: the longest final pause the migration may plan for (QEMU's downtime-limit).
    switchover_downtime_ms: int = 50
    #: Live order: the RAM copy's rate cap in MiB/s (QEMU's max-bandwidth; 0: the link's speed).
    migrate_speed_mib_s: int = 0

    def __post_init__(self) -> None:
        if not 100 <= self.checkpoint_ms <= 600_000:
            raise ColoSettingsError(f"checkpoint period {self.checkpoint_ms} ms: must be 100..600000")
        if self.compare_timeout_ms < 10 or self.expired_scan_cycle_ms < 10:
            raise ColoSettingsError("colo-compare timeout and scan cycle must be at least 10 ms")
        if self.protect_order not in PROTECT_ORDERS:
            raise ColoSettingsError(f"protect order {self.protect_order!r}: must be one of {', '.join(PROTECT_ORDERS)}")
        if not 10 <= self.switchover_downtime_ms <= 10_000:
            raise ColoSettingsError(f"switchover downtime {self.switchover_downtime_ms} ms: must be 10..10000")
        if self.migrate_speed_mib_s < 0:
            raise ColoSettingsError("migrate speed must not be negative")
        if self.max_queue_size < 16:
            raise ColoSettingsError(f"colo-compare max queue size {self.max_queue_size}: must be at least 16")
