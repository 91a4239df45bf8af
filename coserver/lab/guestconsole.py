"""The lab guest's serial console, read for kernel crash reports during a trial.

Why: a COLO secondary whose RAM is not a faithful copy of its primary's runs on corrupt memory and
oopses between checkpoints. Nothing outside sees it (its output is compared, the next checkpoint
overwrites its state) until a failover hands the client that guest, crashed. Each copy's console
goes to its own host's `serial.log` (either backend), so a trial can read both: a crash on either
copy, primary or secondary, is a failed trial, whether or not the client noticed.
"""

from __future__ import annotations

import re
from pathlib import Path

from coserver.lab.lab import Lab
from coserver.lab.net import HOSTS

#: What a Linux guest prints when its kernel meets memory it did not write (or cannot go on).
CRASH = re.compile(r"Oops|general protection fault|BUG: |kernel BUG|Kernel panic|invalid opcode|"
                   r"unable to handle page fault")


def crash_lines(text: str) -> list[str]:
    """The console lines of `text` that report a kernel crash."""
    return [ln.strip() for ln in text.splitlines() if CRASH.search(ln)]


class ConsoleWatch:
    """Crash reports that appear on either host's console of one FT server after the watch starts.

    A host's serial.log is appended to by every QEMU started there, so the crash lines already in
    it when the watch starts are remembered and only new ones count (a kernel line carries its
    uptime stamp, so a new crash never equals an old one)."""

    def __init__(self, lab: Lab, server: str | None = None) -> None:
        self.paths = {h: lab.server_dir(h, server) / "serial.log" for h in HOSTS}
        self.before = {h: set(crash_lines(_read(p))) for h, p in self.paths.items()}

    def crashes(self) -> list[str]:
        """'cs2: [ 38.25] general protection fault, ...' for each new crash line, hosts in order."""
        return [f"{h}: {ln}" for h, p in self.paths.items() for ln in crash_lines(_read(p))
                if ln not in self.before[h]]


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:          # no log yet: no QEMU has run on that host
        return ""
