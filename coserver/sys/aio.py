"""Bounded async waits: a deadline that holds even when cancellation is slow to unwind.

The controller's job is to notice a hung QEMU or an unreachable witness and act;
an await that can outlive its deadline (asyncio.wait_for waits for the cancelled
awaitable to unwind, however long that takes) would hang the controller with it.
"""

from __future__ import annotations

import asyncio
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
