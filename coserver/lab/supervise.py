"""Keep one child process running: the lab's stand-in for systemd's Restart=always.

On real CoServers the controller runs under systemd (coserver-controller@.service,
Restart=always). The lab has no systemd in its namespaces, so each host's
controller runs under this small supervisor: when the controller dies (a
crash, or `lab fault kill-controller`), it is started again after `--delay`
seconds and re-attaches to the running QEMU from its journal. The child's
identity (pid + start time) is written to `--record` each time, so fault
injection kills exactly the controller, never the supervisor or a reused pid.
SIGTERM stops the child and then the supervisor.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from coserver.sys.proc import ProcessRecord


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="coserver-supervise", description=__doc__.splitlines()[0])
    parser.add_argument("--record", type=Path, required=True, help="where the child's identity is written")
    parser.add_argument("--delay", type=float, default=0.5, help="seconds before a restart")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given")
    stopping = False
    child: subprocess.Popen[bytes] | None = None

    def on_term(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    starts = 0
    while not stopping:
        child = subprocess.Popen(command)
        starts += 1
        rec = ProcessRecord.of(child.pid)
        tmp = args.record.with_suffix(".tmp")
        tmp.write_text(json.dumps({"pid": rec.pid, "starttime": rec.starttime, "boot": rec.boot,
                                   "starts": starts}) + "\n")
        tmp.replace(args.record)
        code = child.wait()
        if stopping:
            break
        print(f"coserver-supervise: {' '.join(command[:3])}... exited with {code}; restart #{starts} "
              f"in {args.delay} s",
              file=sys.stderr, flush=True)
        time.sleep(args.delay)
    if child is not None and child.poll() is None:
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
    args.record.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
