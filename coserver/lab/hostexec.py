"""Run a command as on one lab CoServer: its network namespace and its own coserver directories.

A real CoServer has its own /etc/coserver (site file, key, server specs), /var/lib/coserver
(journals, QEMU workdirs) and /run/coserver (control sockets, COLO overlays). The lab's two
hosts share one machine, so each host's processes run under this wrapper, started with
``ip netns exec <host-ns>``: that already gave the process a mount namespace of its own
(iproute2 unshares one and makes / a slave, so nothing mounted here reaches the machine).
Here the host's three private directories are bind-mounted over the standard paths, then
the command is exec'd; its children (the controller's QEMUs) inherit the view. So the
controllers run exactly the site path of a real host, and ``coserver lab exec cs1 -- CMD``
shows what ``ssh cs1 CMD`` would.

The standard paths must exist as mount points: they are made (empty) on the machine when
missing; nothing is ever written into the machine's own directories.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from coserver.errors import CoserverError
from coserver.site.load import ENV as SITE_ENV
from coserver.site.model import DEFAULT_RUN_DIR, DEFAULT_SITE, DEFAULT_STATE_DIR
from coserver.sys.run import run

ETC_DIR = DEFAULT_SITE.parent
MOUNTS = {"etc": ETC_DIR, "lib": DEFAULT_STATE_DIR, "run": DEFAULT_RUN_DIR}


class HostExecError(CoserverError):
    """The host's view could not be made (a mount failed): the command is not run."""


def host_argv(etc: Path, lib: Path, run_dir: Path, command: list[str]) -> list[str]:
    """The argv that runs `command` with these directories as the host's (wrap it in ip netns exec)."""
    return [sys.executable, "-m", "coserver.lab.hostexec", "--etc", str(etc), "--lib", str(lib),
            "--run", str(run_dir), "--", *command]


def _resolve(command: list[str]) -> list[str]:
    """`coserver` is this installation's CLI (a venv's is often not on PATH), as on a real host."""
    if command and command[0] == "coserver":
        return [sys.executable, "-m", "coserver.cli.main", *command[1:]]
    return command


def enter(dirs: dict[str, Path]) -> None:
    """Bind each private directory over its standard path in this (already private) mount namespace."""
    for key, target in MOUNTS.items():
        source = dirs[key]
        if not source.is_dir():
            raise HostExecError(f"{source}: not a directory (the host's {target})")
        target.mkdir(mode=0o755, parents=True, exist_ok=True)
        run(["mount", "--bind", str(source), str(target)], f"binding {source} over {target}", timeout=10,
            error=HostExecError)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="coserver-hostexec", description=__doc__.splitlines()[0])
    for key, target in MOUNTS.items():
        parser.add_argument(f"--{key}", type=Path, required=True, help=f"this host's {target}")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given")
    try:
        enter({key: getattr(args, key) for key in MOUNTS})
    except CoserverError as exc:  # one line, and the command does not run in the machine's view
        print(f"coserver-hostexec: error: {exc}", file=sys.stderr)
        return 125
    os.environ.pop(SITE_ENV, None)   # the host's own /etc/coserver/site.toml, never the caller's
    command = _resolve(command)
    try:
        os.execvp(command[0], command)
    except OSError as exc:
        print(f"coserver-hostexec: {command[0]}: {exc.strerror}", file=sys.stderr)
        return 127


if __name__ == "__main__":
    sys.exit(main())
