"""Async QMP sessions in which every call has a deadline.

Why not use qemu.qmp.QMPClient directly: its execute() and disconnect() wait
forever, and a QEMU that is hung (or SIGSTOP'ed, or wedged in a COLO
checkpoint) would hang the controller with it. The controller's job is exactly
to notice that and fail over, so here every command, event wait, connect and
close is bounded, and a missed deadline is an exception (QmpTimeout) the
controller can act on. Errors are translated into coserver's tree
(coserver.qmp.errors) and every command logs one line.

After a QmpTimeout the session is marked unhealthy (`healthy` is False for
good). QEMU may still run the timed-out command later, when (if) it wakes up,
so its effect is unknown. What callers should do:

  * treat QEMU as hung: do not wait on this session any more;
  * decide from outside QMP (process state, peer, watchdog) whether to fail
    over or kill QEMU;
  * if QEMU is to be used again, close() this session, open a new one and
    re-read every state (query-status, ...) instead of assuming the timed-out
    command did or did not happen.

The session still accepts commands (each again bounded) so that a caller can
probe, but nothing it returns says the earlier command's fate.

Events keep qemu.qmp's EventListener semantics (FIFO from registration, name
and filter matching, history, never-ending iteration); see listen().
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from qemu.qmp import (
    ConnectError,
    EventListener,
    ExecInterruptedError,
    ExecuteError,
    Message,
    QMPClient,
    QMPError,
    Runstate,
    StateError,
)
from qemu.qmp.qmp_client import GreetingError
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, wait_exponential

from coserver import log
from coserver.qmp.errors import (
    QmpCommandError,
    QmpConnectError,
    QmpDisconnected,
    QmpError,
    QmpEventTimeout,
    QmpTimeout,
)
from coserver.sys.aio import UNWIND_GRACE, bounded, forget

T = TypeVar("T")
EventFilter = Callable[[Message], bool]

_log = log.get("qmp")

#: Events kept in a listener's history (qemu.qmp keeps all: unbounded in a daemon).
HISTORY_LEN = 256
#: Don't start a connect attempt with less than this left of connect_timeout.
_MIN_ATTEMPT = 0.05


def event_data(event: Mapping[str, object]) -> dict[str, Any]:
    """An event's "data" member (an empty dict when it has none): what callers read fields from."""
    data = event.get("data")
    return dict(data) if isinstance(data, Mapping) else {}


class _Client(QMPClient):
    """QMPClient minus its default all-events queue, plus a hard abort.

    The default `events` listener queues every event forever unless someone
    drains it; in a long-running controller that is a leak, so events go only
    to listeners a caller asked for. abort() drops the connection without
    flushing, for closing on a QEMU that no longer reads its socket.
    """

    async def _event_dispatch(self, msg: Message) -> None:
        for listener in list(self._listeners):
            if listener is not self.events:
                await listener.put(msg)

    def abort(self) -> None:
        writer = self._writer
        if writer is not None:
            writer.transport.abort()

    # qemu.qmp's hooks log every message at DEBUG, but build the text first (a pretty-printed JSON
    # dump of it) whether or not DEBUG is on: the controller's 4 polls a second and every event
    # paid for lines nobody sees. Its own hooks, run only when their lines are kept.
    def _cb_outbound(self, msg: Message) -> Message:
        return super()._cb_outbound(msg) if self.logger.isEnabledFor(logging.DEBUG) else msg

    def _cb_inbound(self, msg: Message) -> Message:
        return super()._cb_inbound(msg) if self.logger.isEnabledFor(logging.DEBUG) else msg


class QmpListener(EventListener):
    """An EventListener bound to a session: registered as soon as it is made.

    Registering at creation (not at `with`) means an event caused by a command
    issued after listen() cannot be missed. `with`/`async with` (or close())
    unregisters it, dropping events not yet read (qemu.qmp semantics).
    `async for ev in listener` never ends by itself; wait() is the bounded way.
    """

    def __init__(self, session: QmpSession, names: tuple[str, ...],
                 event_filter: EventFilter | None) -> None:
        super().__init__(names or None, event_filter)
        # qemu.qmp keeps every event in a list; a bounded deque has the append/iteration the base class uses
        self._history: deque[Message] = deque(maxlen=HISTORY_LEN)  # type: ignore[assignment]
        self._session = session

    def close(self) -> None:
        """Stop listening (idempotent)."""
        self._session._unregister(self)

    def __enter__(self) -> QmpListener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> QmpListener:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    async def wait(self, *, deadline: float, predicate: EventFilter | None = None) -> Message:
        """The next event (matching `predicate`, others are consumed) within `deadline` s.

        Raises QmpEventTimeout if none comes, QmpDisconnected if the
        connection is lost first (events already queued are still returned).
        """
        what = "|".join(sorted(self.names)) or "(any)"
        loop = asyncio.get_running_loop()
        end = loop.time() + deadline
        while True:
            event = await self._session._next_event(self, end - loop.time(), what)
            if event is None:
                raise QmpEventTimeout(self._session.path, what, deadline)
            if predicate is None or predicate(event):
                return event


def _socket_not_ready(exc: BaseException) -> bool:
    """Worth another attempt: QEMU still starting (socket file not there yet, or there but not
    listening), or a garbled greeting. QEMU keeps a monitor's unsent output across clients: when
    a client gave up on a command (a missed deadline, QEMU stopped) and went away, the reply can
    reach the *next* client before its greeting. That attempt fails; the next one is clean."""
    return isinstance(exc, ConnectError) and isinstance(
        exc.exc, (FileNotFoundError, ConnectionRefusedError, GreetingError))


class QmpSession:
    """One QMP connection to one QEMU monitor socket. Make it with connect()."""

    def __init__(self, client: _Client, path: str, name: str, default_deadline: float) -> None:
        self._client = client
        self.path = path
        self.name = name
        self.default_deadline = default_deadline
        self._missed_deadline = False
        self._closed = False
        self._lost = asyncio.Event()
        self._lost_reason = "QEMU closed the connection"
        self._listeners: set[QmpListener] = set()
        self._log = _log.bind(session=name, path=path)
        self._watcher = asyncio.create_task(self._watch())

    # -- connecting -----------------------------------------------------------------

    @classmethod
    async def connect(cls, path: str | Path, *, name: str, connect_timeout: float = 30.0,
                      default_deadline: float = 5.0) -> QmpSession:
        """Connect to the QMP socket at `path`, retrying while QEMU is still starting.

        Retries (tenacity, backing off to 0.5 s) while the socket is missing or
        refuses; a greeting that never comes (QEMU hung, or another client holds
        this monitor: QEMU serves one at a time) is not retried. All of it is
        bounded by connect_timeout; failure is QmpConnectError.
        """
        path = str(path)
        loop = asyncio.get_running_loop()
        end = loop.time() + connect_timeout
        t0 = time.monotonic()

        def remaining() -> float:
            return end - loop.time()

        backoff = wait_exponential(multiplier=0.02, min=0.02, max=0.5)

        def wait(state: RetryCallState) -> float:
            return max(0.0, min(backoff(state), remaining() - _MIN_ATTEMPT))

        client = _Client(name)
        try:
            async for attempt in AsyncRetrying(
                    stop=lambda _state: remaining() < _MIN_ATTEMPT,
                    wait=wait, retry=retry_if_exception(_socket_not_ready), reraise=True):
                with attempt:
                    client = _Client(name)
                    await bounded(client.connect(path), remaining())
        except TimeoutError:
            client.abort()
            raise QmpConnectError(path, connect_timeout, "socket accepted but no QMP greeting "
                                  "(QEMU hung, or another client holds this monitor)") from None
        except ConnectError as exc:
            raise QmpConnectError(path, connect_timeout, str(exc.exc) or repr(exc.exc)) from exc
        except (OSError, QMPError) as exc:
            raise QmpConnectError(path, connect_timeout, str(exc)) from exc
        session = cls(client, path, name, default_deadline)
        session._log.info("qmp.connected", duration_ms=round((time.monotonic() - t0) * 1000))
        return session

    async def _watch(self) -> None:
        """Set _lost as soon as the client leaves RUNNING (EOF, reset, close)."""
        while self._client.runstate == Runstate.RUNNING:
            await self._client.runstate_changed()
        self._lost.set()

    async def wait_lost(self, timeout: float) -> bool:
        """Wait up to `timeout` s for the connection to end (QEMU exited: everything it wrote before,
        its last events included, has been read and dispatched by then); whether it ended."""
        try:
            await asyncio.wait_for(self._lost.wait(), timeout)
        except TimeoutError:
            return False
        return True

    # -- state ----------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True while the connection is up and not closed."""
        return not self._closed and not self._lost.is_set()

    @property
    def healthy(self) -> bool:
        """False once a command missed its deadline (sticky), or when disconnected."""
        return self.connected and not self._missed_deadline

    # -- commands -------------------------------------------------------------------

    async def execute(self, cmd: str, args: Mapping[str, object] | None = None, *,
                      deadline: float | None = None) -> Any:
        """Run a QMP command and return its 'return' value (usually a dict or list).

        deadline defaults to default_deadline; there is no way to wait forever.
        Raises QmpTimeout, QmpCommandError, QmpDisconnected (or QmpError for a
        protocol violation).
        """
        return await self._call(cmd, args, deadline, cmd)

    async def probe(self, cmd: str, *, deadline: float) -> Any:
        """A liveness probe: a query-* command whose effect is nothing, so missing its deadline leaves
        the session healthy (the late reply is dropped by its unknown id, as QMP asks of clients).
        What a watchdog polls with a short deadline without tearing the session down at every slow
        moment (a reconnect would lose the events that arrive meanwhile)."""
        if not cmd.startswith("query-"):
            raise ValueError(f"probe {cmd!r}: only query-* commands are side-effect free")
        return await self._call(cmd, None, deadline, cmd, _probe=True)

    async def hmp(self, command_line: str, *, deadline: float | None = None) -> str:
        """Run an HMP command via human-monitor-command; returns its text output.

        HMP reports most failures in that text, not as a QMP error.
        """
        out = await self._call("human-monitor-command", {"command-line": command_line},
                               deadline, f"hmp {command_line!r}", hmp=command_line)
        return str(out)

    async def _call(self, cmd: str, args: Mapping[str, object] | None,
                    deadline: float | None, label: str, _probe: bool = False, **log_fields: Any) -> Any:
        limit = self.default_deadline if deadline is None else float(deadline)
        t0 = time.monotonic()
        outcome, extra = "cancelled", dict(log_fields)
        try:
            if self._closed:
                raise QmpDisconnected(self.path, label, "session closed")
            result = await bounded(self._client.execute(cmd, args), limit)
            outcome = "ok"
            return result
        except TimeoutError:
            outcome = "timeout"
            if not _probe:
                self._missed_deadline = True
            raise QmpTimeout(self.path, label, limit) from None
        except ExecuteError as exc:
            outcome, extra["error_class"] = "error", exc.error_class
            raise QmpCommandError(self.path, label, exc.error_class, str(exc)) from exc
        except (ExecInterruptedError, StateError) as exc:
            outcome = "disconnected"
            raise QmpDisconnected(self.path, label, self._lost_reason) from exc
        except QmpDisconnected:
            outcome = "disconnected"
            raise
        except QMPError as exc:
            outcome = "protocol-error"
            raise QmpError(self.path, f"{label}: protocol error: {exc}") from exc
        finally:
            ms = round((time.monotonic() - t0) * 1000, 1)
            fields: dict[str, Any] = {"command": cmd, "duration_ms": ms, "outcome": outcome, **extra}
            if outcome == "ok" and cmd.startswith("query-"):
                self._log.debug("qmp.command", **fields)   # polls (4 a second): not events; a failed one warns
            elif outcome == "ok":
                self._log.info("qmp.command", **fields)
            else:
                self._log.warning("qmp.command", deadline_s=limit, **fields)

    # -- events ---------------------------------------------------------------------

    def listen(self, *names: str, event_filter: EventFilter | None = None) -> QmpListener:
        """A listener for events `names` (all if none), registered now.

        Race-free pattern for an event a command causes:
            with s.listen("STOP") as stops:
                await s.execute("stop")
                await stops.wait(deadline=2)
        """
        listener = QmpListener(self, names, event_filter)
        self._client.register_listener(listener)
        self._listeners.add(listener)
        return listener

    async def wait_event(self, name: str, *, deadline: float,
                         predicate: EventFilter | None = None) -> Message:
        """Wait for the next `name` event arriving after this call (see listen() for races)."""
        with self.listen(name) as listener:
            return await listener.wait(deadline=deadline, predicate=predicate)

    def _unregister(self, listener: QmpListener) -> None:
        if listener in self._listeners:
            self._listeners.discard(listener)
            self._client.remove_listener(listener)

    async def _next_event(self, listener: QmpListener, timeout: float, what: str) -> Message | None:
        """Next queued event, None after `timeout` s; QmpDisconnected if the link drops first."""
        if not listener.empty():
            return await listener.get()
        get = asyncio.ensure_future(listener.get())
        lost = asyncio.ensure_future(self._lost.wait())
        try:
            await asyncio.wait({get, lost}, timeout=max(0.0, timeout),
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (get, lost):
                task.cancel()
        if get.done() and not get.cancelled():
            return get.result()
        if lost.done() and not lost.cancelled():
            raise QmpDisconnected(self.path, f"wait for event {what}", self._lost_reason)
        return None

    # -- closing --------------------------------------------------------------------

    async def close(self, *, timeout: float = 2.0) -> None:
        """Disconnect, in at most about timeout + 1 s, whatever state QEMU is in.

        A polite disconnect flushes what we sent; if QEMU does not read its
        socket (SIGSTOP'ed with a full buffer, hung), the connection is aborted
        instead. Errors from a connection QEMU already dropped are only logged.
        Idempotent; never raises a QMP error.
        """
        if self._closed:
            return
        self._closed = True
        if not self._lost.is_set():
            self._lost_reason = "session closed"
        self._lost.set()
        self._watcher.cancel()
        for listener in list(self._listeners):
            self._unregister(listener)
        dc = asyncio.ensure_future(self._client.disconnect())
        try:
            done, _ = await asyncio.wait({dc}, timeout=timeout)
            if not done:
                self._log.warning("qmp.close.aborted", timeout_s=timeout)
                self._client.abort()
                done, _ = await asyncio.wait({dc}, timeout=4 * UNWIND_GRACE)
        except BaseException:
            self._client.abort()
            dc.cancel()
            raise
        if not done:
            dc.cancel()
            dc.add_done_callback(forget)
            self._log.warning("qmp.close.abandoned")
        elif not dc.cancelled() and dc.exception() is not None:
            self._log.debug("qmp.close.already.failed", error=repr(dc.exception()))

    async def __aenter__(self) -> QmpSession:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    def __repr__(self) -> str:
        state = "healthy" if self.healthy else ("unhealthy" if self.connected else "closed")
        return f"<QmpSession {self.name} {self.path} {state}>"
