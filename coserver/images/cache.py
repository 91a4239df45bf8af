"""Cached image builds: one lock per cache directory, build in a temp directory, rename into place.

Both image builders (the lab guest, the Debian test guest) keep each build in
<root>/<key>, where the key hashes the build's inputs. A build runs in a temp
directory under the cache's lock and is renamed into place only when complete
(with its manifest), so a crashed build never looks finished, two builds of the
same image never interleave, and a second caller waits and then finds the
finished build.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from coserver import log
from coserver.images.errors import GuestBuildError

T = TypeVar("T")

_log = log.get("images.cache")


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


def cached_build(root: Path, key: str, *, load: Callable[[Path], T], build: Callable[[Path], None],
                 what: str, force: bool = False, say: Callable[[str], None] = lambda _msg: None) -> T:
    """load(<root>/<key>) if a usable build is there (and not force), else build(tmp) and rename it there.

    load raises GuestBuildError for a build it cannot use (then it is built again);
    build fills the temp directory it is given, manifest included.
    """
    final = root / key
    if not force and final.is_dir():
        try:
            return load(final)
        except GuestBuildError as exc:
            _log.warning("images.cache.unusable", image=what, error=str(exc))
    with locked(root):
        if not force and final.is_dir():  # someone else may have built it while we waited
            try:
                return load(final)
            except GuestBuildError:
                pass
        for stale in root.glob(".tmp-*"):  # leftovers of a build that died; we hold the lock
            shutil.rmtree(stale, ignore_errors=True)
        t0 = time.monotonic()
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
        try:
            tmp.chmod(0o755)  # readable by a QEMU that does not run as root
            build(tmp)
            if final.exists():
                old = root / f".tmp-old-{key}"
                os.rename(final, old)
                shutil.rmtree(old, ignore_errors=True)
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        took = time.monotonic() - t0
        say(f"{what} {key} built in {took:.0f} s: {final}")
        _log.info("images.cache.built", image=what, key=key, dir=str(final), seconds=round(took, 1))
        return load(final)
