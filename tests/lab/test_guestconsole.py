"""The console reader that turns a guest's kernel crash into a failed trial (pure logic: files only)."""

from __future__ import annotations

from pathlib import Path

from coserver.lab.guestconsole import ConsoleWatch, crash_lines

#: Lines a lab secondary printed between checkpoints (TCG, live protection, before QEMU patch 8).
OOPS = """cs-init: ready disk=/dev/vda ip=10.201.0.10/24 gw=none port=7777 build=0de13d27bf55ab1f7449
journal: listening on 0.0.0.0:7777, /data/journal.log holds 1353 records
[  116.708752] general protection fault, probably for non-canonical address 0xdead00000000012a: 0000 [#1]
[  116.708752] RIP: 0010:__run_timers+0x1e8/0x2c0
[  116.708752] Kernel panic - not syncing: Fatal exception in interrupt
[  130.501055] kernel BUG at mm/slub.c:419!
[   87.136640] BUG: unable to handle page fault for address: 0000000000014917
[   87.136640] Oops: 0010 [#1] PREEMPT SMP NOPTI
"""


class _Lab:
    """Only what ConsoleWatch reads of a lab: where each host keeps the server's files."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def server_dir(self, host: str, server: str | None = None) -> Path:
        return self.root / host / (server or "journal")


def test_crash_lines_are_the_kernel_reports_only():
    lines = crash_lines(OOPS)
    assert len(lines) == 5
    assert lines[0].startswith("[  116.708752] general protection fault")
    assert not any("journal: listening" in ln or "RIP:" in ln for ln in lines)
    assert crash_lines("cs-init: ready\njournal: listening on 0.0.0.0:7777\n") == []


def test_only_crashes_printed_after_the_watch_starts_count(tmp_path):
    lab = _Lab(tmp_path)
    for host in ("cs1", "cs2"):
        lab.server_dir(host).mkdir(parents=True)
    old = "[   87.136640] Oops: 0010 [#1] PREEMPT SMP NOPTI\n"
    (lab.server_dir("cs1") / "serial.log").write_text("boot\n" + old)
    watch = ConsoleWatch(lab)                       # cs2 has no log yet: a QEMU starting
    assert watch.crashes() == []
    (lab.server_dir("cs1") / "serial.log").write_text("boot\n" + old + "[  130.5] kernel BUG at mm/slub.c:419!\n")
    (lab.server_dir("cs2") / "serial.log").write_text(OOPS)      # cs2's first QEMU writes its log
    found = watch.crashes()
    assert found[0] == "cs1: [  130.5] kernel BUG at mm/slub.c:419!"
    assert len(found) == 1 + 5 and all(f.startswith("cs2: ") for f in found[1:])
