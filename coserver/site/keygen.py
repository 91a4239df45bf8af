"""The pair's shared heartbeat key: written once, explicitly, then copied to the peer.

A controller never invents a missing key (coserver.controller.heartbeat.load_key): two hosts
that each made their own key would see each other's heartbeats as forged and report "peer lost
on all links" instead of the real fault. So the key is made here, by `coserver site keygen`,
and a missing, unsafe or malformed key is one line at start.

Format: 32 random bytes, hex-encoded, one line (64 hex digits and a newline), mode 0600, owned
by the controller's user (root on a real host).
"""

from __future__ import annotations

import os
import re
import secrets
import stat
from pathlib import Path

from coserver.site.errors import KeyFileError

KEY_BYTES = 32
_HEX = re.compile(rb"[0-9a-f]{%d}\n?" % (2 * KEY_BYTES))


def write_key(path: Path, force: bool = False) -> Path:
    """Write a new random key to `path` (0600, created exclusively); refuse to overwrite unless force.

    The parent directory is created 0700 if missing. With force the old key is replaced
    atomically (a new file renamed over it), so a reader never sees half a key."""
    path = Path(path)
    if path.exists() and not force:
        raise KeyFileError(f"key {path}: already exists; refusing to overwrite the pair's key "
                           "(the peer holds a copy): pass --force to replace it on both hosts")
    try:
        if not path.parent.is_dir():
            path.parent.mkdir(mode=0o700, parents=True)
    except OSError as exc:
        raise KeyFileError(f"key {path}: cannot make {path.parent}: {exc.strerror}") from None
    target = path.with_name(f".{path.name}.new") if force else path
    data = secrets.token_hex(KEY_BYTES).encode() + b"\n"
    try:
        if force:
            target.unlink(missing_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.fchmod(fd, 0o600)   # whatever the umask
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        if force:
            os.replace(target, path)
    except FileExistsError:
        raise KeyFileError(f"key {path}: already exists (created meanwhile); not overwritten") from None
    except OSError as exc:
        raise KeyFileError(f"key {path}: cannot write: {exc.strerror}") from None
    return path


def check_key(path: Path) -> None:
    """The key is present, a regular file, mode exactly 0600, ours, and 64 hex digits: else one line."""
    path = Path(path)
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        raise KeyFileError(f"key {path}: missing; make it with `coserver site keygen` on one host "
                           "and copy it (mode 0600) to the other") from None
    except OSError as exc:
        raise KeyFileError(f"key {path}: cannot stat: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise KeyFileError(f"key {path}: not a regular file")
    mode = stat.S_IMODE(st.st_mode)
    if mode != 0o600:
        raise KeyFileError(f"key {path}: mode {mode:04o}, must be 0600 (chmod 600 {path})")
    if st.st_uid != os.geteuid():
        raise KeyFileError(f"key {path}: owned by uid {st.st_uid}, not by this user (uid {os.geteuid()})")
    read_key(path)


def read_key(path: Path) -> bytes:
    """The key's 32 bytes; a file that is not 64 hex digits (and a newline) is one line."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise KeyFileError(f"key {path}: missing; make it with `coserver site keygen`") from None
    except OSError as exc:
        raise KeyFileError(f"key {path}: cannot read: {exc.strerror}") from None
    if not _HEX.fullmatch(raw):
        raise KeyFileError(f"key {path}: {len(raw)} bytes, not {2 * KEY_BYTES} lowercase hex digits "
                           "(as `coserver site keygen` writes)")
    return bytes.fromhex(raw.decode().strip())
