"""The root of coserver's one exception tree.

Every error a user can cause or meet (bad input, a dead peer, a QMP failure)
is a CoserverError whose str() is one line saying what and where. The CLI
prints that line and exits non-zero; it never shows a traceback for these.
Each layer derives its own subclasses (qmp.errors, images.errors, ...).
"""


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
