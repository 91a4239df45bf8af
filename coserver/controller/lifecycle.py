"""An FT server's life as the operator wants it: running or stopped, started at boot or not.

The controllers own the whole life of their FT server: `server start` makes the
controller of the right host start the guest alone (simplex); its peer then
rejoins as the secondary and the pair protects itself through the very path that
re-protection takes (rejoin.py). `server stop` shuts the guest down and stops
both sides, and nobody fails over meanwhile.

What the operator asked is kept on disk per host (`Desired`, a small JSON file in
the FT server's state directory), so a restarted controller or a rebooted host
does what was asked last: a stopped server stays stopped; an enabled one starts.

Which host may start the guest alone is a safety rule, not a preference
(`start_move`): only with the witness's grant, and only on the host whose disk is
the current one, i.e. the witness's last owner. A pair that never ran starts on
the site's preferred CoServer. A host whose peer ran the guest last never starts
it from its own, possibly older, disk: it waits for the peer (or an operator
forces it, later). Pure, so every case is a unit test.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path

from coserver.controller.errors import ConfigError
from coserver.controller.roles import Role
from coserver.controller.statemachine import FtState
from coserver.sys.proc import boot_id


@dataclass(frozen=True)
class Desired:
    """What the operator asked of this FT server on this host."""

    run: bool = False          # `server start` / `server stop`
    enabled: bool = False      # `server enable` / `server disable`: start when the host boots
    since: float = 0.0
    why: str = ""
    boot: str = ""             # the host's boot id when this was asked: a reboot is told from a restart

    @classmethod
    def load(cls, path: Path, default: Desired) -> Desired:
        """The saved wish, or `default` when none was saved; a damaged file is an error, not a guess."""
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return default
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{path}: unreadable ({exc}); fix or remove it") from exc
        try:
            return cls(run=bool(data["run"]), enabled=bool(data.get("enabled", False)),
                       since=float(data.get("since", 0.0)), why=str(data.get("why", "")),
                       boot=str(data.get("boot", "")))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{path}: not a desired-state record ({exc})") from exc

    def save(self, path: Path) -> None:
        """Atomically, 0600: a crash leaves the old wish or the new one, never half of one."""
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(asdict(self)) + "\n")
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)

    def asked(self, *, run: bool | None = None, enabled: bool | None = None, why: str) -> Desired:
        return Desired(run=self.run if run is None else run,
                       enabled=self.enabled if enabled is None else enabled, since=time.time(), why=why,
                       boot=boot_id())


def after_restart(saved: Desired, current_boot: str) -> Desired:
    """What to do when the controller starts: a controller restart keeps the last wish; after a host
    reboot an enabled server runs and any other stays stopped (`server enable` asked for that)."""
    if saved.boot == current_boot:
        return saved
    return Desired(run=saved.enabled, enabled=saved.enabled, since=time.time(), boot=current_boot,
                   why="host booted: enabled, starting" if saved.enabled else "host booted: not enabled, stopped")


class StartMove(StrEnum):
    NONE = "none"
    START_SIMPLEX = "start_simplex"


@dataclass(frozen=True)
class StartView:
    """What the start decision looks at."""

    host: str
    preferred: bool             # this host is the site's preferred CoServer
    run: bool                   # the operator wants the FT server running
    role: Role
    state: FtState
    maintenance: bool
    busy: bool
    witness_reachable: bool
    owner_alive: bool           # someone holds the witness's lease now
    last_owner: str | None      # the witness's last owner (alive or not); None: the pair never ran
    peer_heard: bool
    peer_role: str | None


def start_move(v: StartView) -> tuple[StartMove, str]:
    """Start the guest alone here now? And why (not)."""
    if not v.run:
        return StartMove.NONE, "stopped by the operator"
    if v.role != Role.NONE or v.busy:
        return StartMove.NONE, "a guest side runs here already" if v.role != Role.NONE else "busy"
    if v.maintenance:
        return StartMove.NONE, "in maintenance"
    if v.state not in (FtState.STOPPED, FtState.STARTING):
        return StartMove.NONE, f"state {v.state}: only a stopped side starts the guest"
    if v.peer_heard and v.peer_role not in (None, Role.NONE.value):
        return StartMove.NONE, f"the peer runs a {v.peer_role}: join it instead"
    if not v.witness_reachable:
        return StartMove.NONE, "the witness does not answer: never start the guest alone without its grant"
    if v.owner_alive:
        return StartMove.NONE, f"{v.last_owner} holds the witness's lease"
    if v.last_owner is None:
        if v.preferred:
            return StartMove.START_SIMPLEX, "first start of this FT server: on the preferred CoServer"
        return StartMove.NONE, "first start: the preferred CoServer starts the guest"
    if v.last_owner == v.host:
        return StartMove.START_SIMPLEX, "this host ran the guest last: its disk is the current one"
    return StartMove.NONE, (f"{v.last_owner} ran the guest last and has the current disk: "
                            "it starts the guest; this host joins as its secondary")
