"""Long-running lab processes other than QEMU (controllers, etcd): start in a namespace, stop by record.

Like the QEMU launcher, a process is identified by pid + start time + boot id
(launcher.ProcessRecord), written to <dir>/<name>.proc.json, so `lab down`
after a crash stops exactly the processes the lab started and nothing else.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

from coserver.errors import CoserverError
from coserver.machine.launcher import ProcessRecord


class LabProcessError(CoserverError):
    """A lab process did not start or could not be stopped."""


def record_path(directory: Path, name: str) -> Path:
    return directory / f"{name}.proc.json"


def start(name: str, argv: list[str], directory: Path, *, netns: str | None = None) -> ProcessRecord:
    """Start argv (in netns) in its own session, output to <dir>/<name>.out; record it."""
    full = (["ip", "netns", "exec", netns] if netns else []) + argv
    with open(directory / f"{name}.out", "ab") as out:
        proc = subprocess.Popen(full, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, cwd="/", umask=0o077)
    time.sleep(0.05)
    if proc.poll() is not None:
        raise LabProcessError(f"{name} exited at once: {last_line(directory / f'{name}.out')}")
    rec = ProcessRecord.of(proc.pid)
    record_path(directory, name).write_text(json.dumps({"pid": rec.pid, "starttime": rec.starttime,
                                                        "boot": rec.boot, "argv": full}) + "\n")
    return rec


def load(directory: Path, name: str) -> ProcessRecord | None:
    """The recorded process if it still runs (same identity), else None."""
    try:
        data = json.loads(record_path(directory, name).read_text())
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
