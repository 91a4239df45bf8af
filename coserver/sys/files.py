"""Files: content hashes (what manifests and hardware specs record to notice a changed file), reading
only regular files, and private directories.

A path from a spec or the command line may name a FIFO or a device (`/dev/zero`): reading it would
block for ever or never end, so what must be a regular file is checked before it is read. A
directory that holds a QEMU's overlays or sockets must be ours alone: a symlink or a directory
someone else planted there is refused, never followed.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from pathlib import Path
from typing import BinaryIO

from coserver.errors import CoserverError

_KINDS = ((stat.S_ISREG, "a regular file"), (stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISLNK, "a symlink"))


def file_kind(mode: int) -> str:
    """What a stat mode is, in words ("a FIFO", "a character device", ...)."""
    return next((name for test, name in _KINDS if test(mode)), "of an unknown file type")


class NotRegularFileError(OSError):
    """A path that had to be a regular file is a FIFO, a device, a socket or a directory.

    An OSError (EINVAL, strerror "not a regular file (a FIFO)") so that every caller that turns
    "cannot read <file>: <strerror>" into one line handles it as it handles a missing file.
    """

    def __init__(self, path: str | Path, mode: int) -> None:
        super().__init__(errno.EINVAL, f"not a regular file ({file_kind(mode)})", str(path))


def open_regular(path: str | Path) -> BinaryIO:
    """Open a regular file for reading; refuse anything else without blocking on it.

    os.stat first (a FIFO is never opened); then open with O_NONBLOCK (opening a FIFO swapped in
    meanwhile does not wait for a writer) and fstat the open file, which is what is read.
    Raises NotRegularFileError, or the OSError/ValueError (a NUL in the path) of os.stat.
    """
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise NotRegularFileError(path, st.st_mode)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFileError(path, st.st_mode)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def sha256_file(path: Path) -> str:
    """The file's SHA-256, hex, read in 1 MiB blocks (kernels and disks are large).

    Only a regular file is read (NotRegularFileError otherwise): a FIFO or /dev/zero would hang."""
    h = hashlib.sha256()
    with open_regular(path) as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class UnsafeDirError(CoserverError):
    """A directory that must be ours alone is a symlink, not a directory, someone else's, or open
    to group/other."""


def private_dir(path: Path) -> Path:
    """Make `path` a directory only we can use (mode 0700), or check that it already is one.

    A new directory is made with mode 0700 (its parent must exist). An existing one must be a real
    directory (os.lstat: a symlink is refused, not followed), owned by our uid, with no group or
    other permission bits; it is never chmod-ed, since it might not be ours to change.
    Raises UnsafeDirError, one line naming the directory and what is wrong.
    """
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise UnsafeDirError(f"directory {path}: cannot create it ({exc.strerror or exc})") from None
    try:
        st = os.lstat(path)
    except OSError as exc:
        raise UnsafeDirError(f"directory {path}: cannot stat it ({exc.strerror or exc})") from None
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafeDirError(f"directory {path}: is {file_kind(st.st_mode)}, not a directory; "
                             f"refusing to use it (remove it if it is yours)")
    if st.st_uid != os.geteuid():
        raise UnsafeDirError(f"directory {path}: owned by uid {st.st_uid}, not by us (uid {os.geteuid()}); "
                             f"refusing to use it")
    if st.st_mode & 0o077:
        raise UnsafeDirError(f"directory {path}: mode {stat.S_IMODE(st.st_mode):04o} lets group or others in; "
                             f"it must be 0700 (refusing to use it; remove it or chmod it yourself)")
    return path


def private_dirs(base: Path, path: Path) -> Path:
    """private_dir() for every directory from below `base` down to `path` (base itself is not
    checked: e.g. /dev/shm, shared and sticky). A private parent is what keeps anyone else from
    swapping the directories below it."""
    rel = path.relative_to(base)
    current = base
    for part in rel.parts:
        current = current / part
        private_dir(current)
    return path


def write_new(path: Path, data: bytes, *, mode: int = 0o600, replace: bool = False) -> None:
    """Write `data` to `path` with exactly `mode` (whatever the umask), fsync'd: created exclusively
    (FileExistsError if it exists), or (replace) through a new file renamed over the old one, so a
    reader never sees half a key or certificate. Never follows a symlink at `path`."""
    target = path.with_name(f".{path.name}.new") if replace else path
    if replace:
        target.unlink(missing_ok=True)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    if replace:
        os.replace(target, path)
