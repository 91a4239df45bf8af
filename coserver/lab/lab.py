"""The one-machine lab: two CoServers as namespaces running one FT virtual server in COLO.

`lab up` builds what it needs (lab guest, network, disks, the etcd witness over
TLS with a role per site: lab.witness; `--insecure`: plain http),
makes each CoServer a host of a site: it writes the site file, the pair's key, its
certificates and the FT server specs into each host's private /etc/coserver and runs the host's
controllers (`coserver-controller --server NAME`, the real hosts' systemd path)
in the host's network namespace and its own mount namespace (lab.hostexec),
where /etc/coserver, /var/lib/coserver and /run/coserver are that host's alone.
Then it does what `server start` does: the controllers start the guest on cs1,
the secondary on cs2, and protect the pair themselves; the lab never starts a
QEMU or enters COLO. It returns once the pair is protected with checkpoints
flowing. Any failure tears down everything `up` made and reports the step that
failed: never half a pair.

On the machine, host H's directories are <workdir>/H/etc, <workdir>/H/lib and
<overlay base>/coserver-lab-<prefix>/H (tmpfs: control sockets and overlays).

`up` with the libvirt backend (LabOptions.backend = "libvirt") also starts a libvirtd on each host
before the controllers (lab.libvirtd: its own /etc/libvirt, /run/libvirt, ... from <workdir>/H/libvirt,
the coserver hook installed); the controllers do not use it yet (the backend is another change).

`lab status` asks both controllers; `lab down` removes every namespace,
process, socket and temp file the lab made, also after a crash (it finds
what is left by the lab prefix and the records in the workdir). Guest disks
and logs stay in the workdir, so the guest's data survives `down`/`up`:
the next `up` starts from cs1's disk and re-syncs cs2's.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import stat
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from coserver import log
from coserver.colo.settings import ColoSettings, SyncPorts
from coserver.controller import control
from coserver.controller.errors import ControlError
from coserver.errors import CoserverError
from coserver.hardware import check_spec, get_profile
from coserver.hardware.config import resolve
from coserver.hardware.spec import FTServerSpec, load_spec
from coserver.images import qemu_img
from coserver.images.accel import choose_accel
from coserver.images.guestclient import connect_journal
from coserver.images.labguest import build_lab_guest
from coserver.lab import net as labnet
from coserver.lab import sitefile
from coserver.lab import witness as labwitness
from coserver.lab.diskfault import fail_disk
from coserver.lab.hostexec import host_argv
from coserver.lab.libvirtd import HostLibvirtd, check_installed
from coserver.lab.net import GUEST_ADDRESS, HOSTS, LabNet
from coserver.lab.spec import DEVICE_SETS, GUEST_PORT, lab_server_name, write_lab_spec
from coserver.libvirt.guestprocess import LibvirtQemu, attach_qemu
from coserver.machine.launcher import QemuProcess, last_words
from coserver.pair.summary import host_entry, summarize
from coserver.paths import qemu_install
from coserver.site import Site, load_site
from coserver.site.model import BACKENDS
from coserver.site.ports import server_ports
from coserver.site.witnessauth import key_prefix, role_name
from coserver.sys import netns
from coserver.sys import proc as labproc
from coserver.sys.files import private_dirs
from coserver.sys.proc import ProcessRecord
from coserver.sys.run import run

_log = log.get("lab")

DEFAULT_PREFIX = "cs"
DEFAULT_PROFILE = "dl380-g5"
QEMU_NAME = "qemu"     # the bench's own QEMUs (bench.site); the lab's are named after their FT server
WITNESS_PORT = sitefile.WITNESS_PORT
ETCD = labwitness.ETCD
REGISTRY = Path("/run/coserver/labs")
#: FT servers one lab pair may run (each is two TCG QEMUs on this machine).
MAX_SERVERS = 4
#: fault -> (needs --host, needs --link)
FAULTS: dict[str, tuple[bool, bool]] = {
    "kill-qemu": (True, False), "term-qemu": (True, False), "hang-qemu": (True, False),
    "resume-qemu": (True, False), "kill-controller": (True, False), "cut-link": (False, True), "heal-link": (False, True),
    "cut-all-links": (False, False), "heal-all-links": (False, False),
    "power-off": (True, False), "power-on": (True, False),
    "freeze": (True, False), "cut-witness": (True, False), "heal-witness": (True, False),
    "witness-down": (False, False), "witness-up": (False, False),
    "stall-replication": (False, False), "heal-replication": (False, False),
    "disk-error": (True, False), "fill-disk": (True, False), "heal-disk": (True, False),
    "kill-libvirtd": (True, False), "start-libvirtd": (True, False), "destroy-domain": (True, False),
    "reset-proxy": (False, False),
}
#: Each lab host's /var/lib/coserver is a tmpfs this big (fill-disk fills it).
STATE_FS_SIZE = "128m"
FILLER = "lab-fill-disk.bin"

#: `freeze` without --seconds: longer than the witness lease (2 s) and the hang detection (1.5 s).
DEFAULT_FREEZE_S = 6.0


class LabError(CoserverError):
    """A lab operation failed; the message names the step."""


def default_workdir(prefix: str) -> Path:
    state = os.environ.get("XDG_STATE_HOME")
    return (Path(state) if state else Path.home() / ".local" / "state") / "coserver" / f"lab-{prefix}"


def overlay_base() -> Path:
    """Where overlay directories go: tmpfs (/dev/shm) when there is one, else /var/tmp.
    Both are shared with every user: what the lab makes below them is checked (make_overlay_dir)."""
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK) else Path("/var/tmp")


def overlay_dir(prefix: str, host: str, base: Path | None = None) -> Path:
    """The secondary's active/hidden overlays: <base>/coserver-lab-<prefix>/<host>."""
    return (base or overlay_base()) / f"coserver-lab-{prefix}" / host


def make_overlay_dir(prefix: str, host: str, base: Path | None = None) -> Path:
    """overlay_dir(), made safely: in a shared directory anyone could have planted
    coserver-lab-<prefix> (a symlink into their own tree, or a directory they can write), so each
    level is made 0700, or, if it exists, must be a real directory of ours with no group/other
    access (sys.files.private_dirs); else one line (UnsafeDirError) and nothing is written."""
    base = base or overlay_base()
    return private_dirs(base, overlay_dir(prefix, host, base))


@dataclass
class LabOptions:
    prefix: str = DEFAULT_PREFIX
    workdir: Path | None = None
    profile: str = DEFAULT_PROFILE
    spec: Path | None = None
    checkpoint_ms: int = 2000
    reprotect: str = "auto"
    sync_speed_mib_s: int = 0
    protect: str = "live"          # how the pair enters COLO (site key protect)
    #: the built-in guest's RAM (MiB); 0: the spec's (256)
    memory_mib: int = 0
    devices: str = "virtio"        # the built-in guest's NIC/disk: "virtio" or the profile's "emulated"
    #: `up` returns only after the pair stayed protected this long with checkpoints flowing
    #: (0: at least three checkpoint periods, and never under 5 s).
    confirm_s: float = 0.0
    #: How many FT servers the lab pair runs (the built-in guest only): journal, journal2, ...
    servers: int = 1

    #: The pair must be protected within this long after `server start` (boot, grace, sync, COLO).
    protect_timeout_s: float = 180.0
    #: The lab guest boots in about 10 s under TCG: protect it after this long, not while it boots.
    boot_grace_s: float = 15.0
    #: server stop: the power button, then this long for the guest to power off.
    stop_timeout_s: float = 30.0
    #: the site's alert hook (argv, absolute program path; empty: none)
    alert_command: tuple[str, ...] = ()
    #: plain TCP between the QEMUs and plain http to the witness without authentication (the site file
    #: says insecure = true, twice); by default TLS everywhere: the QEMUs admit only each other, the
    #: witness wants client certificates and has a role per site (lab.witness). For comparison only.
    insecure: bool = False
    #: "libvirt": a libvirtd on each host too, started before the controllers (lab.libvirtd)
    backend: str = "qemu"

    def confirm_window_s(self) -> float:
        return self.confirm_s or max(5.0, 3 * self.checkpoint_ms / 1000)


@dataclass
class LabState:
    """lab.json: what `up` made, for status and down (also after a crash)."""

    prefix: str
    workdir: str
    state: str = "starting"
    primary: str = "cs1"
    secondary: str = "cs2"
    spec: str = ""
    profile: str = ""
    ftserver: str = ""
    servers: list[str] = field(default_factory=list)    # every FT server of the lab, ftserver first
    guests: dict[str, dict[str, Any]] = field(default_factory=dict)   # each server's guest (as `guest`)
    devices: str = ""
    checkpoint_ms: int = 0
    accel: str = "tcg"
    guest: dict[str, Any] = field(default_factory=dict)
    created: float = field(default_factory=time.time)
    backend: str = "qemu"

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.__dict__, indent=2) + "\n")
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> LabState | None:
        try:
            return cls(**json.loads(path.read_text()))
        except FileNotFoundError:
            return None
        except (ValueError, TypeError) as exc:
            raise LabError(f"lab state {path}: unreadable ({exc}); run `coserver lab down`") from exc


class Lab:
    """One lab, named by its prefix."""

    def __init__(self, prefix: str = DEFAULT_PREFIX, workdir: Path | None = None) -> None:
        self.prefix = labnet.valid_prefix(prefix)
        self.net = LabNet(self.prefix)
        self.workdir = Path(workdir) if workdir else self._registered_workdir() or default_workdir(self.prefix)

    # ---- where things are -------------------------------------------------------------
    @property
    def registry_file(self) -> Path:
        return REGISTRY / f"{self.prefix}.json"

    def _registered_workdir(self) -> Path | None:
        try:
            return Path(json.loads(self.registry_file.read_text())["workdir"])
        except (OSError, ValueError, KeyError):
            return None

    @property
    def state_file(self) -> Path:
        return self.workdir / "lab.json"

    def host_dir(self, host: str) -> Path:
        return self.workdir / host

    def etc_dir(self, host: str) -> Path:
        """The host's /etc/coserver: site file, pair key, server specs."""
        return self.host_dir(host) / "etc"

    def lib_dir(self, host: str) -> Path:
        """The host's /var/lib/coserver: per server its QEMU workdir, journal and controller log."""
        return self.host_dir(host) / "lib"

    def run_dir(self, host: str) -> Path:
        """The host's /run/coserver (tmpfs when the machine has /dev/shm): control sockets, overlays."""
        return overlay_dir(self.prefix, host)

    def libvirt_root(self, host: str) -> Path:
        """The host's libvirt directories (etc, run, lib, log, cache: /etc/libvirt, /run/libvirt, ...);
        only a lab with the libvirt backend has them."""
        return self.host_dir(host) / "libvirt"

    def libvirtd(self, host: str) -> HostLibvirtd:
        """The host's libvirtd (running or not)."""
        if host not in HOSTS:
            raise LabError(f"host must be one of {', '.join(HOSTS)}, got {host!r}")
        return HostLibvirtd(host=host, root=self.libvirt_root(host), host_dir=self.host_dir(host),
                            view=lambda command: self.controller_argv(host, command))

    def servers(self) -> list[str]:
        """The lab's FT servers, the main one (what status and faults mean by default) first."""
        st = LabState.load(self.state_file) if self.state_file.exists() else None
        return list(st.servers) if st and st.servers else ([st.ftserver] if st and st.ftserver else [])

    def _server(self, server: str | None) -> str:
        names = self.servers()
        if server is None:
            if not names:
                raise LabError(f"lab {self.prefix!r} has no FT server (is it up?)")
            return names[0]
        if server not in names:
            raise LabError(f"lab {self.prefix!r} has no FT server {server!r} (servers: {', '.join(names) or 'none'})")
        return server

    def server_dir(self, host: str, server: str | None = None) -> Path:
        """Where the host's controller of `server` keeps its QEMU, journal and log (seen from the machine)."""
        return self.lib_dir(host) / "servers" / self._server(server)

    def qemu(self, host: str, server: str | None = None) -> QemuProcess:
        """The running QEMU of `server` on `host` (CoserverError if none)."""
        name = self._server(server)
        return attach_qemu(self.server_dir(host, name), name)   # either backend's (the record says)

    def qemu_log(self, host: str, server: str | None = None) -> Path:
        name = self._server(server)
        return self.server_dir(host, name) / f"{name}.log"

    def control_socket(self, host: str, server: str | None = None) -> Path:
        return self.run_dir(host) / f"{self._server(server)}.sock"

    def controller_record(self, host: str, server: str | None = None) -> Path:
        """The running controller's identity, written by its supervisor at each (re)start."""
        return self.host_dir(host) / f"{self._server(server)}.controller.pid.json"

    def sync_ports(self, server: str | None = None) -> SyncPorts:
        """The COLO ports of `server` (its slot in the hosts' site file, as its controllers use them)."""
        return server_ports(self.site(), self._server(server)).sync_ports()

    @staticmethod
    def supervisor_name(server: str) -> str:
        return f"supervisor-{server}"

    @property
    def witness_dir(self) -> Path:
        return self.workdir / "witness"

    @property
    def pki_dir(self) -> Path:
        """The lab's certificates (coserver site certs' layout, 0700): the CA, each host's, root's."""
        return self.workdir / labwitness.PKI_DIR

    def site(self) -> Site:
        """The lab's site file, as the hosts read it (cs1's copy: both are the same)."""
        return load_site(self.etc_dir(HOSTS[0]) / sitefile.SITE_FILE)

    # ---- up ---------------------------------------------------------------------------
    def up(self, opts: LabOptions, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
        say = progress or (lambda msg: None)
        self.validate(opts)  # bad input: one line, before anything is looked at or made
        ColoSettings(checkpoint_ms=opts.checkpoint_ms, sync_speed_mib_s=opts.sync_speed_mib_s,
                     protect_order=opts.protect)  # one line if bad
        busy = self.net.existing()
        if busy or self.registry_file.exists():
            raise LabError(f"lab prefix {self.prefix!r} is in use ({', '.join(busy) or self.registry_file}); "
                           f"run `coserver lab down --prefix {self.prefix}` first")
        self._check_workdir()
        state = LabState(prefix=self.prefix, workdir=str(self.workdir), checkpoint_ms=opts.checkpoint_ms,
                         backend=opts.backend)
        step = "prepare"
        try:
            step = "build the lab guest"
            say(step)
            spec_paths = self._prepare_specs(opts)
            step = "check the FT server spec"
            say(step)
            report = check_spec(spec_paths[0])
            specs = [load_spec(p) for p in spec_paths]
            configs = {h: resolve(specs[0], h) for h in HOSTS}
            state.spec, state.profile, state.ftserver = str(spec_paths[0]), report.profile, specs[0].name
            state.servers = [sp.name for sp in specs]
            state.guests = {sp.name: self._guest_of(sp) for sp in specs}
            state.guest = state.guests[specs[0].name]
            state.devices = f"{configs['cs1'].nics[0].model}+{configs['cs1'].disks[0].bus}"
            step = "make the lab network"
            say(step)
            REGISTRY.mkdir(parents=True, exist_ok=True)
            self.registry_file.write_text(json.dumps({"workdir": str(self.workdir)}) + "\n")
            self.net.create()
            state.accel = choose_accel(qemu_install())
            state.save(self.state_file)
            step = "write the site (site file, pair key, witness certificates, FT server specs) on each host"
            say(step)
            self._make_hosts(opts, state.accel, spec_paths)
            step = "prepare the disks"
            say(step)
            for sp in specs:
                self._prepare_disks(sp)
            step = "start the witness (etcd)"
            say(step)
            self._start_witness()
            if opts.backend == "libvirt":
                step = "start a libvirtd on each host"
                say(step)
                self.start_libvirtds()
            step = "start the controllers"
            say(step)
            for host in HOSTS:
                for name in state.servers:
                    self._start_controller(host, name)
            state.state = "confirming"   # from here the controllers' reports say what the pair is
            state.save(self.state_file)
            for name in state.servers:
                step = f"server start {name}"
                say(f"{step}: the controllers start the guest on cs1 and protect it themselves")
                for host in HOSTS:
                    self.ask(host, {"cmd": "start", "reason": "lab up"}, server=name)
            for name in state.servers:
                step = f"wait for the pair to protect {name}"
                self._wait_protected(say, timeout=opts.protect_timeout_s, server=name)
            step = "confirm the pair stays protected"
            say(f"{step} ({opts.confirm_window_s():g} s, checkpoints flowing)")
            for name in state.servers:
                self._confirm_protected(opts.confirm_window_s(), server=name)
                self._wait_guest(state.guests[name])
            state.state = "protected"
            state.save(self.state_file)
        except BaseException as exc:
            reason = str(exc) or type(exc).__name__
            _log.error("lab.up.failed", step=step, reason=reason)
            self.down()
            if isinstance(exc, (CoserverError, OSError)):
                raise LabError(f"lab up failed: {reason}") from exc
            raise
        return self.status()

    @staticmethod
    def validate(opts: LabOptions) -> None:
        """Every check of `up`'s options that needs nothing made: the profile, the device set, the
        spec file. up() runs it first, so bad input never touches the workdir or the network."""
        if not 1 <= opts.servers <= MAX_SERVERS:
            raise LabError(f"--servers must be 1 to {MAX_SERVERS}, got {opts.servers}")
        if opts.backend not in BACKENDS:
            raise LabError(f"--backend must be one of {', '.join(BACKENDS)}, got {opts.backend!r}")
        if opts.backend == "libvirt":
            try:
                check_installed()
            except CoserverError as exc:
                raise LabError(f"--backend libvirt: {exc}") from exc
        if opts.spec is None:
            get_profile(opts.profile)  # unknown profile: one line naming the known ones
            if opts.devices not in DEVICE_SETS:
                raise LabError(f"--devices must be one of {', '.join(DEVICE_SETS)}, got {opts.devices!r}")
        else:
            if opts.servers != 1:
                raise LabError("--servers goes with the built-in guest; with --spec the lab runs that one server")
            if opts.memory_mib:
                raise LabError("--memory goes with the built-in guest; with --spec the spec says memory_mib")
            if not opts.spec.is_file():
                raise LabError(f"spec {opts.spec}: " + ("not a regular file" if opts.spec.exists() else "no such file"))
            load_spec(opts.spec)  # its schema: one SpecError line naming file and key
        if not opts.insecure and not os.access(labwitness.ETCDCTL, os.X_OK):
            raise LabError(f"the witness's roles are set up with {labwitness.ETCDCTL}, which is missing: "
                           "apt-get install etcd-client (or --insecure: a witness without TLS)")

    def _check_workdir(self) -> None:
        """The workdir is writable; made 0700 if the lab makes it. An existing directory is left as it
        is, never chmod-ed: it may not be the lab's (`--workdir /tmp` must not close /tmp); what
        the lab keeps in it is private on its own (host dirs and witness 0700, the key 0600)."""
        try:
            self.workdir.parent.mkdir(parents=True, exist_ok=True)
            try:
                self.workdir.mkdir(mode=0o700)
            except FileExistsError:
                pass
            probe = self.workdir / ".write-test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as exc:
            raise LabError(f"workdir {self.workdir}: not writable ({exc.strerror or exc})") from exc

    def _prepare_specs(self, opts: LabOptions) -> list[Path]:
        """The FT server specs to install: the user's, or one built-in lab guest per --servers."""
        if opts.spec is not None:  # validate() has checked it
            return [opts.spec.resolve()]
        guest = build_lab_guest()
        for h in HOSTS:
            self.host_dir(h).mkdir(mode=0o700, exist_ok=True)
        out = []
        for index in range(opts.servers):
            name = lab_server_name(index)
            stem = "disk" if index == 0 else f"disk-{name}"   # the first keeps its old name: data survives
            disks = {h: self.host_dir(h) / f"{stem}.qcow2" for h in HOSTS}
            if not disks["cs1"].exists():
                guest.new_data_disk(disks["cs1"])
            out.append(write_lab_spec(self.workdir / f"{name}.toml", prefix=self.prefix, profile=opts.profile,
                                      guest=guest, disks=disks, devices=opts.devices, index=index,
                                      memory_mib=opts.memory_mib))
        return out

    def _guest_of(self, spec: FTServerSpec) -> dict[str, Any]:
        """How clients reach the server's guest (`guest` in status)."""
        cfg = resolve(spec, HOSTS[0])
        lab_cfg = cfg.lab
        return {"address": lab_cfg.address if lab_cfg else GUEST_ADDRESS,
                "port": lab_cfg.port if lab_cfg else GUEST_PORT,
                "mac": cfg.nics[0].mac, "client_netns": self.net.ns("client"),
                "serial": cfg.smbios.serial, "uuid": cfg.smbios.uuid}

    def _make_hosts(self, opts: LabOptions, accel: str, spec_paths: list[Path]) -> None:
        """Each host's private directories with the site file, the pair key and the specs in them."""
        etc = {}
        for host in HOSTS:
            self.host_dir(host).mkdir(mode=0o700, exist_ok=True)
            for d in (self.etc_dir(host), self.lib_dir(host)):
                d.mkdir(mode=0o755, exist_ok=True)
            self._mount_state_fs(host)
            shutil.rmtree(self.etc_dir(host) / sitefile.SERVERS_DIR, ignore_errors=True)  # this up's servers only
            make_overlay_dir(self.prefix, host)  # 0700 and ours, or one line: never a planted one
            etc[host] = self.etc_dir(host)
        text = sitefile.site_text(self.net, checkpoint_ms=opts.checkpoint_ms, reprotect=opts.reprotect,
                                  accel=accel, boot_grace_s=opts.boot_grace_s, stop_timeout_s=opts.stop_timeout_s,
                                  sync_speed_mib_s=opts.sync_speed_mib_s, alert_command=opts.alert_command,
                                  insecure=opts.insecure, protect=opts.protect, backend=opts.backend)
        sitefile.install_site(etc, text)
        for path in spec_paths:
            sitefile.install_spec(etc, path)
        if not opts.insecure:   # the site's certificates, each host's own copied to its /etc/coserver/pki/<host>/
            labwitness.make_pki(self.site(), self.pki_dir, labnet.WITNESS_ADDRESS)
            for host in HOSTS:
                labwitness.install_host_pki(self.pki_dir, host, self.etc_dir(host))

    def _prepare_disks(self, spec: FTServerSpec) -> None:
        """cs1's disk must exist; cs2's is made blank (same size) if missing or of another size."""
        primary, secondary = (Path(spec.disks[0].paths[h].value) for h in HOSTS)
        if not primary.exists():
            raise LabError(f"disk {primary} of cs1 does not exist")
        size = qemu_img.info(primary).virtual_size
        if secondary.exists() and qemu_img.info(secondary).virtual_size != size:
            secondary.unlink()  # a stale copy of another size: start it blank
        if not secondary.exists():
            secondary.parent.mkdir(parents=True, exist_ok=True)
            qemu_img.create(secondary, size)

    def _wait_protected(self, say: Callable[[str], None], timeout: float, server: str | None = None) -> None:
        """Poll the controllers until they report the pair protected, showing what they do meanwhile;
        raise with their alert or notes (and any QEMU's last log line) if it does not come."""
        deadline = time.monotonic() + timeout
        seen: dict[str, str] = {}
        while True:
            st = self.status(server)
            for host, e in st["hosts"].items():
                sync = e.get("sync") or {}
                what = f"{e.get('role')}/{e.get('state')}"
                if sync and not sync.get("finished") and e.get("state") == "syncing":
                    what += f" sync {sync.get('percent', 0):.0f}%"
                if seen.get(host) != what:
                    seen[host] = what
                    say(f"{host}: {st['ftserver']} {what}")
            if st["state"] == "protected":
                return
            if st.get("alert"):
                raise LabError(f"the pair cannot protect itself: {st['alert']}")
            if time.monotonic() > deadline:
                notes = [f"{note}; qemu log: {last_words(self.qemu_log(h, server))}"
                         for h, note in _host_notes(st).items()]
                raise LabError(f"the pair was not protected within {timeout:g} s ({st['state']}; "
                               f"{'; '.join(notes)})")
            time.sleep(0.5)

    def _wait_guest(self, guest: dict[str, Any], timeout: float = 60.0) -> None:
        """The guest's service answers clients (protected implies booted; this says so from outside)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                connect_journal(self.net.ns("client"), guest["address"], guest["port"], 3.0).close()
                return
            except CoserverError as exc:
                if time.monotonic() > deadline:
                    raise LabError(f"the guest did not answer at {guest['address']}:{guest['port']} "
                                   f"within {timeout:g} s: {exc}") from exc
                time.sleep(0.5)

    def _start_witness(self, fresh: bool = True) -> None:
        """etcd in the witness namespace, on the management network (fresh: a new cluster; else its data
        is kept, as a restarted witness member keeps its own, its users and roles included).

        As the site file says: TLS with client certificates required (the member's certificate from the
        lab's pki; on a fresh cluster root then sets up the site's role and the hosts' users and enables
        auth, lab.witness), or plain http when it says insecure = true (`lab up --insecure`)."""
        self.witness_dir.mkdir(mode=0o700, exist_ok=True)
        site = self.site()
        tls = None if site.witness.cert is None else labwitness.server_tls(site, self.pki_dir, labnet.WITNESS_ADDRESS)
        url = labwitness.client_url(labnet.WITNESS_ADDRESS, WITNESS_PORT, tls is not None)
        if fresh:
            shutil.rmtree(self.witness_dir / "etcd", ignore_errors=True)  # a fresh witness per lab up
        ns = self.net.ns("witness")
        labproc.start("etcd", labwitness.etcd_argv(name="witness", data_dir=self.witness_dir / "etcd",
                                                   address=labnet.WITNESS_ADDRESS, port=WITNESS_PORT,
                                                   peer_url="http://127.0.0.1:2380", tls=tls, etcd=ETCD),
                      self.witness_dir, netns=ns)
        deadline = time.monotonic() + 20
        while True:
            try:
                netns.socket_in(ns, labnet.WITNESS_ADDRESS, WITNESS_PORT, 1.0).close()
                break
            except OSError as exc:
                if labproc.load(self.witness_dir, "etcd") is None or time.monotonic() > deadline:
                    raise LabError(f"the witness (etcd) did not start: "
                                   f"{labproc.last_line(self.witness_dir / 'etcd.out')}") from exc
                time.sleep(0.2)
        if fresh and tls is not None:
            admin = labwitness.admin_tls(self.pki_dir)
            labwitness.wait_ready(url, admin, netns=ns)
            labwitness.setup_rbac(url, admin, site.name, HOSTS, netns=ns)

    def _start_controller(self, host: str, server: str) -> None:
        """A new pair: no decisions to resume, no maintenance left over; then run the controller."""
        sd = self.lib_dir(host) / "servers" / server
        for leftover in ("controller.journal.json", "maintenance"):
            (sd / leftover).unlink(missing_ok=True)
        self._run_controller(host, server)

    def controller_argv(self, host: str, command: list[str]) -> list[str]:
        """`command` as run on `host`: its network namespace, its own /etc, /var/lib, /run coserver
        (and, when the lab made them, its own libvirt directories, /dev/kvm hidden unless the lab
        runs its guests on KVM: a TCG lab never touches it, libvirt's probes included)."""
        libvirt = self.libvirt_root(host) if self.libvirt_root(host).is_dir() else None
        no_kvm = False
        if libvirt is not None:
            st = LabState.load(self.state_file) if self.state_file.exists() else None
            no_kvm = st is None or st.accel != "kvm"
        return netns.exec_argv(self.net.ns(host), host_argv(self.etc_dir(host), self.lib_dir(host),
                                                            self.run_dir(host), command, libvirt=libvirt,
                                                            no_kvm=no_kvm))

    def start_libvirtds(self, timeout: float = 60.0) -> dict[str, float]:
        """A libvirtd on each host (its directories, configuration and hook first), both started at
        once, then each waited for until it answers; returns the seconds from start to answer. The lab
        network must exist. On failure every daemon is stopped again and the error names the host."""
        if not self.net.existing():
            raise LabError(f"lab {self.prefix!r}: no network to start libvirtd in")
        took: dict[str, float] = {}
        try:
            for host in HOSTS:
                for d in (self.host_dir(host), self.etc_dir(host), self.lib_dir(host)):
                    d.mkdir(mode=0o700 if d == self.host_dir(host) else 0o755, parents=True, exist_ok=True)
                make_overlay_dir(self.prefix, host)
                self.libvirtd(host).prepare()
            t0 = time.monotonic()
            for host in HOSTS:
                self.libvirtd(host).launch()
            for host in HOSTS:
                self.libvirtd(host).wait_ready(timeout)
                took[host] = time.monotonic() - t0
        except BaseException as exc:
            for host in HOSTS:
                self.libvirtd(host).stop()
            if isinstance(exc, CoserverError):
                raise LabError(str(exc)) from exc
            raise
        return took

    def _run_controller(self, host: str, server: str) -> None:
        """The host's controller of `server` under its supervisor (the lab's systemd), as a real host
        runs it: `coserver-controller --server NAME`, everything else from the host's site file."""
        hd = self.host_dir(host)
        self.control_socket(host, server).unlink(missing_ok=True)   # a dead controller's: not an answer
        argv = self.controller_argv(host, [
            sys.executable, "-m", "coserver.lab.supervise", "--record", str(self.controller_record(host, server)),
            "--", sys.executable, "-m", "coserver.controller.daemon", "--server", server])
        labproc.start(self.supervisor_name(server), argv, hd)
        deadline = time.monotonic() + 30
        while not self.control_socket(host, server).exists():
            out = hd / f"{self.supervisor_name(server)}.out"
            if labproc.load(hd, self.supervisor_name(server)) is None or time.monotonic() > deadline:
                raise LabError(f"controller of {server} on {host} did not start: {labproc.last_line(out)}")
            time.sleep(0.1)

    def _confirm_protected(self, window_s: float, server: str | None = None) -> None:
        """Success means the state is true: both controllers report the pair protected, both QEMUs
        live, and checkpoints keep coming for `window_s`. Otherwise raise with the reason, the failing
        QEMU's last log line first (e.g. an assertion at its first checkpoint)."""
        deadline = time.monotonic() + window_s + 30.0   # the controllers' first status may take a moment
        first: int | None = None
        since: float | None = None
        while True:
            for host in HOSTS:
                try:
                    alive = self.qemu(host, server).alive()
                except CoserverError:
                    alive = False
                if not alive:
                    raise LabError(f"the QEMU on {host} died while the pair entered COLO: "
                                   f"{last_words(self.qemu_log(host, server))}")
            st = self.status(server)
            if st["state"] == "protected":
                count = int(st["checkpoints"] or 0)
                if first is None:
                    first, since = count, time.monotonic()
                elif since is not None and time.monotonic() - since >= window_s and count >= first + 2:
                    return
            else:
                first = since = None
            if time.monotonic() > deadline:
                seen = f"{st['state']}, {st['checkpoints']} checkpoints"
                raise LabError(f"the pair did not stay protected with checkpoints flowing for {window_s:g} s "
                               f"(last seen: {seen}; {'; '.join(_host_notes(st).values())})")
            time.sleep(0.5)

    # ---- status -----------------------------------------------------------------------
    def ask(self, host: str, request: dict[str, Any], timeout: float = 5.0,
            server: str | None = None) -> dict[str, Any]:
        """One request to a host's controller of `server` (default: the main one) over its control socket."""
        try:
            return self.ask_socket(self.control_socket(host, server), request, timeout)
        except LabError as exc:
            raise LabError(f"controller of {host}: {exc}") from exc

    @staticmethod
    def ask_socket(path: Path, request: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        """One JSON request/reply with a controller's control socket (controller.control.ask)."""
        try:
            return control.ask(path, request, timeout)
        except ControlError as exc:
            raise LabError(str(exc)) from exc

    def status(self, server: str | None = None) -> dict[str, Any]:
        """The pair's summary of one FT server (default: the main one) from both controllers."""
        st = LabState.load(self.state_file) if self.workdir.is_dir() else None
        if st is None or not self.net.existing():
            return {"state": "stopped", "prefix": self.prefix, "primary": None, "secondary": None,
                    "checkpoints": 0, "hosts": {}, "guest": st.guest if st else {}}
        name = self._server(server)
        hosts: dict[str, Any] = {}
        for host in HOSTS:
            entry: dict[str, Any] = {"netns": self.net.ns(host), "role": None, "qemu_pid": None}
            try:
                s = self.ask(host, {"cmd": "status"}, server=name)["status"]
                entry.update(host_entry(s))
            except LabError as exc:
                entry["error"] = str(exc)
                rec = self.controller_process(host, name)
                entry["controller_pid"] = rec.pid if rec else None
            if self.libvirt_root(host).is_dir():   # the libvirt backend's daemon: None when it is down
                lv = self.libvirtd(host).process()
                entry["libvirtd_pid"] = lv.pid if lv else None
            hosts[host] = entry
        pair = summarize(hosts, syncing=st.state in ("starting", "syncing"))
        return {"witness": self._witness_summary(hosts), "state": pair["state"], "prefix": self.prefix, "workdir": str(self.workdir), "primary": pair["primary"],
                "secondary": pair["secondary"], "checkpoints": pair["checkpoints"], "checkpoint_ms": st.checkpoint_ms,
                "accel": st.accel, "profile": st.profile, "spec": st.spec, "ftserver": name,
                "servers": st.servers or [st.ftserver], "devices": st.devices, "alert": pair["alert"],
                "backend": st.backend,
                "hosts": hosts, "guest": st.guests.get(name, st.guest), "site": str(self.etc_dir(HOSTS[0]) / "site.toml")}

    def _witness_summary(self, hosts: dict[str, Any]) -> dict[str, Any]:
        """How the witness is served (the site file) and whether each controller reaches it."""
        out: dict[str, Any] = {"reachable": {h: bool((e.get("witness") or {}).get("reachable")) for h, e in hosts.items()
                                             if "error" not in e}}
        try:
            site = self.site()
        except CoserverError as exc:
            return out | {"error": str(exc)}
        tls = site.witness.cert is not None
        return out | {"url": labwitness.client_url(labnet.WITNESS_ADDRESS, WITNESS_PORT, tls), "tls": tls,
                      "role": role_name(site.name) if tls else None, "prefix": key_prefix(site.name)}

    # ---- fault injection ---------------------------------------------------------------
    def fault(self, kind: str, host: str | None = None, link: int | None = None,
              server: str | None = None, seconds: float | None = None) -> dict[str, Any]:
        """Inject one fault (QEMU and controller faults hit `server`, default the main one); return what
        was done (for --json). Nothing changes on bad input."""
        if kind not in FAULTS:
            raise LabError(f"unknown fault {kind!r}; one of: {', '.join(FAULTS)}")
        if not self.net.existing():
            raise LabError(f"lab {self.prefix!r} is not running")
        needs_host, needs_link = FAULTS[kind]
        if needs_host and host not in HOSTS:
            raise LabError(f"fault {kind}: --host must be one of {', '.join(HOSTS)}, got {host!r}")
        if needs_link and link not in labnet.SYNC_SUBNETS:
            raise LabError(f"fault {kind}: --link must be one of "
                           f"{', '.join(map(str, labnet.SYNC_SUBNETS))}, got {link!r}")
        out: dict[str, Any] = {"fault": kind, "host": host, "link": link, "at": time.time()}
        if kind in ("kill-qemu", "term-qemu", "hang-qemu", "resume-qemu", "kill-controller", "disk-error"):
            out["server"] = server = self._server(server)
        if kind == "disk-error":
            assert host is not None
            out.update(fail_disk(self._running_qemu(kind, host, server).ctl_path, host))
        elif kind in ("kill-qemu", "term-qemu", "hang-qemu", "resume-qemu"):
            assert host is not None
            proc = self._running_qemu(kind, host, server)
            if kind == "kill-qemu":
                proc.kill()
            elif kind == "term-qemu":
                proc.kill(signal.SIGTERM)
            elif kind == "hang-qemu":
                proc.pause()
            else:
                proc.resume()
            out["pid"] = proc.pid
        elif kind == "kill-controller":
            assert host is not None
            rec = self.controller_process(host, server)
            if rec is None:
                raise LabError(f"fault {kind}: no running controller of {server} on {host}")
            rec.signal(signal.SIGKILL)
            out["pid"] = rec.pid
        elif kind in ("cut-link", "heal-link"):
            assert link is not None
            self.net.set_sync_link(link, up=kind == "heal-link")
        elif kind in ("cut-all-links", "heal-all-links"):
            for n in labnet.SYNC_SUBNETS:
                self.net.set_sync_link(n, up=kind == "heal-all-links")
        elif kind == "power-off":
            assert host is not None
            out["killed"] = self._power_off(host)
        elif kind == "power-on":
            assert host is not None
            self._power_on(host)
        elif kind == "freeze":
            assert host is not None
            out["seconds"] = seconds = DEFAULT_FREEZE_S if seconds is None else seconds
            if not 0 < seconds <= 600:
                raise LabError(f"fault freeze: --seconds must be in (0, 600], got {seconds:g}")
            out["frozen"] = self._freeze(host, seconds)
        elif kind in ("cut-witness", "heal-witness"):
            assert host is not None   # the host's management link: the witness (and the peer's TCP control)
            netns.link_up(self.net.ns(host), "mgmt", kind == "heal-witness")
        elif kind == "witness-down":
            if not labproc.stop(self.witness_dir, "etcd"):
                raise LabError("fault witness-down: the witness is not running")
        elif kind == "witness-up":
            if labproc.load(self.witness_dir, "etcd") is not None:
                raise LabError("fault witness-up: the witness is running")
            self._start_witness(fresh=False)
        elif kind in ("stall-replication", "heal-replication"):
            self._set_replication(kind == "heal-replication")
        elif kind == "reset-proxy":
            out["server"] = server = self._server(server)
            out["reset"] = self._reset_proxy(server)
        elif kind in ("fill-disk", "heal-disk"):
            assert host is not None
            out["bytes"] = self._fill_state_fs(host, full=kind == "fill-disk")
        elif kind == "destroy-domain":   # `virsh destroy` of the FT server's domain on that host
            assert host is not None
            if not self.libvirt_root(host).is_dir():
                raise LabError(f"fault {kind}: lab {self.prefix!r} has no libvirtd (up --backend libvirt)")
            out["server"] = server = self._server(server)
            try:
                self.libvirtd(host).virsh_ok("destroy", server)
            except CoserverError as exc:
                raise LabError(f"fault {kind}: {exc}") from exc
        elif kind in ("kill-libvirtd", "start-libvirtd"):
            assert host is not None
            if not self.libvirt_root(host).is_dir():
                raise LabError(f"fault {kind}: lab {self.prefix!r} has no libvirtd (up --backend libvirt)")
            lv = self.libvirtd(host)
            try:
                out["pid"] = lv.kill() if kind == "kill-libvirtd" else lv.start().pid
            except CoserverError as exc:
                raise LabError(f"fault {kind}: {exc}") from exc
        _log.warning("lab.fault", **{k: v for k, v in out.items() if k != "at"})
        return out

    def _running_qemu(self, fault: str, host: str, server: str | None) -> QemuProcess:
        try:
            return self.qemu(host, server)
        except CoserverError as exc:
            raise LabError(f"fault {fault}: no running QEMU on {host} ({exc})") from exc

    # ---- each host's /var/lib/coserver: a file system of its own, so that it can fill up -------------
    def _mount_state_fs(self, host: str) -> None:
        """A real CoServer keeps its journals and logs on a file system that can fill up; here each
        host's lib directory is a tmpfs of STATE_FS_SIZE, so `fill-disk` fills that and nothing else."""
        lib = self.lib_dir(host)
        if not os.path.ismount(lib):
            run(["mount", "-t", "tmpfs", "-o", f"size={STATE_FS_SIZE},mode=0755", f"coserver-lab-{host}", str(lib)],
                f"mounting {host}'s state file system on {lib}", timeout=10, error=LabError)

    def _unmount_state_fs(self, host: str) -> list[str]:
        """Unmount it; its logs are kept on disk (<host>/lib-last) for whoever reads them afterwards."""
        lib = self.lib_dir(host)
        if not lib.is_dir() or not os.path.ismount(lib):
            return []
        keep = self.host_dir(host) / "lib-last"
        shutil.rmtree(keep, ignore_errors=True)
        for f in [*lib.rglob("*.jsonl"), *lib.rglob("*.log")]:
            if f.is_file() and not f.is_symlink():
                dest = keep / f.relative_to(lib)
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(f, dest)
        run(["umount", str(lib)], f"unmounting {host}'s state file system", timeout=10, error=LabError)
        return [f"state file system {lib} (logs kept in {keep})"]

    def _fill_state_fs(self, host: str, full: bool) -> int:
        """Fill (or empty again) the host's state file system; returns the bytes the filler holds."""
        lib, filler = self.lib_dir(host), self.lib_dir(host) / FILLER
        if not os.path.ismount(lib) or os.statvfs(lib).f_fsid == os.statvfs(self.host_dir(host)).f_fsid:
            raise LabError(f"fault fill-disk: {lib} is not the lab's own file system; not filling it")
        if not full:
            size = filler.stat().st_size if filler.exists() else 0
            filler.unlink(missing_ok=True)
            return size
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
        chunk = b"\0" * 65536
        try:
            while True:
                try:
                    os.write(fd, chunk)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise LabError(f"fault fill-disk: writing {filler}: {exc.strerror}") from exc
                    if len(chunk) == 1:
                        break
                    chunk = chunk[: len(chunk) // 2]   # fill the last blocks too
        finally:
            os.close(fd)
        return filler.stat().st_size

    def _freeze(self, host: str, seconds: float) -> list[int]:
        """A host stall: every supervisor, controller and QEMU of `host` SIGSTOPped together for
        `seconds`, then SIGCONTed (links stay up: the host is alive but silent, then speaks again)."""
        recs: list[ProcessRecord] = []
        for server in self.servers():
            sup = labproc.load(self.host_dir(host), self.supervisor_name(server))
            ctl = self.controller_process(host, server)
            recs += [r for r in (sup, ctl) if r is not None]
            try:
                q = self.qemu(host, server)
                if q.pid is not None:
                    recs.append(ProcessRecord.of(q.pid))
            except CoserverError:
                pass
        stopped = [r for r in recs if r.signal(signal.SIGSTOP)]
        try:
            time.sleep(seconds)
        finally:
            for r in reversed(stopped):   # QEMUs first, then controllers, then supervisors
                r.signal(signal.SIGCONT)
        return [r.pid for r in stopped]

    def _set_replication(self, up: bool) -> None:
        """Replication stalls while heartbeats flow (an MTU black hole, a firewall on the replication
        ports): on both hosts the route to the peer's replication address becomes a blackhole, so the
        COLO stream, NBD and the proxy's connections go silent; the sync links and heartbeats stay."""
        for host in HOSTS:
            peer = HOSTS[1 - HOSTS.index(host)]
            target = f"{self.net.repl_address(peer)}/32"
            netns.ip("route", "flush", target, ns=self.net.ns(host), check=False)
            if up:
                self.net.add_repl_routes(host)
            else:
                netns.ip("route", "add", "blackhole", target, ns=self.net.ns(host))

    def _reset_proxy(self, server: str) -> int:
        """The COLO proxy's two streams between the hosts (client packets mirrored to the secondary,
        its replies back to colo-compare) reset, as a switch port flap or a firewall's state flush does:
        `ss -K` closes them on the secondary's side (the primary gets an RST). The secondary's chardevs
        reconnect within a second. Returns how many connections were closed."""
        ports = self.sync_ports(server)
        closed = 0
        for host in HOSTS:
            for port in (ports.mirror, ports.compare):
                res = run(netns.exec_argv(self.net.ns(host), ["ss", "-K", "-t", "-n", "dport", "=", f":{port}"]),
                          "fault reset-proxy: ss -K", error=LabError, timeout=10)
                closed += sum(1 for line in res.stdout.splitlines()[1:] if line.strip())
        return closed

    def _power_off_mark(self, host: str) -> Path:
        """The file that says `host` is powered off (fault power-off until power-on or down)."""
        return self.host_dir(host) / "powered-off"

    def _power_off(self, host: str) -> list[int]:
        """A power cut of one CoServer: its links go dark first (so no FIN or RST of the dying host
        reaches anyone), then its supervisor, controller and QEMU are killed at once."""
        if self._power_off_mark(host).exists():
            raise LabError(f"fault power-off: {host} is already powered off")
        self.net.set_host_links(host, up=False)
        killed: list[int] = []
        for server in self.servers():
            sup = labproc.load(self.host_dir(host), self.supervisor_name(server))
            ctl = self.controller_process(host, server)
            try:
                qemu: QemuProcess | None = self.qemu(host, server)
            except CoserverError:
                qemu = None
            for rec in (sup, ctl):
                if rec is not None and rec.alive():
                    rec.signal(signal.SIGKILL)
                    killed.append(rec.pid)
            if qemu is not None and qemu.alive() and qemu.pid is not None:
                killed.append(qemu.pid)
                qemu.kill()
        if self.libvirt_root(host).is_dir():   # the libvirt backend's daemon goes down with the host
            lv = self.libvirtd(host).process()
            if lv is not None and lv.alive():
                lv.signal(signal.SIGKILL)
                killed.append(lv.pid)
        self._power_off_mark(host).write_text(f"{time.time()}\n")
        return killed

    def _power_on(self, host: str) -> None:
        """Power back: links up, and the host's controller starts as systemd would start it at boot
        (its journal and wish kept); it finds no QEMU and rejoins as the secondary."""
        marker = self._power_off_mark(host)
        if not marker.exists():
            raise LabError(f"fault power-on: {host} was not powered off")
        self.net.set_host_links(host, up=True)
        if self.libvirt_root(host).is_dir():   # boots before the controllers, as systemd orders them
            try:
                self.libvirtd(host).start()
            except CoserverError as exc:
                raise LabError(f"fault power-on: {exc}") from exc
        for server in self.servers():
            self._run_controller(host, server)
        marker.unlink()

    # ---- down -------------------------------------------------------------------------
    def down(self) -> list[str]:
        """Remove everything `up` made (idempotent); return what was removed."""
        removed: list[str] = []
        servers = self.servers()
        for host in HOSTS:
            for server in servers:
                removed += self._stop_controller(host, server)
                removed += self._stop_qemu(host, server)
        for host in HOSTS:   # its domains' QEMUs, then the daemon (before the sweep: by their own records)
            if self.libvirt_root(host).is_dir():
                removed += self.libvirtd(host).stop()
        if labproc.stop(self.witness_dir, "etcd"):
            removed.append("witness etcd")
        for ns in self.net.existing():
            removed += _kill_namespace_pids(ns)
        for ns in self.net.existing():
            netns.delete(ns)
            removed.append(f"namespace {ns}")
        shm = overlay_dir(self.prefix, "x").parent
        if _own_real_dir(shm):  # never a planted symlink, never someone else's files
            shutil.rmtree(shm, ignore_errors=True)
            removed.append(f"overlays {shm}")
        for host in HOSTS:
            marker = self._power_off_mark(host)   # down takes the power fault with it: the
            if marker.exists():                            # next up starts both hosts
                marker.unlink()
                removed.append(f"{host}'s power-off mark")
            for server in servers:   # what a crashed QEMU or controller left: sockets, records
                sd = self.lib_dir(host) / "servers" / server
                for path in [*sd.glob("*.sock"), *sd.glob("*.qmp"), *sd.glob("*.ctl"),
                             self.host_dir(host) / f"{server}.controller.pid.json",
                             self.host_dir(host) / f"{self.supervisor_name(server)}.proc.json"]:
                    if path.exists() or path.is_symlink():
                        path.unlink()
        for host in HOSTS:
            removed += self._unmount_state_fs(host)
        st = LabState.load(self.state_file) if self.state_file.exists() else None
        if st is not None:
            st.state = "stopped"
            st.save(self.state_file)
        if self.registry_file.exists():
            self.registry_file.unlink()
        return removed

    def _stop_controller(self, host: str, server: str) -> list[str]:
        """The supervisor first (it stops its controller), then a controller left without one."""
        hd = self.host_dir(host)
        gone = [f"supervisor {host}/{server}"] if labproc.stop(hd, self.supervisor_name(server)) else []
        rec = self.controller_process(host, server)
        if rec is not None:
            rec.signal(signal.SIGKILL)
            gone.append(f"controller {host}/{server} (pid {rec.pid})")
        self.controller_record(host, server).unlink(missing_ok=True)
        return gone

    def controller_process(self, host: str, server: str | None = None) -> ProcessRecord | None:
        return labproc.load_record(self.controller_record(host, server))

    def _stop_qemu(self, host: str, server: str) -> list[str]:
        try:
            proc = self.qemu(host, server)
        except CoserverError:
            return []
        if isinstance(proc, LibvirtQemu) and self.libvirt_root(host).is_dir():
            # its libvirtd answers in the host's view only (this process is outside it): virsh there
            try:
                self.libvirtd(host).virsh("destroy", server, timeout=15)
            except CoserverError:
                pass   # libvirtd is down: stop() signals the QEMU itself
        proc.stop(timeout=5.0)   # gone by now; else signals
        return [f"qemu {host}/{server} (pid {proc.pid})"]


@dataclass(frozen=True)
class LabServer:
    """One FT server of a lab, as the pair client's Site (pair.client.Site): its two controllers."""

    lab: Lab
    name: str

    def ask(self, host: str, request: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        return self.lab.ask(host, request, timeout, server=self.name)

    def status(self) -> dict[str, Any]:
        return self.lab.status(self.name)


def _own_real_dir(path: Path) -> bool:
    """A directory (not a symlink to one) owned by us: what `down` may remove under a shared /dev/shm."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid()


def _kill_namespace_pids(ns: str) -> list[str]:
    """Processes still running in one of the lab's namespaces are the lab's: end them by pid."""
    proc = netns.ip("netns", "pids", ns, check=False)
    gone = []
    for pid_text in proc.stdout.split():
        try:
            rec = ProcessRecord.of(int(pid_text))
        except (CoserverError, ValueError):
            continue
        rec.signal(signal.SIGKILL)
        gone.append(f"process {rec.pid} in {ns}")
    return gone


def _host_notes(st: dict[str, Any]) -> dict[str, str]:
    """Per host, what its controller says it is waiting for (or why it cannot be asked)."""
    return {h: f"{h}: {e.get('error') or (e.get('reprotect') or {}).get('note') or e.get('state')}"
            for h, e in st["hosts"].items()}
