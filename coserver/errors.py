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
