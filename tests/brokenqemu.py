"""A deliberately broken QEMU for tests: the real one, except that its COLO secondaries abort.

`make_broken_qemu(dir, qemu)` writes a `qemu-system-x86_64` wrapper (with the real qemu-img
and qemu-nbd beside it, so it can be COSERVER_QEMU or `doctor --qemu`). Unless the command
line is an incoming secondary (`-incoming`) that matches every one of `needles`, and the
`trigger` file exists (when one is given), it simply execs the real QEMU. A broken one runs
as the wrapper's child until its COLO incoming thread appears ("mig/dst/colo" in QEMU 10, named
so with debug-threads=on), waits `after_s` (about the first checkpoint), prints the assertion the q35
bug printed and aborts it with SIGABRT: what that bug looked like to a user.
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

MESSAGE = ("qemu-system-x86_64: ../system/memory.c:2683: memory_region_add_subregion_common: "
           "Assertion `!subregion->container' failed. [simulated by tests/brokenqemu.py]")

_WRAPPER = '''#!{python}
import os, signal, subprocess, sys, time
REAL = {real!r}
argv = sys.argv[1:]
line = " ".join(argv)
trigger = {trigger!r}
broken = ("-incoming" in argv and all(word in line for word in {needles!r})
          and (trigger is None or os.path.exists(trigger)))
if not broken:
    os.execv(REAL, [REAL] + argv)
child = subprocess.Popen([REAL] + argv)
for sig in (signal.SIGTERM, signal.SIGINT):
    signal.signal(sig, lambda s, f: child.send_signal(s))

def in_colo():
    try:
        for task in os.listdir(f"/proc/{{child.pid}}/task"):
            with open(f"/proc/{{child.pid}}/task/{{task}}/comm") as f:
                if f.read().strip() in ("mig/dst/colo", "COLO incoming"):
                    return True
    except OSError:
        pass
    return False

while child.poll() is None and not in_colo():
    time.sleep(0.05)
end = time.monotonic() + {after_s!r}
while child.poll() is None and time.monotonic() < end:
    time.sleep(0.05)
if child.poll() is None:
    sys.stderr.write({message!r} + "\\n")
    sys.stderr.flush()
    child.send_signal(signal.SIGABRT)
sys.exit(134 if child.wait() else 0)
'''


def make_broken_qemu(directory: Path, real_system: Path, *, needles: tuple[str, ...] = (),
                     trigger: Path | None = None, after_s: float = 1.5) -> Path:
    """Write the wrapper into `directory`; return its path."""
    directory.mkdir(parents=True, exist_ok=True)
    wrapper = directory / "qemu-system-x86_64"
    wrapper.write_text(_WRAPPER.format(python=sys.executable, real=str(real_system), needles=list(needles),
                                       trigger=str(trigger) if trigger else None, after_s=after_s,
                                       message=MESSAGE))
    wrapper.chmod(stat.S_IRWXU)
    for tool in ("qemu-img", "qemu-nbd"):
        link = directory / tool
        if not link.exists():
            os.symlink(real_system.parent / tool, link)
    return wrapper
