"""Process identities that survive pid reuse, and long-running helper processes (controllers, etcd).

A process is identified by pid + start time + boot id (ProcessRecord); the QEMU
launcher records its QEMU that way, and start() records other processes in
<dir>/<name>.proc.json, so `lab down` after a crash stops exactly the
processes the lab started and nothing else.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from coserver.errors import CoserverError
from coserver.sys.netns import exec_argv


class ProcessError(CoserverError):
    """A process did not start, or no longer is the process recorded."""


@functools.cache
def boot_id() -> str:
    """This boot's id: a record from before a reboot describes no living process.

    Read once: it cannot change while this process runs (a reboot ends it), and the controller
    asks at every liveness check of its QEMU (several times a tick)."""
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


#: /proc/<pid>/stat is a few hundred bytes (comm is at most 15 characters): one read takes it all.
_STAT_MAX = 4096


def _proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, starttime, CPU ticks: utime + stime of all its threads) of pid from /proc/<pid>/stat,
    None if no such process.

    Plain os.open/os.read: the controller checks its QEMU this way about 25 times a second, and
    Path.read_text's text layer costs five more system calls per read (fstat, ioctl, lseek...)."""
    try:
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, ProcessLookupError):
        return None
    try:
        data = os.read(fd, _STAT_MAX).decode("utf-8", "replace")
    except ProcessLookupError:   # the process ended between open and read (ESRCH)
        return None
    finally:
        os.close(fd)
    # comm (field 2) may contain spaces and ')': fields 3.. follow the last ')'.
    rest = data[data.rindex(")") + 2:].split()
    return rest[0], int(rest[22 - 3]), int(rest[14 - 3]) + int(rest[15 - 3])


def _process_cpu_clock(pid: int) -> int:
    """The POSIX CPU-time clock of process `pid` (all its threads), as clock_getcpuclockid(3) makes
    it: MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED) of linux/posix-timers.h."""
    return ((~pid) << 3) | 2


def cpu_clock_ns(pid: int) -> int | None:
    """CPU time process `pid` has used so far (user + system, all threads) in nanoseconds, from its
    CPU-time clock: one clock_gettime, no /proc read. None once it is gone (reaped).

    Nanoseconds, not /proc's 10 ms clock ticks: an idle guest's QEMU under TCG uses ~1-2 ms per
    0.1 s, so its tick count stands still for many 0.1 s samples and looked stalled to a tick-based
    watcher (which then probed QMP up to 10 times a second). No identity check: the caller checks
    that the pid is still its process (ProcessRecord) before acting on what this says."""
    try:
        return time.clock_gettime_ns(_process_cpu_clock(pid))
    except OSError:   # EINVAL: no such process (any more)
        return None


@dataclass(frozen=True)
class ProcessRecord:
    """A process identity that survives pid reuse: pid + start time + boot id."""

    pid: int
    starttime: int
    boot: str

    @classmethod
    def of(cls, pid: int) -> ProcessRecord:
        """The identity of the process that has `pid` now."""
        stat = _proc_stat(pid)
        if stat is None:
            raise ProcessError(f"pid {pid}: no such process")
        return cls(pid, stat[1], boot_id())

    def state(self) -> str | None:
        """The process's /proc state letter (R, S, T, Z...), None if it is not ours any more."""
        stat = _proc_stat(self.pid)
        if stat is None or stat[1] != self.starttime or self.boot != boot_id():
            return None
        return stat[0]

    def alive(self) -> bool:
        """Still our process and not a zombie."""
        return self.state() not in (None, "Z", "X")

    def cpu_ticks(self) -> int | None:
        """CPU time it has used so far (user + system, all threads, in clock ticks); None unless it
        is still our process and alive. One read: a watcher's liveness check and CPU sample at once."""
        stat = _proc_stat(self.pid)
        if stat is None or stat[1] != self.starttime or self.boot != boot_id() or stat[0] in ("Z", "X"):
            return None
        return stat[2]

    def signal(self, sig: int) -> bool:
        """Send sig if the pid still is our process; False (nothing sent) otherwise."""
        try:
            fd = os.pidfd_open(self.pid)
        except ProcessLookupError:
            return False
        except OSError:  # no pidfd support: check-then-kill, with a tiny race
            fd = -1
        try:
            if not self.alive():
                return False
            if fd >= 0:
                signal.pidfd_send_signal(fd, sig)
            else:
                os.kill(self.pid, sig)
            return True
        except ProcessLookupError:
            return False
        finally:
            if fd >= 0:
                os.close(fd)


def record_path(directory: Path, name: str) -> Path:
    return directory / f"{name}.proc.json"


def start(name: str, argv: list[str], directory: Path, *, netns: str | None = None) -> ProcessRecord:
    """Start argv (in netns) in its own session, output to <dir>/<name>.out; record it."""
    full = exec_argv(netns, argv)
    with open(directory / f"{name}.out", "ab") as out:
        proc = subprocess.Popen(full, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, cwd="/", umask=0o077)
    time.sleep(0.05)
    if proc.poll() is not None:
        raise ProcessError(f"{name} exited at once: {last_line(directory / f'{name}.out')}")
    rec = ProcessRecord.of(proc.pid)
    record_path(directory, name).write_text(json.dumps({"pid": rec.pid, "starttime": rec.starttime,
                                                        "boot": rec.boot, "argv": full}) + "\n")
    return rec


def load(directory: Path, name: str) -> ProcessRecord | None:
    """The process start() recorded as `name` if it still runs (same identity), else None."""
    return load_record(record_path(directory, name))


def load_record(path: Path) -> ProcessRecord | None:
    """The process a record file ({pid, starttime, boot, ...}) names if it still runs, else None."""
    try:
        data = json.loads(path.read_text())
        rec = ProcessRecord(data["pid"], data["starttime"], data["boot"])
    except (OSError, ValueError, KeyError):
        return None
    return rec if rec.alive() else None


def stop(directory: Path, name: str, timeout: float = 5.0) -> bool:
    """SIGTERM, then SIGKILL after `timeout`; True if a live process was stopped."""
    rec = load(directory, name)
    record_path(directory, name).unlink(missing_ok=True)
    if rec is None:
        return False
    rec.signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while rec.alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    if rec.alive():
        rec.signal(signal.SIGKILL)
    return True


def last_line(path: Path) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no output"
    return lines[-1].strip() if lines else "no output"


def pin_threads(pid: int, cpus: set[int]) -> int:
    """Restrict every thread of process `pid` to `cpus` (threads it starts later inherit the affinity
    of the thread that starts them); returns how many threads were pinned. What the bench uses to
    run each CoServer's QEMU on a core of its own, as two hosts would."""
    try:
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError as exc:
        raise ProcessError(f"process {pid}: cannot list its threads ({exc.strerror or exc})") from None
    pinned = 0
    for tid in tids:
        try:
            os.sched_setaffinity(tid, cpus)
            pinned += 1
        except ProcessLookupError:
            continue   # a thread that ended meanwhile
        except OSError as exc:
            raise ProcessError(f"process {pid}: cannot pin thread {tid} to CPUs {sorted(cpus)} "
                               f"({exc.strerror or exc})") from None
    return pinned
