"""Clocks for bounds that must hold across a suspend of the host.

CLOCK_MONOTONIC (time.monotonic, asyncio's timers) stops while the host is
suspended; CLOCK_BOOTTIME does not. A lease that expired at the witness while
this host slept must look expired the moment it wakes, and a heartbeat heard
just before the suspend must look as old as it really is: both are measured
on boottime(). Sleeping on the loop's monotonic clock is still fine where the
sleep only has to be *at least* so long (a suspend lengthens it).
"""

from __future__ import annotations

import time


def boottime() -> float:
    """Seconds since boot, counting time spent suspended (CLOCK_BOOTTIME)."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)
