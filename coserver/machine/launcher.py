"""Start, watch, signal and stop one QEMU process, safely across controller restarts.

Why it looks like this:

* argv is a list, never a shell string: no quoting bugs, no shell in between.
* QEMU runs in its own session (setsid): a Ctrl-C or a dying controller does
  not take the guest down; a restarted controller re-attaches (attach()).
* no -daemonize: we keep QEMU as our child while we live (exit status, no
  double fork); its stdout/stderr are appended to <workdir>/<name>.log.
* umask 077 in the child: the QMP sockets QEMU creates are never reachable by
  other users, not even for a moment; we chmod them 0600 as well.
* a pid alone is not an identity: pids are reused. We record the process's
  start time (/proc/<pid>/stat field 22) and the boot id, and signal only a
  process that still has them, through a pidfd so the check and the signal
  cannot race. A stale pidfile or record never kills somebody else.

Files, for name N in workdir:
    N.log   QEMU's output, appended, one header line per start
    N.pid   written by QEMU (-pidfile)
    N.json  our record {pid, starttime, boot_id, argv, args, netns}, for attach()
    N.qmp   QMP socket for callers (QmpSession)
    N.ctl   QMP socket private to the launcher (stop() sends `quit` there), so
            stop never waits behind a caller's session: a QEMU monitor serves
            one client at a time.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypeVar

from coserver import log
from coserver.machine.errors import LaunchError
from coserver.machine.qemuopts import qemu_opt_value
from coserver.paths import QemuInstall, qemu_install
from coserver.qmp.session import QmpSession
from coserver.sys.netns import exec_argv
from coserver.sys.proc import ProcessError, ProcessRecord, cpu_clock_ns

T = TypeVar("T")
StopHow = Literal["gone", "quit", "term", "kill"]

_log = log.get("launcher")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_SUN_PATH_MAX = 107  # sizeof(sockaddr_un.sun_path) - 1 on Linux
_POLL = 0.02
#: What starts the header line start() appends to N.log before each QEMU it runs.
START_MARK = "--- coserver "


def last_words(log_path: Path) -> str:
    """The last line a QEMU itself wrote to `log_path` (our start headers skipped), or "no output".

    A controller may start the next QEMU (appending its header) before anyone reads why the last one
    died; the header is never the reason, the dead QEMU's own line before it is."""
    try:
        text = log_path.read_text(errors="replace")
    except OSError:
        return "no output"
    for line in reversed(text.splitlines()):
        if line.strip() and not line.startswith(START_MARK):
            return line.strip()
    return "no output"


def qmp_argv(path: str | Path) -> list[str]:
    """QEMU options for a QMP monitor QEMU serves on unix socket `path`.

    wait=off: QEMU does not block its start-up until a client connects. A comma in the path is
    doubled (QEMU's option syntax); -pidfile takes its path whole, unescaped.
    """
    return ["-qmp", f"unix:{qemu_opt_value(path)},server=on,wait=off"]


def _run_async(fn: Callable[[], Awaitable[T]], timeout: float) -> T:
    """Run fn() on a private event loop in a worker thread, waiting at most timeout s.

    stop() is synchronous (usable from plain code and __exit__) yet may be
    called with an event loop already running (the controller), where
    asyncio.run() is not allowed.
    """
    values: list[T] = []
    errors: list[BaseException] = []

    async def call() -> T:
        return await fn()

    def target() -> None:
        try:
            values.append(asyncio.run(call()))
        except BaseException as exc:  # handed to the caller below
            errors.append(exc)

    worker = threading.Thread(target=target, name="coserver-qmp-sync", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise TimeoutError
    if errors:
        raise errors[0]
    return values[0]


class QemuProcess:
    """One QEMU run by coserver: start(), stop(), signals, re-attach."""

    def __init__(self, name: str, args: Sequence[str], workdir: str | Path, *,
                 netns: str | None = None, start_timeout: float = 30.0,
                 qemu: QemuInstall | None = None) -> None:
        """args: QEMU options only; the launcher adds -L firmware dirs, its two
        QMP sockets and -pidfile. The binary is `qemu` (a QemuInstall from
        coserver.paths, e.g. a candidate under test), else paths.qemu_install()."""
        if not _NAME_RE.match(name):
            raise LaunchError(f"bad QEMU process name {name!r} (letters, digits, '._-')")
        if isinstance(args, (str, bytes)):
            raise TypeError("QEMU args must be a list of strings, not one string")
        self.name = name
        self.args = [str(a) for a in args]
        self.workdir = Path(workdir)
        self.netns = netns
        self.start_timeout = start_timeout
        self.qemu = qemu
        self.argv: list[str] | None = None
        self._popen: subprocess.Popen[bytes] | None = None
        self._record: ProcessRecord | None = None

    # -- paths ----------------------------------------------------------------------

    def _file(self, suffix: str) -> Path:
        return self.workdir / f"{self.name}.{suffix}"

    @property
    def log_path(self) -> Path:
        return self._file("log")

    @property
    def pid_path(self) -> Path:
        return self._file("pid")

    @property
    def record_path(self) -> Path:
        return self._file("json")

    @property
    def qmp_path(self) -> Path:
        """The QMP socket for callers: QmpSession.connect(p.qmp_path, ...)."""
        return self._file("qmp")

    @property
    def ctl_path(self) -> Path:
        return self._file("ctl")

    # -- state ----------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """QEMU's pid (None before start)."""
        return self._record.pid if self._record else None

    @property
    def returncode(self) -> int | None:
        """Exit status once QEMU ended, if we are its parent (not after attach())."""
        return self._popen.poll() if self._popen else None

    def alive(self) -> bool:
        """True while the QEMU we started (same pid AND start time) runs."""
        return self.cpu_ticks() is not None

    def cpu_ticks(self) -> int | None:
        """The CPU time our QEMU has used (clock ticks, all threads); None once it is gone."""
        if self._popen is not None:
            self._popen.poll()  # reap a zombie child
        return self._record.cpu_ticks() if self._record is not None else None

    def proc_state(self) -> str | None:
        """Our QEMU's /proc state letter (R, S, T when stopped, Z...), None once it is not our process."""
        if self._popen is not None:
            self._popen.poll()  # reap a zombie child
        return self._record.state() if self._record is not None else None

    def cpu_ns(self) -> int | None:
        """The CPU time our QEMU has used, in ns (sys.proc.cpu_clock_ns: one clock_gettime, fine
        enough to see an idle guest's QEMU move in every 0.1 s). No identity or zombie check: a watcher
        that acts on it checks proc_state() too. None when no QEMU was started or it is reaped."""
        return cpu_clock_ns(self._record.pid) if self._record is not None else None

    def build_argv(self) -> list[str]:
        """The full command line start() runs."""
        qemu = self.qemu or qemu_install()
        argv = [str(qemu.system), *qemu.firmware_args(), *self.args,
                *qmp_argv(self.qmp_path), *qmp_argv(self.ctl_path),
                "-pidfile", str(self.pid_path)]
        return exec_argv(self.netns, argv)

    # -- start ----------------------------------------------------------------------

    def start(self) -> QemuProcess:
        """Start QEMU and return once its QMP monitors answer.

        Raises LaunchError (with the log's last lines) if QEMU exits or does
        not come up within start_timeout; nothing is left running then.
        """
        if self._record is not None:
            raise LaunchError(f"{self.workdir}/{self.name}: already started (pid {self.pid})")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._clear_stale()
        for sock in (self.qmp_path, self.ctl_path):
            if len(os.fsencode(sock)) > _SUN_PATH_MAX:
                raise LaunchError(f"{sock}: socket path longer than {_SUN_PATH_MAX} bytes; "
                                  "use a shorter workdir")
        self.argv = self.build_argv()
        fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        try:
            stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
            os.write(fd, f"{START_MARK}{stamp} start {self.name}: {shlex.join(self.argv)}\n".encode())
            log_offset = os.lseek(fd, 0, os.SEEK_END)
            try:
                self._popen = subprocess.Popen(
                    self.argv, stdin=subprocess.DEVNULL, stdout=fd, stderr=fd,
                    start_new_session=True, umask=0o077, close_fds=True)
            except OSError as exc:
                raise LaunchError(f"{self.name}: cannot run {self.argv[0]}: {exc}") from exc
        finally:
            os.close(fd)
        try:
            self._wait_ready(log_offset)
        except BaseException:
            self._popen.kill()  # our direct child: safe to kill by Popen
            if self._record is not None:  # the pidfile's pid, should it differ
                self._record.signal(signal.SIGKILL)
            self._popen.wait()
            self._record = None
            self._remove_files()
            raise
        _log.info("qemu.started", name=self.name, pid=self.pid, netns=self.netns,
                  log=str(self.log_path))
        return self

    def _clear_stale(self) -> None:
        """Refuse if our record names a live QEMU; else drop files of a previous run."""
        try:
            old = self._read_record(self.workdir, self.name)
        except LaunchError:
            old = None
        if old is not None and old[0].alive():
            raise LaunchError(f"{self.record_path}: QEMU {self.name} already runs as pid "
                              f"{old[0].pid}; attach() to it or stop it first")
        self._remove_files()

    def _remove_files(self) -> None:
        for path in (self.pid_path, self.qmp_path, self.ctl_path, self.record_path):
            path.unlink(missing_ok=True)

    def _wait_ready(self, log_offset: int) -> None:
        """Wait for pidfile, then both sockets, then a QMP answer; fail fast if QEMU exits.

        Not just the greeting: QMP monitors greet from their own I/O thread
        while QEMU is still creating devices (and may still fail). Commands run
        in the main loop, which starts only once initialisation is complete.
        """
        assert self._popen is not None
        end = time.monotonic() + self.start_timeout
        stage, probe_error = "pidfile", ""
        while True:
            rc = self._popen.poll()
            if rc is not None:
                raise LaunchError(f"{self.name}: QEMU exited with status {rc} while starting: "
                                  f"{self._log_tail(log_offset)} (log {self.log_path})")
            if time.monotonic() > end:
                raise LaunchError(f"{self.name}: QEMU not ready within {self.start_timeout} s "
                                  f"(waiting for {stage}{probe_error}); log {self.log_path}")
            if stage == "pidfile":
                pid = self._read_pidfile()
                if pid is not None:
                    if pid != self._popen.pid:
                        _log.warning("qemu.pidfile.mismatch",
                                     name=self.name, pidfile=pid, spawned=self._popen.pid)
                    try:
                        self._record = ProcessRecord.of(pid)
                    except ProcessError:  # exited already: poll() reports it next round
                        continue
                    self._write_record()
                    stage = "QMP sockets"
                    continue
            elif stage == "QMP sockets":
                if self.qmp_path.exists() and self.ctl_path.exists():
                    for sock in (self.qmp_path, self.ctl_path):
                        os.chmod(sock, 0o600)
                    stage = "a QMP answer"
                    continue
            else:
                try:
                    self._probe(max(0.1, end - time.monotonic()))
                    return
                except Exception as exc:  # noqa: BLE001 - QEMU exit is checked next round
                    probe_error = f": {exc}"
            time.sleep(_POLL)

    def _probe(self, timeout: float) -> None:
        """One query-status over the private monitor; raises if QEMU does not answer.

        The connect part is kept short so that _wait_ready notices soon when
        QEMU exited and left its socket file behind (connect keeps retrying).
        """
        async def probe() -> None:
            end = time.monotonic() + timeout
            async with await QmpSession.connect(self.ctl_path, name=f"{self.name}-ctl",
                                                connect_timeout=min(1.0, timeout)) as session:
                await session.execute("query-status", deadline=max(0.05, end - time.monotonic()))
        _run_async(probe, timeout + 3.0)

    def _read_pidfile(self) -> int | None:
        try:
            text = self.pid_path.read_text().strip()
        except FileNotFoundError:
            return None
        return int(text) if text.isdigit() else None  # may be caught half-written

    def _record_data(self) -> dict[str, Any]:
        """What N.json says of this QEMU: its identity (pid, start time, boot) and how it was run."""
        assert self._record is not None
        return {"pid": self._record.pid, "starttime": self._record.starttime,
                "boot_id": self._record.boot, "argv": self.argv, "args": self.args,
                "netns": self.netns}

    def _write_record(self) -> None:
        data = self._record_data()
        tmp = self.record_path.with_suffix(".json.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
        os.replace(tmp, self.record_path)

    def _log_tail(self, offset: int, lines: int = 3) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                text = f.read().decode(errors="replace")
        except OSError:
            return "(no log)"
        tail = [ln.strip() for ln in text.splitlines() if ln.strip()][-lines:]
        return " | ".join(tail) if tail else "(log empty)"

    # -- re-attach ------------------------------------------------------------------

    @staticmethod
    def _read_record(workdir: Path, name: str) -> tuple[ProcessRecord, dict[str, Any]]:
        path = Path(workdir) / f"{name}.json"
        try:
            data = json.loads(path.read_text())
            record = ProcessRecord(int(data["pid"]), int(data["starttime"]), str(data["boot_id"]))
        except FileNotFoundError as exc:
            raise LaunchError(f"{path}: no QEMU record") from exc
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise LaunchError(f"{path}: unreadable QEMU record ({exc})") from exc
        return record, data

    @classmethod
    def attach(cls, workdir: str | Path, name: str) -> QemuProcess:
        """Re-attach to a QEMU started earlier (e.g. by a controller that restarted).

        Raises LaunchError unless the recorded pid still is that very process
        (same start time, same boot) and its pidfile agrees.
        """
        record, data = cls._read_record(Path(workdir), name)
        proc = cls(name, data.get("args", []), workdir, netns=data.get("netns"))
        if not record.alive():
            raise LaunchError(f"{proc.record_path}: pid {record.pid} is not the QEMU we started "
                              "(it exited, or the pid was reused)")
        if proc._read_pidfile() != record.pid:
            raise LaunchError(f"{proc.pid_path}: does not name pid {record.pid} of our record")
        proc._record = record
        proc.argv = list(data.get("argv", []))
        _log.info("qemu.attached", name=name, pid=record.pid)
        return proc

    # -- signals --------------------------------------------------------------------

    def kill(self, sig: int = signal.SIGKILL) -> bool:
        """Signal QEMU if it still is the process we started; False if it is gone."""
        if self._popen is not None:
            self._popen.poll()
        return self._record is not None and self._record.signal(sig)

    def pause(self, timeout: float = 2.0) -> None:
        """SIGSTOP QEMU (fault injection: a hung QEMU); returns once it is stopped.

        Signals are delivered asynchronously; waiting makes "QEMU is frozen
        now" true for the caller's next step.
        """
        if not self.kill(signal.SIGSTOP):
            raise LaunchError(f"{self.name}: cannot pause, QEMU is not running")
        self._wait_state(lambda st: st in ("T", "t"), timeout, "stop")

    def resume(self, timeout: float = 2.0) -> None:
        """SIGCONT QEMU after pause(); returns once it runs again."""
        if not self.kill(signal.SIGCONT):
            raise LaunchError(f"{self.name}: cannot resume, QEMU is not running")
        self._wait_state(lambda st: st not in ("T", "t"), timeout, "continue")

    def _wait_state(self, ok: Callable[[str], bool], timeout: float, what: str) -> None:
        assert self._record is not None
        end = time.monotonic() + timeout
        while True:
            st = self._record.state()
            if st is None or st == "Z":
                raise LaunchError(f"{self.name}: QEMU pid {self.pid} exited")
            if ok(st):
                return
            if time.monotonic() >= end:
                raise LaunchError(f"{self.name}: QEMU pid {self.pid} did not {what} "
                                  f"within {timeout} s (state {st})")
            time.sleep(0.005)

    # -- stop -----------------------------------------------------------------------

    def stop(self, timeout: float = 10.0) -> StopHow:
        """Stop QEMU: QMP `quit`, then SIGTERM, then SIGKILL; returns which one did it.

        quit and SIGTERM get timeout/2 each, SIGKILL up to 5 s more. A paused
        (SIGSTOP'ed) QEMU is continued first. Files other than the log are
        removed once QEMU is gone. "gone": it was not running.
        """
        how: StopHow = "gone"
        if self.alive():
            # Unconditionally: a SIGSTOP may be pending and not yet show in /proc,
            # and a stopped QEMU neither answers quit nor acts on SIGTERM.
            self.kill(signal.SIGCONT)
            steps: list[tuple[StopHow, Callable[[float], object], float]] = [
                ("quit", self._quit, timeout / 2),
                ("term", lambda _t: self.kill(signal.SIGTERM), timeout / 2),
                ("kill", lambda _t: self.kill(signal.SIGKILL), 5.0),
            ]
            for step, action, grace in steps:
                end = time.monotonic() + grace
                action(grace)
                if self._wait_exit(end - time.monotonic()):
                    how = step
                    break
            else:
                raise LaunchError(f"{self.name}: pid {self.pid} survived SIGKILL (stuck in the kernel?)")
        if self._popen is not None:
            # A leader whose threads still exit shows "Z" but cannot be reaped yet.
            try:
                self._popen.wait(5.0)
            except subprocess.TimeoutExpired:
                _log.warning("qemu.reap.failed", name=self.name, pid=self.pid)
        self._remove_files()
        _log.info("qemu.stopped", name=self.name, pid=self.pid, how=how, returncode=self.returncode)
        return how

    def _quit(self, grace: float) -> None:
        """Ask QEMU to quit over the private monitor; any failure just moves stop() on."""
        async def quit_() -> None:
            async with await QmpSession.connect(self.ctl_path, name=f"{self.name}-ctl",
                                                connect_timeout=grace / 2,
                                                default_deadline=grace / 2) as session:
                await session.execute("quit")
        try:
            _run_async(quit_, grace + 1.0)
        except Exception as exc:  # noqa: BLE001 - any failure: fall through to SIGTERM
            _log.info("qemu.quit.failed", name=self.name, error=str(exc) or repr(exc))

    def _wait_exit(self, timeout: float) -> bool:
        """Wait up to timeout s for QEMU to be gone (a zombie counts as gone)."""
        end = time.monotonic() + max(0.0, timeout)
        while True:
            if not self.alive():
                return True
            if time.monotonic() >= end:
                return False
            time.sleep(_POLL)

    # -- context manager ------------------------------------------------------------

    def __enter__(self) -> QemuProcess:
        if self._record is None:
            self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<QemuProcess {self.name} pid={self.pid} workdir={self.workdir}>"
