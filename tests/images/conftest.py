"""Fixtures for the images tests: the cached lab guest, a host-run journal, booted guests.

Guests are started with subprocess directly (argv list, own session, -pidfile, stderr to a
log file) until the QMP/launcher layer exists. Every process a fixture starts is ended by its
pid at teardown, and only those.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from coserver.images.journal_client import JournalClient, wait_for_journal
from coserver.images.labguest import GUEST_SRC, LabGuest, build_lab_guest, compile_journal
from coserver.paths import qemu_install

GUEST_IP, GUEST_PREFIX, GUEST_GW = "10.0.2.15", 24, "10.0.2.2"  # QEMU user-mode network
BOOT_TIMEOUT = 90.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _end(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    if proc.poll() is None:
        try:
            os.kill(proc.pid, sig)
        except ProcessLookupError:
            pass
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


@pytest.fixture(scope="session")
def lab_guest() -> LabGuest:
    """The lab guest from the cache (built on first use, ~10-60 s)."""
    return build_lab_guest()


# ---------------------------------------------------------------- journal on the host


@dataclass
class HostJournal:
    """The guest's journal binary run on the host, on 127.0.0.1 and a free port."""

    binary: Path
    file: Path
    log: Path
    proc: subprocess.Popen | None = None
    port: int = 0

    def _listening(self) -> list[str]:
        text = self.log.read_text() if self.log.exists() else ""
        return re.findall(r"listening on 127\.0\.0\.1:(\d+)", text)

    def start(self) -> HostJournal:
        assert self.proc is None or self.proc.poll() is not None
        before = len(self._listening())
        with open(self.log, "a") as logf:
            self.proc = subprocess.Popen([str(self.binary), "-a", "127.0.0.1", "-p", "0",
                                          "-f", str(self.file)], stdin=subprocess.DEVNULL,
                                         stdout=logf, stderr=logf, start_new_session=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            ports = self._listening()
            if len(ports) > before:
                self.port = int(ports[-1])
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"journal exited {self.proc.returncode}: {self.log.read_text()}")
            time.sleep(0.02)
        raise RuntimeError(f"journal did not start: {self.log.read_text()}")

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.proc is not None:
            _end(self.proc, signal.SIGKILL)

    def restart(self) -> HostJournal:
        self.kill()
        return self.start()

    def client(self) -> JournalClient:
        return JournalClient("127.0.0.1", self.port)


@pytest.fixture(scope="session")
def journal_binary(tmp_path_factory) -> Path:
    """journal.c compiled as build_lab_guest compiles it (no kernel download needed)."""
    out = tmp_path_factory.mktemp("journal-bin") / "journal"
    compile_journal(GUEST_SRC / "journal.c", out)
    return out


@pytest.fixture
def host_journal(journal_binary: Path, tmp_path: Path):
    """A fresh journal (empty file) running on the host; ended by pid at teardown."""
    j = HostJournal(binary=journal_binary, file=tmp_path / "journal.log",
                    log=tmp_path / "journal.stderr")
    j.start()
    yield j
    j.kill()


# ---------------------------------------------------------------- guests under QEMU (TCG)


@dataclass
class GuestVM:
    """One QEMU running the lab guest with user-mode networking and a hostfwd to the journal."""

    proc: subprocess.Popen
    port: int
    disk: Path
    serial: Path
    qemu_log: Path
    pidfile: Path
    started_at: float = 0.0   # time.monotonic() at Popen
    booted_in: float = 0.0    # seconds from Popen to the journal answering

    def wait_ready(self, timeout: float = BOOT_TIMEOUT) -> JournalClient:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"QEMU exited {self.proc.returncode}: "
                                   f"{self.qemu_log.read_text()[-2000:]}")
            try:
                c = wait_for_journal("127.0.0.1", self.port, timeout=min(5.0, deadline - time.monotonic()))
                self.booted_in = time.monotonic() - self.started_at
                return c
            except Exception as exc:
                if time.monotonic() >= deadline:
                    raise RuntimeError(f"guest not ready after {timeout:.0f} s; serial: "
                                       f"{self.serial.read_text(errors='replace')[-2000:]}") from exc

    def client(self) -> JournalClient:
        return JournalClient("127.0.0.1", self.port)

    def pid(self) -> int:
        return int(self.pidfile.read_text().strip())

    def kill(self) -> None:
        """SIGKILL the QEMU we started (a hard power cut for the guest)."""
        _end(self.proc, signal.SIGKILL)


def qemu_argv(guest: LabGuest, disk: Path, port: int, serial: Path, pidfile: Path,
              extra: list[str] | None = None) -> list[str]:
    q = qemu_install()
    return [str(q.system), "-accel", "tcg", "-m", "256", "-smp", "1", "-display", "none",
            "-nodefaults", "-no-user-config", "-no-reboot", *q.firmware_args(),
            *guest.boot_args(GUEST_IP, GUEST_PREFIX, GUEST_GW),
            "-serial", f"file:{serial}",
            "-drive", f"file={disk},if=none,id=data0,format=qcow2,cache=writeback",
            "-device", "virtio-blk-pci,drive=data0",
            "-netdev", f"user,id=n0,ipv6=off,hostfwd=tcp:127.0.0.1:{port}-:7777",
            "-device", "virtio-net-pci,netdev=n0,mac=52:54:00:c5:00:01,romfile=",
            "-pidfile", str(pidfile), *(extra or [])]


@pytest.fixture(scope="session")
def boot_guest(lab_guest: LabGuest, tmp_path_factory):
    """boot(disk, name, extra=[...]) -> GuestVM, started but not yet waited for.

    Session-scoped so a guest can be shared by many tests; every QEMU it started is SIGKILLed
    by pid at the end of the session (tests that need it earlier call vm.kill()).
    """
    started: list[GuestVM] = []
    base = tmp_path_factory.mktemp("guests")

    def boot(disk: Path, name: str, extra: list[str] | None = None) -> GuestVM:
        d = base / f"{name}-{len(started)}"
        d.mkdir()
        port = free_port()
        serial, qlog, pidfile = d / "serial.log", d / "qemu.log", d / "qemu.pid"
        argv = qemu_argv(lab_guest, disk, port, serial, pidfile, extra)
        t0 = time.monotonic()
        with open(qlog, "w") as logf:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                                    start_new_session=True)
        vm = GuestVM(proc=proc, port=port, disk=disk, serial=serial, qemu_log=qlog,
                     pidfile=pidfile, started_at=t0)
        started.append(vm)
        return vm

    yield boot
    for vm in started:
        vm.kill()
