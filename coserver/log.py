"""structlog set-up shared by the CLI, the daemons and the tests.

Logs are key=value lines (or JSON lines into a file) so a run can be read by a
person and grepped by a script. configure() is idempotent.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TextIO

import structlog

_configured_file: TextIO | None = None


def configure(level: str = "INFO", log_file: Path | None = None) -> None:
    """Send structlog output to stderr, or as JSON lines to log_file."""
    global _configured_file
    if _configured_file is not None:
        _configured_file.close()
        _configured_file = None
    processors: list[structlog.typing.Processor] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        _configured_file = open(log_file, "a", buffering=1, encoding="utf-8")
        processors.append(structlog.processors.JSONRenderer())
        out: TextIO = _configured_file
    else:
        processors.append(structlog.dev.ConsoleRenderer(colors=False))
        out = sys.stderr
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )


def get(name: str) -> structlog.typing.FilteringBoundLogger:
    """A logger bound to a component name."""
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(component=name)
    return logger
