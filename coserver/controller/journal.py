"""The controller's on-disk journal: the last decision it acted on, per FT server.

A controller may crash or be restarted (upgrade, OOM) while its QEMU keeps
running (QEMU runs in its own session). The restarted controller reads this
journal to re-attach without disturbing the guest: which role it had, in
which epoch, which state, how many checkpoints it had seen, and which QEMU
process record (machine.launcher: <workdir>/<name>.json) to attach to.

Why it is written this way:

* atomic replace (temp file in the same directory, fsync, rename, fsync of the
  directory): after a crash at any instant the file is the previous version
  or the new one, never a mix; a leftover temp file is ignored;
* a SHA-256 of the record inside the file: a file damaged otherwise (disk,
  a hand edit) is refused rather than believed, since acting on a wrong
  epoch or role could start a second primary;
* mode 0600: it tells which process to signal;
* load() of a missing file is a fresh start (None), a corrupt one is an
  error naming the file: a person must look before the controller acts; so is
  one written for another FT server or host (JournalMismatch), e.g. copied over.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from coserver import log
from coserver.controller.errors import JournalCorrupt, JournalError, JournalMismatch
from coserver.controller.roles import Role
from coserver.controller.statemachine import FtState

_log = log.get("journal")

VERSION = 1


@dataclass(frozen=True)
class JournalEntry:
    """What a restarted controller needs to pick up where it left off."""

    ftserver: str
    node: str
    role: Role
    epoch: int
    state: FtState
    checkpoints: int = 0  # the last COLO checkpoint count seen
    qemu_name: str | None = None  # the launcher's record name (<workdir>/<name>.json)
    qemu_workdir: str | None = None
    reason: str = ""  # why this was written (the decision or transition)
    at: float = field(default_factory=time.time)  # wall clock, for people

    def as_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["role"], d["state"] = self.role.value, self.state.value
        return d


_TYPES: dict[str, tuple[type, ...]] = {
    "ftserver": (str,), "node": (str,), "role": (str,), "epoch": (int,), "state": (str,),
    "checkpoints": (int,), "qemu_name": (str, type(None)), "qemu_workdir": (str, type(None)),
    "reason": (str,), "at": (int, float),
}
assert set(_TYPES) == {f.name for f in fields(JournalEntry)}


def _digest(record: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(record, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class Journal:
    """The journal file of one FT server on this host."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def save(self, entry: JournalEntry) -> None:
        """Replace the journal with `entry`, atomically and durably (see module docstring)."""
        record = entry.as_json()
        data = (json.dumps({"version": VERSION, "record": record, "sha256": _digest(record)},
                           sort_keys=True, indent=1) + "\n").encode()
        d = self.path.parent
        tmp = d / f".{self.path.name}.{os.getpid()}.tmp"
        try:
            d.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                os.fchmod(fd, 0o600)
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
            dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dfd)  # the rename itself must survive a power cut
            finally:
                os.close(dfd)
        except OSError as exc:
            try:
                tmp.unlink()
            except OSError:
                pass
            raise JournalError(f"journal {self.path}: cannot write: {exc.strerror or exc}") from exc

    def load(self, *, ftserver: str | None = None, node: str | None = None) -> JournalEntry | None:
        """The last saved entry; None if there is no journal (fresh start); JournalCorrupt if unreadable.

        ftserver, node: whose journal it must be (the controller's config); another's is refused
        (JournalMismatch), never used: its epoch and role belong to some other guest or host."""
        entry = self._load()
        if entry is not None:
            wrong = [f"{what} {got!r} (this controller's is {want!r})"
                     for what, got, want in (("FT server", entry.ftserver, ftserver), ("node", entry.node, node))
                     if want is not None and got != want]
            if wrong:
                raise JournalMismatch(f"journal {self.path}: written for {' and '.join(wrong)}; a journal "
                                      "copied from another host or server is not used: move it away")
        return entry

    def _load(self) -> JournalEntry | None:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise JournalError(f"journal {self.path}: cannot read: {exc.strerror or exc}") from exc
        try:
            obj = json.loads(raw)
        except ValueError as exc:
            raise JournalCorrupt(f"journal {self.path}: not JSON ({exc}); move it away to start fresh") from exc
        return self._entry(obj)

    def _entry(self, obj: Any) -> JournalEntry:
        def bad(why: str) -> JournalCorrupt:
            return JournalCorrupt(f"journal {self.path}: {why}; move it away to start fresh")

        if not isinstance(obj, dict) or set(obj) != {"version", "record", "sha256"}:
            raise bad("not a coserver journal")
        if obj["version"] != VERSION:
            raise bad(f"version {obj['version']!r}, expected {VERSION}")
        rec = obj["record"]
        if not isinstance(rec, dict) or set(rec) != set(_TYPES):
            raise bad("record fields are wrong")
        if obj["sha256"] != _digest(rec):
            raise bad("checksum mismatch")
        for name, types in _TYPES.items():
            if isinstance(rec[name], bool) or not isinstance(rec[name], types):
                raise bad(f"field {name} has the wrong type")
        try:
            role, state = Role(rec["role"]), FtState(rec["state"])
        except ValueError as exc:
            raise bad(str(exc)) from exc
        return JournalEntry(**{**rec, "role": role, "state": state})

    def remove(self) -> None:
        """Forget (after a clean stop: the next start is a fresh one)."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
