"""Per-start tokens: how the hook tells a controller's start of a domain from an operator's ``virsh start``.

An FT server's copy may only be started by its controller (it alone knows the role, the epoch and
whether the witness allows it). libvirt runs the hook synchronously and the hook must not call
back into libvirt or wait on the controller, so the proof has to be local and instant:

1. Before it asks libvirt to start the domain, the controller calls :func:`issue`: a fresh random
   token goes into ``<run_dir>/<name>.libvirt-start`` (mode 0600, root's: libvirt's hook runs as
   root) *and* into the domain XML's coserver metadata (``token=``).
2. The hook, at ``prepare``/``start`` (and ``restore``/``migrate``), allows the start only if the
   file exists, is a regular file of its own uid that no one else can read or write, is younger
   than :data:`MAX_AGE_S`, and holds the metadata's token.
3. Once libvirt's create call returns (success or not), the controller calls :func:`withdraw`.

An operator's ``virsh start`` of the persistent domain carries the last start's token at best, and
by then the file is gone (or holds another start's token): refused. A controller that died mid-start
leaves a file that stops counting after MAX_AGE_S. Nothing here is a secret from root; the point is
that only the controller's own start path makes the two agree, for a few seconds.
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

#: How long an issued token counts: libvirt reaches the prepare hook within a second of the create
#: call; 60 s covers a slow host without keeping a dead controller's start open for long.
MAX_AGE_S = 60.0
SUFFIX = ".libvirt-start"


def token_file(run_dir: Path, name: str) -> Path:
    """Where the start token of FT server `name` lives (name: a checked FT server name)."""
    return Path(run_dir) / f"{name}{SUFFIX}"


def issue(run_dir: Path, name: str) -> str:
    """A new token for one start of `name`'s domain, written (0600, atomically) where the hook
    looks; put the returned token into the domain's metadata."""
    import secrets

    from coserver.sys.files import write_new

    token = secrets.token_hex(16)
    write_new(token_file(run_dir, name), f"{token}\n".encode(), mode=0o600, replace=True)
    return token


def withdraw(run_dir: Path, name: str) -> None:
    """The start is over: no later start may use the token."""
    token_file(run_dir, name).unlink(missing_ok=True)


def refusal(run_dir: Path, name: str, token: str | None, now: float | None = None) -> str | None:
    """None if this is a start the controller issued a token for; else why not (a few words)."""
    if token is None:
        return "its metadata carries no start token"
    path = token_file(run_dir, name)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return f"no start token in {path}"
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror or exc}"
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
        return f"{path} is not a private regular file of uid {os.geteuid()}"
    age = (time.time() if now is None else now) - st.st_mtime
    if age > MAX_AGE_S:
        return f"the start token in {path} is {age:.0f} s old (a start counts for {MAX_AGE_S:.0f} s)"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            held = os.read(fd, 256).decode("ascii", "replace").strip()
        finally:
            os.close(fd)
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror or exc}"
    if held != token:   # not a secret from root, who alone could time this: plain ==
        return "its start token is not the one the controller issued"
    return None
