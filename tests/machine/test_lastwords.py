"""A dead QEMU's reason is its own last line, not the start header of the QEMU started after it."""

from __future__ import annotations

from coserver.machine.launcher import START_MARK, last_words


def test_the_next_start_header_does_not_hide_why_the_last_qemu_died(tmp_path):
    log = tmp_path / "vm.log"
    log.write_text(f"{START_MARK}2026-12-02T08:58:40+00:00 start vm: qemu -incoming defer\n"
                   "qemu-system-x86_64: memory.c:2683: Assertion `!subregion->container' failed.\n\n"
                   f"{START_MARK}2026-12-02T08:58:49+00:00 start vm: qemu -incoming defer\n")
    assert last_words(log) == "qemu-system-x86_64: memory.c:2683: Assertion `!subregion->container' failed."


def test_the_last_qemu_line_wins_and_silence_says_so(tmp_path):
    log = tmp_path / "vm.log"
    log.write_text(f"{START_MARK}x start vm: qemu\nfirst\n{START_MARK}y start vm: qemu\nsecond\n")
    assert last_words(log) == "second"
    log.write_text(f"{START_MARK}y start vm: qemu\n")
    assert last_words(log) == "no output"
    assert last_words(tmp_path / "absent.log") == "no output"
