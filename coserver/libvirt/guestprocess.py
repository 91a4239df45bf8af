"""One CoServer's copy of an FT server run by libvirtd: the libvirt backend's QEMU process.

The controller treats a QEMU the same whichever backend starts it (start, alive, kill, stop,
attach, its QMP socket, its log), so this is a QemuProcess whose start and stop go through
libvirt-python while everything that must be fast and exact stays the controller's own:

* start: the domain is *defined* (persistent, so ``virsh list --all`` shows a stopped copy too)
  and started by libvirtd, which makes the tap on the site's bridge, the cgroup, the log file and
  its own monitor; the controller's QMP monitor is a second one on the command line
  (libvirt.domainxml), so its deadline-bound probes never queue behind libvirt's.
* identity: after start the QEMU's pid is read from libvirt's pidfile and recorded with its start
  time and boot id like any QEMU (machine.launcher), so alive(), cpu_ticks(), kill(), pause()
  and a restarted controller's attach() work on the very process and never on a reused pid.
* kill -9 stays a signal (a fault to inject or a hung QEMU to end at once); libvirtd sees its
  monitor close and marks the domain shut off by itself.
* stop: libvirt's graceful destroy (SIGTERM), then destroy (SIGKILL), so libvirtd does its
  clean-up (tap, cgroup, release hook) instead of finding a QEMU gone behind its back.

Every libvirt call is blocking (callers use asyncio.to_thread), and opens its own connection:
a libvirtd restarted meanwhile costs nothing but a reconnect. libvirt-python's default error
handler prints every error to stderr; it is silenced here, the error is raised as one line.
"""

from __future__ import annotations

import json
import os
import signal
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from coserver import log
from coserver.errors import clip
from coserver.libvirt import metadata
from coserver.machine.errors import LaunchError
from coserver.machine.launcher import QemuProcess, StopHow
from coserver.sys.proc import ProcessError, ProcessRecord

_log = log.get("libvirt")

DEFAULT_URI = "qemu:///system"
#: Where the system QEMU driver keeps each running domain's pidfile, and its log.
QEMU_RUN_DIR = Path("/run/libvirt/qemu")
QEMU_LOG_DIR = Path("/var/log/libvirt/qemu")
#: libvirt's netdev id for a domain's first <interface> ("host" + its alias "net0"): the COLO filters
#: attach to it (colo.argv.Node.netdev_id).
NETDEV_ID = "hostnet0"


def _libvirt() -> Any:
    """The libvirt module, its stderr printing silenced; LaunchError if libvirt-python is missing."""
    try:
        import libvirt
    except ImportError as exc:
        raise LaunchError(f"the libvirt backend needs libvirt-python ({exc})") from None
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    return libvirt


def _message(exc: Exception) -> str:
    """A libvirt error as one line."""
    text = exc.get_error_message() if hasattr(exc, "get_error_message") else str(exc)
    return clip(" ".join(str(text or exc).split()))


class LibvirtQemu(QemuProcess):
    """An FT server's QEMU on this host, started as libvirt domain `domain` from `xml`."""

    def __init__(self, name: str, workdir: str | Path, *, domain: str, xml: str = "", uri: str = DEFAULT_URI,
                 start_timeout: float = 60.0) -> None:
        """name: the launcher record's name (<workdir>/<name>.json, the controller's qemu_name);
        xml: the domain's XML (libvirt.domainxml), its controller QMP socket at self.qmp_path."""
        super().__init__(name, [], workdir, start_timeout=start_timeout)
        self.domain = domain
        self.xml = xml
        self.uri = uri

    # -- where libvirt keeps things ----------------------------------------------------

    @property
    def log_path(self) -> Path:
        return QEMU_LOG_DIR / f"{self.domain}.log"

    @property
    def pid_path(self) -> Path:
        return QEMU_RUN_DIR / f"{self.domain}.pid"

    @property
    def ctl_path(self) -> Path:
        """No private monitor of the launcher's: start-up probes the controller's one (and lets go)."""
        return self.qmp_path

    def build_argv(self) -> list[str]:
        raise LaunchError(f"{self.domain}: libvirtd builds this QEMU's command line (virsh domxml-to-native)")

    # -- libvirt calls -------------------------------------------------------------------

    def _connect(self) -> Any:
        lv = _libvirt()
        try:
            return lv.open(self.uri)
        except lv.libvirtError as exc:
            raise LaunchError(f"libvirt {self.uri}: cannot connect ({_message(exc)})") from None

    def _lookup(self, conn: Any) -> Any | None:
        lv = _libvirt()
        try:
            return conn.lookupByName(self.domain)
        except lv.libvirtError as exc:
            if exc.get_error_code() == lv.VIR_ERR_NO_DOMAIN:
                return None
            raise LaunchError(f"libvirt domain {self.domain}: {_message(exc)}") from None

    def _clear_running_copy(self, conn: Any) -> None:
        """A running domain of this name is a stale copy of this FT server (the controller starts a
        new QEMU only when it has none): destroyed if its metadata says it is ours, else refused."""
        dom = self._lookup(conn)
        if dom is None or not dom.isActive():
            return
        tag = metadata.find(metadata.domain_root(dom.XMLDesc(0)))
        ours = metadata.find(metadata.domain_root(self.xml))
        if tag is None or ours is None or (tag.site, tag.name) != (ours.site, ours.name):
            raise LaunchError(f"libvirt domain {self.domain} is running and is not this FT server's copy: "
                              "refusing to touch it")
        _log.warning("libvirt.stale.destroyed", domain=self.domain, role=tag.role, epoch=tag.epoch)
        dom.destroy()

    def start(self) -> LibvirtQemu:
        """Define and start the domain; return once the controller's QMP monitor answers.

        LaunchError in one line (libvirt's reason, or QEMU's last words) if it does not; a domain
        that started but never answered is destroyed, so no half-started copy is left."""
        if not self.xml:
            raise LaunchError(f"{self.domain}: no domain XML to start")
        lv = _libvirt()
        # libvirt starts QEMU with its own umask (0002): the controller's QMP socket is 0775 until
        # _wait_qmp makes it 0600. Nobody but root can reach it meanwhile: its directory is 0700.
        self.workdir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.workdir, 0o700)
        self._clear_stale()
        conn = self._connect()
        try:
            self._clear_running_copy(conn)
            try:
                dom = conn.defineXML(self.xml)
                dom.createWithFlags(0)
            except lv.libvirtError as exc:
                raise LaunchError(f"libvirt could not start {self.domain}: {_message(exc)}") from None
            try:
                self._record = self._wait_pid()
                self._write_record()
                self._wait_qmp()
            except LaunchError:
                try:
                    dom.destroy()
                except lv.libvirtError:
                    pass
                raise
        finally:
            conn.close()
        _log.info("qemu.started", name=self.name, domain=self.domain, pid=self.pid, backend="libvirt")
        return self

    def _wait_pid(self) -> ProcessRecord:
        end = time.monotonic() + 5.0
        while time.monotonic() < end:
            pid = self._read_pidfile()
            if pid is not None:
                try:
                    return ProcessRecord.of(pid)
                except ProcessError:   # the pidfile of a QEMU that already exited: wait for the new one
                    pass
            time.sleep(0.02)
        raise LaunchError(f"{self.domain}: libvirt started the domain but {self.pid_path} names no running QEMU")

    def _wait_qmp(self) -> None:
        """The controller's own monitor is up once its socket answers a probe."""
        end = time.monotonic() + self.start_timeout
        while time.monotonic() < end:
            if not self.alive():
                raise LaunchError(f"{self.domain}: QEMU exited during start-up: {self._log_tail(0)}")
            if self.qmp_path.exists():
                os.chmod(self.qmp_path, 0o600)
                try:
                    self._probe(min(2.0, max(0.1, end - time.monotonic())))
                    return
                except Exception:  # noqa: BLE001 - not answering yet: retry until the deadline
                    pass
            time.sleep(0.05)
        raise LaunchError(f"{self.domain}: the controller's QMP monitor {self.qmp_path} did not answer "
                          f"within {self.start_timeout:.0f} s")

    def _record_data(self) -> dict[str, Any]:
        """The launcher's record (pid, start time, boot id) and which libvirt domain it is."""
        assert self._record is not None
        return {"pid": self._record.pid, "starttime": self._record.starttime, "boot_id": self._record.boot,
                "backend": "libvirt", "domain": self.domain, "uri": self.uri}

    @classmethod
    def attach(cls, workdir: str | Path, name: str) -> LibvirtQemu:
        """Re-attach to a domain's QEMU a controller started earlier (the record's pid, start time
        and boot must still be that process, as for any QEMU)."""
        record, data = cls._read_record(Path(workdir), name)
        if data.get("backend") != "libvirt" or not data.get("domain"):
            raise LaunchError(f"{Path(workdir) / name}.json: not a libvirt domain's record")
        proc = cls(name, workdir, domain=str(data["domain"]), uri=str(data.get("uri") or DEFAULT_URI))
        if not record.alive():
            raise LaunchError(f"{proc.record_path}: pid {record.pid} is not the QEMU we started "
                              "(it exited, or the pid was reused)")
        proc._record = record
        _log.info("qemu.attached", name=name, domain=proc.domain, pid=record.pid, backend="libvirt")
        return proc

    def retag(self, site: str, role: str, epoch: int) -> None:
        """Say the copy's current role and epoch in its <metadata> (live and in the definition), so
        `virsh dumpxml` on either host shows what each copy is after a failover. Best effort: a
        libvirtd that is down is told at the next change; LaunchError in one line otherwise."""
        lv = _libvirt()
        tag = metadata.ServerTag(site=site, name=self.domain, role=role, epoch=epoch)
        conn = self._connect()
        try:
            dom = self._lookup(conn)
            if dom is None:
                return
            # libvirt puts the element into the namespace given as `uri` itself (with `key` as its
            # prefix) and refuses one that already declares it: the element goes in bare
            element = metadata.element(tag)
            element.tag = metadata.ELEMENT
            text = ET.tostring(element, encoding="unicode")
            flags = lv.VIR_DOMAIN_AFFECT_CONFIG | (lv.VIR_DOMAIN_AFFECT_LIVE if dom.isActive() else 0)
            dom.setMetadata(lv.VIR_DOMAIN_METADATA_ELEMENT, text, metadata.PREFIX, metadata.NAMESPACE, flags)
        except lv.libvirtError as exc:
            raise LaunchError(f"libvirt domain {self.domain}: cannot update its metadata ({_message(exc)})") from None
        finally:
            conn.close()

    # -- stop -------------------------------------------------------------------------------

    def stop(self, timeout: float = 10.0) -> StopHow:
        """libvirt's graceful destroy (SIGTERM, libvirt waits for it), then destroy (SIGKILL).

        The domain stays defined (shut off): it is the FT server's copy on this host. Where libvirtd
        cannot do it (it is down, or has lost the domain) the same signals go to the recorded QEMU
        directly: a controller must be able to end its QEMU whatever state libvirtd is in."""
        how: StopHow = "gone"
        if self.alive():
            self.kill(signal.SIGCONT)   # a stopped QEMU acts on no SIGTERM
            lv = _libvirt()
            try:
                conn = self._connect()
            except LaunchError as exc:
                _log.warning("libvirt.unreachable", domain=self.domain, error=str(exc))
                conn = None
            try:
                dom = self._lookup(conn) if conn is not None else None
                steps: tuple[tuple[StopHow, int, int, float], ...] = (
                    ("term", lv.VIR_DOMAIN_DESTROY_GRACEFUL, signal.SIGTERM, timeout / 2),
                    ("kill", 0, signal.SIGKILL, 5.0))
                for step, flags, sig, grace in steps:
                    if not self._destroy(dom, flags):
                        self.kill(sig)
                    if self._wait_exit(grace):
                        how = step
                        break
                else:
                    raise LaunchError(f"{self.domain}: pid {self.pid} survived destroy (stuck in the kernel?)")
            finally:
                if conn is not None:
                    conn.close()
        self._remove_files()
        _log.info("qemu.stopped", name=self.name, domain=self.domain, pid=self.pid, how=how, backend="libvirt")
        return how

    def _destroy(self, dom: Any | None, flags: int) -> bool:
        """libvirt's destroy of the domain; False if libvirt could not (the caller signals instead)."""
        if dom is None:
            return False
        lv = _libvirt()
        try:
            if dom.isActive():
                dom.destroyFlags(flags)
            return True
        except lv.libvirtError as exc:
            _log.info("libvirt.destroy.failed", domain=self.domain, error=_message(exc))
            return False

    def _remove_files(self) -> None:
        for path in (self.record_path, self.qmp_path):
            try:
                path.unlink()
            except FileNotFoundError:
                pass

    def __repr__(self) -> str:
        return f"<LibvirtQemu {self.domain} pid={self.pid} uri={self.uri}>"


def attach_qemu(workdir: str | Path, name: str) -> QemuProcess:
    """The running QEMU a launcher record <workdir>/<name>.json names, whichever backend started it
    (the record says: the lab's faults and a restarted controller need not know the site's backend)."""
    try:
        backend = json.loads((Path(workdir) / f"{name}.json").read_text()).get("backend")
    except (OSError, ValueError, AttributeError):
        backend = None   # QemuProcess.attach says what is wrong with it, in one line
    if backend == "libvirt":
        return LibvirtQemu.attach(workdir, name)
    return QemuProcess.attach(workdir, name)
