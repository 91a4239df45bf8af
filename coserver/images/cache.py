"""One lock per image cache directory, so two builds of the same image never interleave.

Both image builders (the lab guest, the Debian test guest) build into a temp directory and
rename it into place under this lock; a second caller waits and then finds the finished build.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def locked(root: Path) -> Iterator[None]:
    """Hold an exclusive flock on <root>/.lock (the directory is made if missing)."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
