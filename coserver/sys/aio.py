"""Bounded async waits: a deadline that holds even when cancellation is slow to unwind.

The controller's job is to notice a hung QEMU or an unreachable witness and act;
an await that can outlive its deadline (asyncio.wait_for waits for the cancelled
awaitable to unwind, however long that takes) would hang the controller with it.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable
from typing import Any, TypeVar

T = TypeVar("T")

#: How long a cancelled call may take to unwind before we stop waiting for it.
#: Keeps "deadline + a little" a hard bound even if the library misbehaves.
UNWIND_GRACE = 0.25


async def bounded(aw: Awaitable[T], timeout: float) -> T:
    """Await `aw` for at most `timeout` s, else raise TimeoutError.

    Unlike asyncio.wait_for/asyncio.timeout, which after cancelling wait for
    the awaitable to unwind however long that takes, this gives it only
    UNWIND_GRACE s: the bound holds even if cancellation cleanup blocks.
    """
    task = asyncio.ensure_future(aw)
    try:
        done, _ = await asyncio.wait({task}, timeout=max(0.0, timeout))
    except BaseException:
        task.cancel()
        raise
    if not done:
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=UNWIND_GRACE)
    if done and not task.cancelled() and task.exception() is None:
        return task.result()  # finished, possibly just after the deadline
    if not done:
        task.add_done_callback(forget)  # abandoned: don't warn "never retrieved"
        raise TimeoutError
    if task.cancelled():
        raise TimeoutError
    exc = task.exception()
    assert exc is not None  # done, not cancelled, and no result was returned above
    raise exc


def forget(task: asyncio.Future[Any]) -> None:
    """Abandon a task: retrieve its outcome when it ends, so asyncio never warns "never retrieved"."""
    if not task.cancelled():
        task.exception()


#: The time grid periodic loops wake on (seconds, on the event loop's clock). Each wake-up of a
#: process costs tens of microseconds of CPU however little it then does (more on a VM); loops whose
#: periods are multiples of it wake at the same instants (the controller's 100 ms tick, its 100 ms
#: heartbeats, its 250 ms QMP poll, its 500 ms witness poll) and share one wake-up there.
GRID_S = 0.05


def next_on_grid(now: float, period: float) -> float:
    """The first multiple of `period` after `now`, counted on GRID_S (a period that is no multiple
    of GRID_S: on multiples of itself). Never more than `period` after `now`: a loop that sleeps
    until it runs at a fixed rate, never slower than one that sleeps `period` after each round."""
    steps = round(period / GRID_S)
    unit = GRID_S
    if steps < 1 or abs(steps * GRID_S - period) > 1e-9:
        unit, steps = period, 1
    # integers, then one multiplication: two loops on the same grid point get the same float
    k = (math.floor(now / unit) // steps + 1) * steps
    return k * unit


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class Wake:
    """A flag that ends a sleep_to_grid early: set(), is_set(), clear(), as asyncio.Event has, but
    a sleep waits on it without a task of its own (with an Event, sleep_to_grid made one per sleep
    and cancelled it after: two more rounds of the event loop at every tick)."""

    def __init__(self) -> None:
        self._set = False
        self._sleepers: set[asyncio.Future[None]] = set()

    def set(self) -> None:
        self._set = True
        for fut in self._sleepers:
            _wake(fut)

    def is_set(self) -> bool:
        return self._set

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> None:
        """Until set (at once if it is), as asyncio.Event.wait."""
        if self._set:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sleepers.add(fut)
        try:
            await fut
        finally:
            self._sleepers.discard(fut)


async def sleep_to_grid(period: float, *, until: asyncio.Event | Wake | None = None) -> None:
    """Sleep until next_on_grid(now, period) on the running loop's clock (monotonic: a suspend
    only lengthens it, as with asyncio.sleep), or until `until` is set (not cleared here)."""
    if until is not None and until.is_set():
        return
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[None] = loop.create_future()
    handle = loop.call_at(next_on_grid(loop.time(), period), _wake, fut)
    waiter = None
    if isinstance(until, Wake):
        until._sleepers.add(fut)
    elif until is not None:
        waiter = asyncio.ensure_future(until.wait())
        waiter.add_done_callback(lambda _task: _wake(fut))
    try:
        await fut
    finally:
        handle.cancel()
        if isinstance(until, Wake):
            until._sleepers.discard(fut)
        if waiter is not None:
            waiter.cancel()
