"""The root of coserver's one exception tree.

Every error a user can cause or meet (bad input, a dead peer, a QMP failure)
is a CoserverError whose str() is one line saying what and where. The CLI
prints that line and exits non-zero; it never shows a traceback for these.
Each layer derives its own subclasses (qmp.errors, images.errors, ...).
"""

from collections.abc import Callable

#: How much of a value an error message echoes (a 100,000-character serial must not fill a screen).
#: 64 keeps every valid value whole (SMBIOS strings and serials are at most 64, a sha256 is 64).
CLIP_CHARS = 64


def clip(text: str, limit: int = CLIP_CHARS, quote: Callable[[str], str] | None = None) -> str:
    """text (quoted by `quote`, e.g. repr or json.dumps, if given) for a one-line message; a longer
    text is cut to its first `limit` characters, followed by its length.

    Error messages say what was wrong with a value; a value of any length from a file or the
    command line must not make the message unbounded (a terminal full, a log line of megabytes).
    """
    q = quote or str
    if len(text) <= limit:
        return q(text)
    return f"{q(text[:limit])}… ({len(text)} characters)"


class CoserverError(Exception):
    """An error with a one-line, user-facing message."""

    def __init__(self, message: str) -> None:
        one_line = " ".join(str(message).split())
        super().__init__(one_line)


class CoserverBug(Exception):
    """A bug in coserver itself: a broken invariant, never the user's or the peer's doing.

    Deliberately not a CoserverError: nothing that handles those (the CLI's one-line
    message, the daemon's "log and keep ticking") may swallow a bug. A daemon that
    meets one stops; its supervisor (systemd, or the lab's) starts it again and it
    re-attaches from its journal instead of acting on after a half-done step.
    """
