"""The pair's shared heartbeat key: written once, explicitly, then copied to the peer.

A controller never invents a missing key (coserver.controller.heartbeat.load_key): two hosts
that each made their own key would see each other's heartbeats as forged and report "peer lost
on all links" instead of the real fault. So the key is made here, by `coserver site keygen`,
and a missing, unsafe or malformed key is one line at start.

Format: one or two lines of 64 lowercase hex digits (32 random bytes each), mode 0600, owned by
the controller's user (root on a real host). The LAST line is the current key (what messages are
sent with); a line before it is the previous key, still accepted so that a rotation never makes
the peer's heartbeats look forged while the new file travels to it (`coserver site keygen
--rotate`: appends a new current key, keeps the one before; the oldest is dropped). A one-line
file, the only format before rotation existed, is a current key without a previous one.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from coserver.site.errors import KeyFileError
from coserver.sys.files import write_new

KEY_BYTES = 32
#: A current key and at most one previous key.
MAX_KEYS = 2
_LINE = rb"[0-9a-f]{%d}" % (2 * KEY_BYTES)
_FILE = re.compile(rb"(?:%s\n){0,%d}%s\n?" % (_LINE, MAX_KEYS - 1, _LINE))


def key_id(key: bytes) -> str:
    """A key's public name (8 hex digits of its SHA-256): messages say which key MAC'd them, so
    a receiver picks it from its window, and a log can say which key a host uses without showing it."""
    return hashlib.sha256(key).hexdigest()[:8]


@dataclass(frozen=True)
class KeyRing:
    """The keys of a key file: `current` (sent with, accepted) and `previous` (accepted only)."""

    current: bytes
    previous: bytes | None = None

    @classmethod
    def of(cls, key: bytes | KeyRing) -> KeyRing:
        """A ring from a bare key (the single-key callers) or the ring itself."""
        return key if isinstance(key, KeyRing) else cls(bytes(key))

    def keys(self) -> list[bytes]:
        """Every accepted key, current first."""
        return [self.current] + ([self.previous] if self.previous is not None else [])

    def by_id(self) -> dict[str, bytes]:
        return {key_id(k): k for k in self.keys()}


def write_key(path: Path, force: bool = False, rotate: bool = False) -> Path:
    """Write a new random key to `path` (0600, created exclusively); refuse to overwrite unless force.

    rotate: the existing (checked) file gets a new current key appended; its current key stays as
    the previous one, anything older is dropped. The parent directory is created 0700 if missing.
    A replaced file is replaced atomically (a new file renamed over it), so a reader never sees half a key."""
    path = Path(path)
    kept: list[bytes] = []
    if rotate:
        check_key(path)
        kept = [read_keys(path).current]
    elif path.exists() and not force:
        raise KeyFileError(f"key {path}: already exists; refusing to overwrite the pair's key "
                           "(the peer holds a copy): pass --rotate to add a new key keeping the "
                           "current one accepted, or --force to replace it on both hosts")
    try:
        if not path.parent.is_dir():
            path.parent.mkdir(mode=0o700, parents=True)
    except OSError as exc:
        raise KeyFileError(f"key {path}: cannot make {path.parent}: {exc.strerror}") from None
    keys = [*kept, secrets.token_bytes(KEY_BYTES)][-MAX_KEYS:]
    data = b"".join(k.hex().encode() + b"\n" for k in keys)
    try:
        write_new(path, data, replace=force or rotate)
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
    read_keys(path)


def read_keys(path: Path) -> KeyRing:
    """The file's current key and, if it holds two, the previous one; anything else is one line."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise KeyFileError(f"key {path}: missing; make it with `coserver site keygen`") from None
    except OSError as exc:
        raise KeyFileError(f"key {path}: cannot read: {exc.strerror}") from None
    if not _FILE.fullmatch(raw):
        raise KeyFileError(f"key {path}: {len(raw)} bytes, not one or two lines of {2 * KEY_BYTES} "
                           "lowercase hex digits (as `coserver site keygen` writes)")
    keys = [bytes.fromhex(line) for line in raw.decode().split()]
    if len(keys) == 2 and keys[0] == keys[1]:
        raise KeyFileError(f"key {path}: its two lines are the same key")
    return KeyRing(current=keys[-1], previous=keys[0] if len(keys) == 2 else None)


def read_key(path: Path) -> bytes:
    """The current key's 32 bytes (what messages are sent with); a malformed file is one line."""
    return read_keys(path).current
