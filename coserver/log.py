"""structlog set-up shared by the CLI, the daemons and the tests.

Logs are key=value lines (or JSON lines into a file) so a run can be read by a
person and grepped by a script. configure() is idempotent.

A log write never raises into the code that logs: a full disk (ENOSPC), an I/O
error (EIO) or a closed pipe drops the line, counts it, and health() says so (the
controller's status shows it as an alert). A controller must keep deciding when
its disk is full; a log line is never worth a failover.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import structlog


class _Health:
    """What happened to the log lines since configure(): the lines dropped and why."""

    def __init__(self) -> None:
        self.dropped = 0
        self.last_error: str | None = None
        self.failing_since: float | None = None   # wall clock of the first drop of the current run of failures
        self.recovered_after = 0                  # lines dropped before the last recovery

    def as_json(self) -> dict[str, Any]:
        return {"dropped": self.dropped, "failing": self.failing_since is not None,
                "failing_since": self.failing_since, "last_error": self.last_error}


_health = _Health()


class SafeStream:
    """A write-only text stream for structlog's PrintLogger that never raises OSError.

    PrintLogger prints each line as write(line), write("\\n"), flush(); the line goes out in one
    write(2) at flush, so lines from threads do not interleave. A line that cannot be written
    (wholly or in part) is dropped and counted; after a partial line the next one starts on a
    fresh line, so a JSON-lines reader loses one line, not two."""

    def __init__(self, name: str, *, fd: int | None = None) -> None:
        """fd: a file descriptor it owns (closed by close()); None: whatever sys.stderr is at each line."""
        self.fd = fd
        self.name = name
        self._pending: list[str] = []
        self._partial = False
        self._lock = threading.Lock()

    def write(self, s: str) -> int:
        self._pending.append(s)
        return len(s)

    def flush(self) -> None:
        with self._lock:
            text, self._pending = "".join(self._pending), []
            if not text:
                return
            try:
                self._emit(text)
            except (OSError, ValueError) as exc:   # ValueError: a closed stream
                _dropped(self.name, exc)
                return
            if _health.failing_since is not None:
                self._emit_quietly(_recovered())

    def _emit(self, text: str) -> None:
        if self.fd is None:
            sys.stderr.write(text)
            sys.stderr.flush()
            return
        data = (b"\n" if self._partial else b"") + text.encode("utf-8", "replace")
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self.fd, view):]
        finally:   # a line cut short: the next one starts on a fresh line; nothing written: as it was
            self._partial = bool(view) and (self._partial or len(view) < len(data))

    def _emit_quietly(self, text: str) -> None:
        try:
            self._emit(text)
        except (OSError, ValueError):
            pass

    def close(self) -> None:
        fd, self.fd = self.fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass   # a late line goes to stderr


def _dropped(name: str, exc: Exception) -> None:
    first = _health.failing_since is None
    _health.dropped += 1
    if isinstance(exc, OSError):
        _health.last_error = f"{name}: {exc.strerror or exc}" + (f" (errno {exc.errno})" if exc.errno else "")
    else:
        _health.last_error = f"{name}: {exc}"
    if first and name != "stderr":   # once per run of failures, where a person (journald) may see it
        try:
            print(f"coserver: log lines to {_health.last_error} are being dropped (counted in the status)",
                  file=sys.stderr, flush=True)
        except (OSError, ValueError):
            pass
    if _health.failing_since is None:
        _health.failing_since = time.time()


def _recovered() -> str:
    """The line to write first once lines go out again: how many went missing."""
    lost, since = _health.dropped - _health.recovered_after, _health.failing_since
    _health.recovered_after = _health.dropped
    _health.failing_since = None
    return json.dumps({"event": "log.recovered", "dropped": lost, "failing_since": since,
                       "last_error": _health.last_error}) + "\n"


def health() -> dict[str, Any]:
    """{"dropped": lines lost since start, "failing": the last write failed, "failing_since", "last_error"}."""
    return _health.as_json()


def alert() -> str | None:
    """The alert-level note for a status while log lines are being lost (None: the log is fine)."""
    if _health.failing_since is None:
        return None
    return f"log lines are being dropped ({_health.dropped} so far): {_health.last_error}"


_configured_file: SafeStream | None = None


def configure(level: str = "INFO", log_file: Path | None = None) -> None:
    """Send structlog output to stderr, or as JSON lines to log_file (stderr if it cannot be opened)."""
    global _configured_file, _health
    _health = _Health()   # the counts are since this configure()
    if _configured_file is not None:
        _configured_file.close()
        _configured_file = None
    processors: list[structlog.typing.Processor] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    out: SafeStream | None = None
    if log_file is not None:
        try:
            log_file.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:   # a full disk must not stop the daemon: log to stderr instead
            _dropped(str(log_file), exc)
            print(f"coserver: cannot open the log file {log_file}: {exc.strerror or exc}; logging to stderr",
                  file=sys.stderr, flush=True)
        else:
            _configured_file = out = SafeStream(str(log_file), fd=fd)
            processors.append(structlog.processors.JSONRenderer())
    if out is None:
        processors.append(structlog.dev.ConsoleRenderer(colors=False))
        out = SafeStream("stderr")
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=out),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )


def get(name: str) -> structlog.typing.FilteringBoundLogger:
    """A logger bound to a component name."""
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(component=name)
    return logger
