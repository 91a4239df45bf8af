"""A libvirtd per lab CoServer: the libvirt backend's daemon, run as a real host runs libvirtd.service.

Each lab host gets its own libvirt: its directories are <workdir>/<host>/libvirt/{etc,run,lib,log,cache},
bound over /etc/libvirt, /run/libvirt, /var/lib/libvirt, /var/log/libvirt and /var/cache/libvirt in the
host's view (lab.hostexec ``--libvirt``), and its libvirtd runs in the host's network namespace. So
cs1's and cs2's daemons have their own socket (/run/libvirt/libvirt-sock in each view), their own
domains, capabilities cache and QEMU logs, and ``coserver lab exec cs1 -- virsh list`` shows cs1's
domains only, as ``ssh cs1 virsh list`` would.

The monolithic ``libvirtd`` is used (Debian 12's libvirt-daemon ships it; the modular virtqemud is
not packaged there). It is started without libvirt-daemon-system (its postinst wants polkit and an
init system, and would start the machine's own libvirtd), so the lab writes the configuration the
package would have, fitted to a lab host:

- libvirtd.conf: the sockets root's alone (0600, no polkit: auth none), log lines to stderr, which
  the lab keeps in <host>/libvirtd.out;
- qemu.conf: QEMU runs as root (``+0``) with no security driver, no private /dev (``namespaces``)
  and no ownership changes: the lab's disks and kernels are root's files in root's directories;
  ``cgroup_controllers = []``: there is no systemd or machined to ask, libvirt would then make
  machine/qemu-<id>-<name> groups in the machine's own cgroup tree, and cs1's and cs2's daemons,
  both counting domain ids from 1, would make the same ones; ``stdio_handler = "file"``: QEMU's
  output goes to /var/log/libvirt/qemu/<name>.log without a virtlogd.

libvirt resolves its built-in QEMU user (``libvirt-qemu``) when the driver starts, before qemu.conf
is read, so that system user must exist (libvirt-daemon-system makes it; `make setup` makes it here).

The daemon is a lab process (coserver.sys.proc: its pid and start time recorded in <host>/libvirtd.proc.json)
and is only ever signalled by that record. libvirtd leaves its domains' QEMUs running when it exits
(that is what lets it be restarted under a running FT server), so :meth:`HostLibvirtd.stop` first
kills the QEMUs its pid files name, then the daemon; :meth:`HostLibvirtd.kill` kills the daemon
alone, as a crash would, and :meth:`HostLibvirtd.start` brings it back on the same directories
(it reconnects to the QEMUs it finds, running the hook's ``reconnect``).

The coserver QEMU hook (coserver.libvirt.hook) is installed into each host's /etc/libvirt/hooks
before its libvirtd starts (libvirtd reads its hooks at start), by ``coserver libvirt install-hook``
run in the host's view, so its run directory is the host's /run/coserver.
"""

from __future__ import annotations

import os
import pwd
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from coserver.errors import CoserverError
from coserver.lab.hostexec import LIBVIRT_MOUNTS
from coserver.sys import proc as labproc
from coserver.sys.files import write_new
from coserver.sys.proc import ProcessRecord
from coserver.sys.run import last_line

LIBVIRTD = Path("/usr/sbin/libvirtd")
VIRSH = Path("/usr/bin/virsh")
#: The QEMU driver's module: without it libvirtd starts but knows no qemu:/// URI.
QEMU_DRIVER = Path("/usr/lib/x86_64-linux-gnu/libvirt/connection-driver/libvirt_driver_qemu.so")
#: The user Debian's libvirt resolves before reading qemu.conf (its QEMU_USER).
QEMU_USER = "libvirt-qemu"
URI = "qemu:///system"
#: The name of the lab process record (<host dir>/libvirtd.proc.json) and output (<host dir>/libvirtd.out).
PROC_NAME = "libvirtd"
#: libvirtd's first answer includes probing the emulator's capabilities: a few seconds under TCG.
READY_TIMEOUT_S = 60.0
APT_HINT = "apt-get install --no-install-recommends libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients"

LIBVIRTD_CONF = """\
# Written by coserver's lab (coserver/lab/libvirtd.py) for one lab CoServer's libvirtd.
# Only root reaches the sockets (no polkit on a lab host, so no other authentication).
unix_sock_group = "root"
unix_sock_ro_perms = "0600"
unix_sock_rw_perms = "0600"
unix_sock_admin_perms = "0600"
auth_unix_ro = "none"
auth_unix_rw = "none"
# warnings and errors to stderr: the lab keeps it in <host>/libvirtd.out
log_outputs = "3:stderr"
"""

QEMU_CONF = """\
# Written by coserver's lab (coserver/lab/libvirtd.py): see that module for why each line.
user = "+0"
group = "+0"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
namespaces = []
cgroup_controllers = []
stdio_handler = "file"
"""


class LibvirtdError(CoserverError):
    """A lab host's libvirtd could not be set up, started, reached or stopped; the message says which."""


def check_installed(binary: Path | None = None) -> None:
    """What a lab libvirtd needs on the machine, checked before anything is made: one line for the first lack."""
    for path, what, mode in ((binary or LIBVIRTD, "libvirtd", os.X_OK), (VIRSH, "virsh", os.X_OK),
                             (QEMU_DRIVER, "libvirt's QEMU driver", os.R_OK)):
        if not os.access(path, mode):
            raise LibvirtdError(f"{what} ({path}) is missing: {APT_HINT}")
    try:
        pwd.getpwnam(QEMU_USER)
    except KeyError:
        raise LibvirtdError(f"libvirt's QEMU driver needs the system user {QEMU_USER!r} (libvirt-daemon-system "
                            f"makes it): adduser --system --group --no-create-home {QEMU_USER}") from None


@dataclass(frozen=True)
class HostLibvirtd:
    """One lab host's libvirtd: its directories on the machine and how to run things in the host's view.

    root: <workdir>/<host>/libvirt (etc, run, lib, log, cache in it). host_dir: where the process
    record and the daemon's output go. view: wraps a command into the host's view (its netns and
    its coserver and libvirt directories: Lab.host_view_argv)."""

    host: str
    root: Path
    host_dir: Path
    view: Callable[[list[str]], list[str]]
    binary: Path = LIBVIRTD

    def dir(self, key: str) -> Path:
        """The machine's copy of the host's /etc/libvirt ("etc"), /run/libvirt ("run"), ..."""
        if key not in LIBVIRT_MOUNTS:
            raise LibvirtdError(f"libvirt directory {key!r}: one of {', '.join(LIBVIRT_MOUNTS)}")
        return self.root / key

    @property
    def output(self) -> Path:
        return self.host_dir / f"{PROC_NAME}.out"

    def domain_log(self, name: str) -> Path:
        """A domain's QEMU output (stdio_handler = "file"), seen from the machine."""
        return self.dir("log") / "qemu" / f"{name}.log"

    # ---- set up ---------------------------------------------------------------------------------
    def prepare(self) -> None:
        """The host's libvirt directories (0700) with the lab's libvirtd.conf and qemu.conf, and the hook.
        Idempotent: a restart keeps the domains, the capabilities cache and the logs."""
        check_installed(self.binary)
        self.host_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.root.mkdir(mode=0o700, exist_ok=True)
        for key in LIBVIRT_MOUNTS:
            self.dir(key).mkdir(mode=0o700, exist_ok=True)
        for name, text in (("libvirtd.conf", LIBVIRTD_CONF), ("qemu.conf", QEMU_CONF)):
            write_new(self.dir("etc") / name, text.encode(), mode=0o600, replace=True)
        self.install_hook()

    def install_hook(self) -> None:
        """`coserver libvirt install-hook` in the host's view: the hook lands in the host's
        /etc/libvirt/hooks/qemu.d, with the host's run directory (its site's, else /run/coserver)."""
        res = subprocess.run(self.view(["coserver", "libvirt", "install-hook"]), capture_output=True, text=True,
                             timeout=60, check=False)
        if res.returncode != 0:
            raise LibvirtdError(f"installing the libvirt hook on {self.host}: {last_line(res)}")

    # ---- the process ----------------------------------------------------------------------------
    def process(self) -> ProcessRecord | None:
        """The running libvirtd (by its recorded identity), None if it is not running."""
        return labproc.load(self.host_dir, PROC_NAME)

    def start(self, timeout: float = READY_TIMEOUT_S) -> ProcessRecord:
        """Start the host's libvirtd (its directories must be prepared) and wait until it answers.
        On failure it is stopped again and the error names the daemon's last log line."""
        rec = self.launch()
        try:
            self.wait_ready(timeout)
        except BaseException:
            labproc.stop(self.host_dir, PROC_NAME)
            raise
        return rec

    def launch(self) -> ProcessRecord:
        """Start the daemon without waiting for it (Lab starts both hosts' at once: each spends
        seconds probing QEMU's capabilities before it answers); then wait_ready()."""
        if self.process() is not None:
            raise LibvirtdError(f"libvirtd of {self.host} is already running")
        if not (self.dir("etc") / "qemu.conf").is_file():
            raise LibvirtdError(f"libvirtd of {self.host}: {self.dir('etc')} is not prepared")
        argv = self.view([str(self.binary), "--config", "/etc/libvirt/libvirtd.conf",
                          "--pid-file", "/run/libvirt/libvirtd.pid"])
        try:
            return labproc.start(PROC_NAME, argv, self.host_dir)
        except CoserverError as exc:
            raise LibvirtdError(f"libvirtd of {self.host} did not start: {exc}") from exc

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> float:
        """Wait until `virsh version` in the host's view gets an answer; returns the seconds it took."""
        t0 = time.monotonic()
        deadline = t0 + timeout
        while True:
            if self.process() is None:
                raise LibvirtdError(f"libvirtd of {self.host} exited: {labproc.last_line(self.output)}")
            left = deadline - time.monotonic()
            try:
                res = self.virsh("version", timeout=max(1.0, left))
            except LibvirtdError:
                res = None
            if res is not None and res.returncode == 0:
                return time.monotonic() - t0
            if time.monotonic() > deadline:
                why = last_line(res) if res is not None else "virsh did not answer"
                raise LibvirtdError(f"libvirtd of {self.host} did not answer within {timeout:g} s ({why}; "
                                    f"its log: {labproc.last_line(self.output)})")
            time.sleep(0.2)

    def kill(self, sig: int = signal.SIGKILL) -> int:
        """Signal the running libvirtd by its record (default SIGKILL: a crash); its domains keep running.
        Returns its pid."""
        rec = self.process()
        if rec is None:
            raise LibvirtdError(f"libvirtd of {self.host} is not running")
        rec.signal(sig)
        if sig in (signal.SIGKILL, signal.SIGTERM):
            deadline = time.monotonic() + 10
            while rec.alive() and time.monotonic() < deadline:
                time.sleep(0.05)
            if rec.alive():
                raise LibvirtdError(f"libvirtd of {self.host} (pid {rec.pid}) did not exit")
        return rec.pid

    def restart(self, timeout: float = READY_TIMEOUT_S) -> ProcessRecord:
        """Stop the daemon (SIGTERM; its domains keep running) and start it again; it reconnects to them."""
        if self.process() is not None:
            self.kill(signal.SIGTERM)
        return self.start(timeout)

    def domain_pids(self) -> dict[str, int]:
        """The QEMUs this libvirtd runs, by domain name, from its pid files (/run/libvirt/qemu/NAME.pid)."""
        out: dict[str, int] = {}
        qemu_run = self.dir("run") / "qemu"
        if not qemu_run.is_dir():
            return out
        for pidfile in qemu_run.glob("*.pid"):
            try:
                out[pidfile.stem] = int(pidfile.read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue
        return out

    def stop(self) -> list[str]:
        """Everything this libvirtd runs, gone: its domains' QEMUs (SIGKILL by the pids libvirt
        recorded: this is `lab down`, the guests' data is the disks'), then the daemon (SIGTERM, then
        SIGKILL). Idempotent; returns what was stopped."""
        gone: list[str] = []
        killed: list[ProcessRecord] = []
        for name, pid in sorted(self.domain_pids().items()):
            try:
                rec = ProcessRecord.of(pid)
            except CoserverError:
                continue
            if _is_qemu(pid) and rec.signal(signal.SIGKILL):
                killed.append(rec)
                gone.append(f"libvirt domain {self.host}/{name} (qemu pid {pid})")
        deadline = time.monotonic() + 5
        while any(r.alive() for r in killed) and time.monotonic() < deadline:
            time.sleep(0.05)
        if labproc.stop(self.host_dir, PROC_NAME):
            gone.append(f"libvirtd {self.host}")
        (self.dir("run") / "libvirtd.pid").unlink(missing_ok=True)   # a killed daemon's
        return gone

    # ---- talking to it --------------------------------------------------------------------------
    def virsh(self, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """`virsh -c qemu:///system ARGS` in the host's view (returns the result; LibvirtdError on timeout)."""
        argv = self.view([str(VIRSH), "-c", URI, *args])
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise LibvirtdError(f"virsh {' '.join(args[:2])} on {self.host}: no answer within {timeout:g} s") from None

    def virsh_ok(self, *args: str, timeout: float = 30.0) -> str:
        """virsh(), whose failure is a LibvirtdError with virsh's own last line; returns its stdout."""
        res = self.virsh(*args, timeout=timeout)
        if res.returncode != 0:
            raise LibvirtdError(f"virsh {' '.join(args[:2])} on {self.host}: {last_line(res)}")
        return res.stdout


def _is_qemu(pid: int) -> bool:
    """The pid runs a QEMU (a pid file that outlived its QEMU must not kill a reused pid's process)."""
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return False
    return "qemu-system" in os.path.basename(exe)
