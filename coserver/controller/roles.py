"""The words the controllers share: a side's role and its QEMU's health.

Heartbeats carry them on the wire (as their string values), the policy reads
them, the journal stores them. They live here, apart from all three, so none
of those modules has to import another just for a name.
"""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    """What the local guest side is doing for one FT server."""

    PRIMARY = "primary"  # runs the guest, replicates to the secondary (COLO)
    SECONDARY = "secondary"  # runs the lock-step replica, ready to take over
    SIMPLEX = "simplex"  # runs the guest alone: no replica (after a failover)
    NONE = "none"  # runs nothing for this FT server (stopped, fenced)


class QemuHealth(StrEnum):
    """The local QEMU as its controller sees it.

    HUNG means QMP missed a deadline: QEMU's main loop is blocked, the process
    still exists. DEAD means the process is gone. NONE means no QEMU should be
    running (role NONE).
    """

    ALIVE = "alive"
    HUNG = "hung"
    DEAD = "dead"
    NONE = "none"
