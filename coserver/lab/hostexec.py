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

With the libvirt backend (``--libvirt DIR``) the host also has its own libvirt: DIR/etc, DIR/run,
DIR/lib, DIR/log and DIR/cache over /etc/libvirt, /run/libvirt, /var/lib/libvirt, /var/log/libvirt
and /var/cache/libvirt, so each host's libvirtd keeps its own configuration, socket, domains and
logs, and ``coserver lab exec cs1 -- virsh list`` talks to cs1's libvirtd only. ``--no-kvm`` puts an
empty regular file, read-only, over /dev/kvm in the view: a TCG lab's libvirtd probes QEMU with KVM
whenever root may open /dev/kvm for writing (libvirt has no setting against it), and the lab must
never use KVM. A regular file on a read-only bind, not /dev/null: the kernel lets root write a device
node even on a read-only mount, so libvirt would count KVM as usable, its probe would find none, and
it would take its capabilities for stale and probe QEMU again (~2 s) on every call.

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
#: A host's libvirt directories (`--libvirt DIR`: DIR/<key> over each path).
LIBVIRT_MOUNTS = {"etc": Path("/etc/libvirt"), "run": Path("/run/libvirt"), "lib": Path("/var/lib/libvirt"),
                  "log": Path("/var/log/libvirt"), "cache": Path("/var/cache/libvirt")}
KVM_DEVICE = Path("/dev/kvm")
#: What --no-kvm binds over /dev/kvm: an empty file in the host's run directory.
NO_KVM_FILE = ".no-kvm"


class HostExecError(CoserverError):
    """The host's view could not be made (a mount failed): the command is not run."""


def host_argv(etc: Path, lib: Path, run_dir: Path, command: list[str], *, libvirt: Path | None = None,
              no_kvm: bool = False) -> list[str]:
    """The argv that runs `command` with these directories as the host's (wrap it in ip netns exec);
    libvirt: the host's libvirt directories (see the module docstring); no_kvm: hide /dev/kvm."""
    extra = (["--libvirt", str(libvirt)] if libvirt is not None else []) + (["--no-kvm"] if no_kvm else [])
    return [sys.executable, "-m", "coserver.lab.hostexec", "--etc", str(etc), "--lib", str(lib),
            "--run", str(run_dir), *extra, "--", *command]


def _resolve(command: list[str]) -> list[str]:
    """`coserver` is this installation's CLI (a venv's is often not on PATH), as on a real host."""
    if command and command[0] == "coserver":
        return [sys.executable, "-m", "coserver.cli.main", *command[1:]]
    return command


def _bind(source: Path, target: Path) -> None:
    if not source.is_dir():
        raise HostExecError(f"{source}: not a directory (the host's {target})")
    target.mkdir(mode=0o755, parents=True, exist_ok=True)
    run(["mount", "--bind", str(source), str(target)], f"binding {source} over {target}", timeout=10,
        error=HostExecError)


def enter(dirs: dict[str, Path], libvirt: Path | None = None, no_kvm: bool = False) -> None:
    """Bind each private directory over its standard path in this (already private) mount namespace
    (and the host's libvirt directories, and /dev/null over /dev/kvm: see the module docstring)."""
    for key, target in MOUNTS.items():
        _bind(dirs[key], target)
    if libvirt is not None:
        for key, target in LIBVIRT_MOUNTS.items():
            _bind(libvirt / key, target)
    if no_kvm and KVM_DEVICE.exists():
        blank = dirs["run"] / NO_KVM_FILE   # an empty regular file of the host's, bound read-only
        if not blank.is_file():
            blank.touch(mode=0o400)
        run(["mount", "--bind", "-o", "ro", str(blank), str(KVM_DEVICE)], f"hiding {KVM_DEVICE}", timeout=10,
            error=HostExecError)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="coserver-hostexec", description=__doc__.splitlines()[0])
    for key, target in MOUNTS.items():
        parser.add_argument(f"--{key}", type=Path, required=True, help=f"this host's {target}")
    parser.add_argument("--libvirt", type=Path, default=None,
                        help="this host's libvirt directories (etc, run, lib, log, cache in it)")
    parser.add_argument("--no-kvm", action="store_true", help="/dev/null over /dev/kvm (a TCG-only host)")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given")
    try:
        enter({key: getattr(args, key) for key in MOUNTS}, args.libvirt, args.no_kvm)
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
