"""The one-machine lab: two CoServers as namespaces running one FT virtual server in COLO.

`lab up` builds what it needs (lab guest, network, disks, the etcd witness),
starts a controller per CoServer and then does what `server start` does: the
controllers start the guest on cs1, the secondary on cs2, and protect the pair
themselves; the lab never starts a QEMU or enters COLO. It returns once the pair
is protected with checkpoints flowing. Any failure tears down everything `up`
made and reports the step that failed: never half a pair.

`lab status` asks both controllers; `lab down` removes every namespace,
process, socket and temp file the lab made, also after a crash (it finds
what is left by the lab prefix and the records in the workdir). Guest disks
and logs stay in the workdir, so the guest's data survives `down`/`up`:
the next `up` starts from cs1's disk and re-syncs cs2's.
"""

from __future__ import annotations

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
from coserver.colo.argv import Node
from coserver.colo.settings import ColoSettings
from coserver.controller import control
from coserver.controller.config import ControllerConfig, LinkConfig
from coserver.controller.errors import ControlError
from coserver.controller.heartbeat import load_or_create_key
from coserver.errors import CoserverError
from coserver.hardware import check_spec, get_profile
from coserver.hardware.config import resolve
from coserver.hardware.spec import load_spec
from coserver.images import qemu_img
from coserver.images.accel import choose_accel
from coserver.images.guestclient import connect_journal
from coserver.images.labguest import build_lab_guest
from coserver.lab import net as labnet
from coserver.lab.net import GUEST_ADDRESS, HOSTS, TAP, LabNet
from coserver.lab.spec import DEVICE_SETS, GUEST_PORT, write_lab_spec
from coserver.machine.launcher import QemuProcess
from coserver.pair.summary import host_entry, summarize
from coserver.paths import qemu_install
from coserver.sys import netns
from coserver.sys import proc as labproc
from coserver.sys.files import private_dirs
from coserver.sys.proc import ProcessRecord

_log = log.get("lab")

DEFAULT_PREFIX = "cs"
DEFAULT_PROFILE = "dl380-g5"
QEMU_NAME = "qemu"
HEARTBEAT_PORT = 7400
WITNESS_PORT = 2379
ETCD = "/usr/bin/etcd"
REGISTRY = Path("/run/coserver/labs")
#: fault -> (needs --host, needs --link)
FAULTS: dict[str, tuple[bool, bool]] = {
    "kill-qemu": (True, False), "hang-qemu": (True, False), "resume-qemu": (True, False),
    "kill-controller": (True, False), "cut-link": (False, True), "heal-link": (False, True),
    "cut-all-links": (False, False), "heal-all-links": (False, False),
    "power-off": (True, False), "power-on": (True, False),
}


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
    devices: str = "virtio"        # the built-in guest's NIC/disk: "virtio" or the profile's "emulated"
    #: `up` returns only after the pair stayed protected this long with checkpoints flowing
    #: (0: at least three checkpoint periods, and never under 5 s).
    confirm_s: float = 0.0

    #: The pair must be protected within this long after `server start` (boot, grace, sync, COLO).
    protect_timeout_s: float = 180.0
    #: The lab guest boots in about 10 s under TCG: protect it after this long, not while it boots.
    boot_grace_s: float = 15.0
    #: server stop: the power button, then this long for the guest to power off.
    stop_timeout_s: float = 30.0

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
    devices: str = ""
    checkpoint_ms: int = 0
    accel: str = "tcg"
    guest: dict[str, Any] = field(default_factory=dict)
    created: float = field(default_factory=time.time)

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

    def control_socket(self, host: str) -> Path:
        return self.host_dir(host) / "control.sock"

    def controller_record(self, host: str) -> Path:
        """The running controller's identity, written by its supervisor at each (re)start."""
        return self.host_dir(host) / "controller.pid.json"

    @property
    def key_file(self) -> Path:
        """The pair's shared heartbeat key (0600); both controllers read the same file."""
        return self.workdir / "pair.key"

    @property
    def witness_dir(self) -> Path:
        return self.workdir / "witness"

    # ---- up ---------------------------------------------------------------------------
    def up(self, opts: LabOptions, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
        say = progress or (lambda msg: None)
        self.validate(opts)  # bad input: one line, before anything is looked at or made
        ColoSettings(checkpoint_ms=opts.checkpoint_ms, sync_speed_mib_s=opts.sync_speed_mib_s)  # one line if bad
        busy = self.net.existing()
        if busy or self.registry_file.exists():
            raise LabError(f"lab prefix {self.prefix!r} is in use ({', '.join(busy) or self.registry_file}); "
                           f"run `coserver lab down --prefix {self.prefix}` first")
        self._check_workdir()
        state = LabState(prefix=self.prefix, workdir=str(self.workdir), checkpoint_ms=opts.checkpoint_ms)
        step = "prepare"
        try:
            step = "build the lab guest"
            say(step)
            spec_path = self._prepare_spec(opts, state)
            step = "check the FT server spec"
            say(step)
            report = check_spec(spec_path)
            spec = load_spec(spec_path)
            configs = {h: resolve(spec, h) for h in HOSTS}
            lab_cfg = configs["cs1"].lab
            state.guest = {"address": lab_cfg.address if lab_cfg else GUEST_ADDRESS,
                           "port": lab_cfg.port if lab_cfg else GUEST_PORT,
                           "mac": configs["cs1"].nics[0].mac, "client_netns": self.net.ns("client"),
                           "serial": configs["cs1"].smbios.serial, "uuid": configs["cs1"].smbios.uuid}
            state.spec, state.profile, state.ftserver = str(spec_path), report.profile, spec.name
            state.devices = f"{configs['cs1'].nics[0].model}+{configs['cs1'].disks[0].bus}"
            step = "make the lab network"
            say(step)
            REGISTRY.mkdir(parents=True, exist_ok=True)
            self.registry_file.write_text(json.dumps({"workdir": str(self.workdir)}) + "\n")
            self.net.create()
            state.accel = choose_accel(qemu_install())
            state.save(self.state_file)
            nodes = self._nodes(configs)
            step = "prepare the disks"
            say(step)
            self._prepare_disks(nodes)
            step = "start the witness (etcd)"
            say(step)
            self._start_witness()
            step = "start the controllers"
            say(step)
            load_or_create_key(self.key_file)
            for host in HOSTS:
                self._start_controller(host, nodes[host], opts, spec_path, state.accel, spec.name)
            state.state = "confirming"   # from here the controllers' reports say what the pair is
            state.save(self.state_file)
            step = f"server start {spec.name}"
            say(f"{step}: the controllers start the guest on cs1 and protect it themselves")
            for host in HOSTS:
                self.ask(host, {"cmd": "start", "reason": "lab up"})
            step = "wait for the pair to protect itself"
            self._wait_protected(say, timeout=opts.protect_timeout_s)
            step = "confirm the pair stays protected"
            say(f"{step} ({opts.confirm_window_s():g} s, checkpoints flowing)")
            self._confirm_protected(opts.confirm_window_s())
            self._wait_guest(state)
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
        if opts.spec is None:
            get_profile(opts.profile)  # unknown profile: one line naming the known ones
            if opts.devices not in DEVICE_SETS:
                raise LabError(f"--devices must be one of {', '.join(DEVICE_SETS)}, got {opts.devices!r}")
            return
        if not opts.spec.is_file():
            raise LabError(f"spec {opts.spec}: " + ("not a regular file" if opts.spec.exists() else "no such file"))
        load_spec(opts.spec)  # its schema: one SpecError line naming file and key

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

    def _prepare_spec(self, opts: LabOptions, state: LabState) -> Path:
        if opts.spec is not None:  # validate() has checked it
            return opts.spec.resolve()
        guest = build_lab_guest()
        disks = {h: self.host_dir(h) / "disk.qcow2" for h in HOSTS}
        for h in HOSTS:
            self.host_dir(h).mkdir(mode=0o700, exist_ok=True)
        if not disks["cs1"].exists():
            guest.new_data_disk(disks["cs1"])
        return write_lab_spec(self.workdir / "ftserver.toml", prefix=self.prefix, profile=opts.profile,
                              guest=guest, disks=disks, devices=opts.devices)

    def _nodes(self, configs: dict) -> dict[str, Node]:
        nodes = {}
        for host in HOSTS:
            hd = self.host_dir(host)
            hd.mkdir(mode=0o700, exist_ok=True)
            disk = configs[host].disks[0].path
            nodes[host] = Node(name=host, workdir=hd, sync_addr=self.net.repl_address(host), tap=TAP,
                               disk=Path(disk), mac=configs[host].nics[0].mac, netns=self.net.ns(host),
                               overlay_dir=overlay_dir(self.prefix, host))
        return nodes

    def _prepare_disks(self, nodes: dict[str, Node]) -> None:
        primary, secondary = nodes["cs1"], nodes["cs2"]
        if not primary.disk.exists():
            raise LabError(f"disk {primary.disk} of cs1 does not exist")
        size = qemu_img.info(primary.disk).virtual_size
        if secondary.disk.exists() and qemu_img.info(secondary.disk).virtual_size != size:
            secondary.disk.unlink()  # a stale copy of another size: start it blank
        if not secondary.disk.exists():
            secondary.disk.parent.mkdir(parents=True, exist_ok=True)
            qemu_img.create(secondary.disk, size)
        for node in nodes.values():  # either host runs a secondary some day; its controller makes the overlays
            make_overlay_dir(self.prefix, node.name)  # 0700 and ours, or one line: never a planted one

    def _wait_protected(self, say: Callable[[str], None], timeout: float) -> None:
        """Poll the controllers until they report the pair protected, showing what they do meanwhile;
        raise with their alert or notes (and any QEMU's last log line) if it does not come."""
        deadline = time.monotonic() + timeout
        seen: dict[str, str] = {}
        while True:
            st = self.status()
            for host, e in st["hosts"].items():
                sync = e.get("sync") or {}
                what = f"{e.get('role')}/{e.get('state')}"
                if sync and not sync.get("finished") and e.get("state") == "syncing":
                    what += f" sync {sync.get('percent', 0):.0f}%"
                if seen.get(host) != what:
                    seen[host] = what
                    say(f"{host}: {what}")
            if st["state"] == "protected":
                return
            if st.get("alert"):
                raise LabError(f"the pair cannot protect itself: {st['alert']}")
            if time.monotonic() > deadline:
                notes = [f"{note}; qemu log: {labproc.last_line(self.host_dir(h) / (QEMU_NAME + '.log'))}"
                         for h, note in _host_notes(st).items()]
                raise LabError(f"the pair was not protected within {timeout:g} s ({st['state']}; "
                               f"{'; '.join(notes)})")
            time.sleep(0.5)

    def _wait_guest(self, state: LabState, timeout: float = 60.0) -> None:
        """The guest's service answers clients (protected implies booted; this says so from outside)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                connect_journal(self.net.ns("client"), state.guest["address"], state.guest["port"], 3.0).close()
                return
            except CoserverError as exc:
                if time.monotonic() > deadline:
                    raise LabError(f"the guest did not answer at {state.guest['address']}:{state.guest['port']} "
                                   f"within {timeout:g} s: {exc}") from exc
                time.sleep(0.5)

    def _start_witness(self) -> None:
        """etcd in the witness namespace, on the management network."""
        self.witness_dir.mkdir(mode=0o700, exist_ok=True)
        url = f"http://{labnet.WITNESS_ADDRESS}:{WITNESS_PORT}"
        peer = "http://127.0.0.1:2380"
        shutil.rmtree(self.witness_dir / "etcd", ignore_errors=True)  # a fresh witness per lab up
        labproc.start("etcd", [ETCD, "--name", "witness", "--data-dir", str(self.witness_dir / "etcd"),
                               "--listen-client-urls", url, "--advertise-client-urls", url,
                               "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                               "--initial-cluster", f"witness={peer}", "--log-level", "warn"],
                      self.witness_dir, netns=self.net.ns("witness"))
        deadline = time.monotonic() + 20
        while True:
            try:
                netns.socket_in(self.net.ns("witness"), labnet.WITNESS_ADDRESS, WITNESS_PORT, 1.0).close()
                return
            except OSError as exc:
                if labproc.load(self.witness_dir, "etcd") is None or time.monotonic() > deadline:
                    raise LabError(f"the witness (etcd) did not start: "
                                   f"{labproc.last_line(self.witness_dir / 'etcd.out')}") from exc
                time.sleep(0.2)

    def controller_config(self, host: str, node: Node, opts: LabOptions, spec: Path, accel: str,
                          ftserver: str) -> ControllerConfig:
        hd = self.host_dir(host)
        peer = HOSTS[1 - HOSTS.index(host)]
        links: list[LinkConfig] = [{"name": f"sync{n}", "local_ip": self.net.sync_address(host, n),
                  "peer_ip": self.net.sync_address(peer, n), "port": HEARTBEAT_PORT,
                  "device": self.net.sync_ifname(n)} for n in labnet.SYNC_SUBNETS]
        return ControllerConfig(
            host=host, peer=peer, ftserver=ftserver, qemu_workdir=str(hd), qemu_name=QEMU_NAME,
            control_socket=str(self.control_socket(host)), log_file=str(hd / "controller.log.jsonl"),
            journal_file=str(hd / "controller.journal.json"), key_file=str(self.key_file), links=links,
            witness={"host": labnet.WITNESS_ADDRESS, "port": WITNESS_PORT, "ttl": 2},
            node={"sync_addr": node.sync_addr, "tap": node.tap, "disk": str(node.disk), "mac": node.mac,
                  "overlay_dir": str(node.overlay_dir) if node.overlay_dir else None},
            checkpoint_ms=opts.checkpoint_ms, spec=str(spec), accel=accel, peer_repl_addr=self.net.repl_address(peer),
            reprotect=opts.reprotect, sync_speed_mib_s=opts.sync_speed_mib_s, preferred=host == HOSTS[0],
            boot_grace_s=opts.boot_grace_s, stop_timeout_s=opts.stop_timeout_s)

    def _start_controller(self, host: str, node: Node, opts: LabOptions, spec: Path, accel: str,
                          ftserver: str) -> None:
        hd = self.host_dir(host)
        (hd / "controller.journal.json").unlink(missing_ok=True)  # a new pair: no decisions to resume
        (hd / "maintenance").unlink(missing_ok=True)
        cfg_path = hd / "controller.conf.json"
        self.controller_config(host, node, opts, spec, accel, ftserver).save(cfg_path)
        self._run_controller(host)

    def _run_controller(self, host: str) -> None:
        """The host's controller under its supervisor (the lab's systemd), from its saved config."""
        hd = self.host_dir(host)
        cfg_path = hd / "controller.conf.json"
        labproc.start("supervisor", [sys.executable, "-m", "coserver.lab.supervise",
                                     "--record", str(self.controller_record(host)), "--",
                                     sys.executable, "-m", "coserver.controller.daemon", "--config", str(cfg_path)],
                      hd, netns=self.net.ns(host))
        deadline = time.monotonic() + 30
        while not self.control_socket(host).exists():
            if labproc.load(hd, "supervisor") is None or time.monotonic() > deadline:
                raise LabError(f"controller of {host} did not start: {labproc.last_line(hd / 'supervisor.out')}")
            time.sleep(0.1)

    def _confirm_protected(self, window_s: float) -> None:
        """Success means the state is true: both controllers report the pair protected, both QEMUs
        live, and checkpoints keep coming for `window_s`. Otherwise raise with the reason, the failing
        QEMU's last log line first (e.g. an assertion at its first checkpoint)."""
        deadline = time.monotonic() + window_s + 30.0   # the controllers' first status may take a moment
        first: int | None = None
        since: float | None = None
        while True:
            for host in HOSTS:
                try:
                    proc = QemuProcess.attach(self.host_dir(host), QEMU_NAME)
                    alive = proc.alive()
                except CoserverError:
                    alive = False
                if not alive:
                    raise LabError(f"the QEMU on {host} died while the pair entered COLO: "
                                   f"{labproc.last_line(self.host_dir(host) / (QEMU_NAME + '.log'))}")
            st = self.status()
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
    def ask(self, host: str, request: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        """One request to a host's controller over its control socket."""
        try:
            return self.ask_socket(self.control_socket(host), request, timeout)
        except LabError as exc:
            raise LabError(f"controller of {host}: {exc}") from exc

    @staticmethod
    def ask_socket(path: Path, request: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        """One JSON request/reply with a controller's control socket (controller.control.ask)."""
        try:
            return control.ask(path, request, timeout)
        except ControlError as exc:
            raise LabError(str(exc)) from exc

    def status(self) -> dict[str, Any]:
        st = LabState.load(self.state_file) if self.workdir.is_dir() else None
        if st is None or not self.net.existing():
            return {"state": "stopped", "prefix": self.prefix, "primary": None, "secondary": None,
                    "checkpoints": 0, "hosts": {}, "guest": st.guest if st else {}}
        hosts: dict[str, Any] = {}
        for host in HOSTS:
            entry: dict[str, Any] = {"netns": self.net.ns(host), "role": None, "qemu_pid": None}
            try:
                s = self.ask(host, {"cmd": "status"})["status"]
                entry.update(host_entry(s))
            except LabError as exc:
                entry["error"] = str(exc)
                rec = self.controller_process(host)
                entry["controller_pid"] = rec.pid if rec else None
            hosts[host] = entry
        pair = summarize(hosts, syncing=st.state in ("starting", "syncing"))
        return {"state": pair["state"], "prefix": self.prefix, "workdir": str(self.workdir), "primary": pair["primary"],
                "secondary": pair["secondary"], "checkpoints": pair["checkpoints"], "checkpoint_ms": st.checkpoint_ms,
                "accel": st.accel, "profile": st.profile, "spec": st.spec, "ftserver": st.ftserver,
                "devices": st.devices, "alert": pair["alert"], "hosts": hosts, "guest": st.guest}

    # ---- fault injection ---------------------------------------------------------------
    def fault(self, kind: str, host: str | None = None, link: int | None = None) -> dict[str, Any]:
        """Inject one fault; return what was done (for --json). Nothing changes on bad input."""
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
        if kind in ("kill-qemu", "hang-qemu", "resume-qemu"):
            assert host is not None
            try:
                proc = QemuProcess.attach(self.host_dir(host), QEMU_NAME)
            except CoserverError as exc:
                raise LabError(f"fault {kind}: no running QEMU on {host} ({exc})") from exc
            {"kill-qemu": proc.kill, "hang-qemu": proc.pause, "resume-qemu": proc.resume}[kind]()
            out["pid"] = proc.pid
        elif kind == "kill-controller":
            assert host is not None
            rec = self.controller_process(host)
            if rec is None:
                raise LabError(f"fault {kind}: no running controller on {host}")
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
        _log.warning("lab.fault", **{k: v for k, v in out.items() if k != "at"})
        return out

    def _power_off(self, host: str) -> list[int]:
        """A power cut of one CoServer: its links go dark first (so no FIN or RST of the dying host
        reaches anyone), then its supervisor, controller and QEMU are killed at once."""
        if (self.host_dir(host) / "powered-off").exists():
            raise LabError(f"fault power-off: {host} is already powered off")
        self.net.set_host_links(host, up=False)
        killed: list[int] = []
        sup = labproc.load(self.host_dir(host), "supervisor")
        ctl = self.controller_process(host)
        try:
            qemu: QemuProcess | None = QemuProcess.attach(self.host_dir(host), QEMU_NAME)
        except CoserverError:
            qemu = None
        for rec in (sup, ctl):
            if rec is not None and rec.alive():
                rec.signal(signal.SIGKILL)
                killed.append(rec.pid)
        if qemu is not None and qemu.alive() and qemu.pid is not None:
            killed.append(qemu.pid)
            qemu.kill()
        (self.host_dir(host) / "powered-off").write_text(f"{time.time()}\n")
        return killed

    def _power_on(self, host: str) -> None:
        """Power back: links up, and the host's controller starts as systemd would start it at boot
        (its journal and wish kept); it finds no QEMU and rejoins as the secondary."""
        marker = self.host_dir(host) / "powered-off"
        if not marker.exists():
            raise LabError(f"fault power-on: {host} was not powered off")
        self.net.set_host_links(host, up=True)
        self.control_socket(host).unlink(missing_ok=True)   # the killed controller's: not an answer
        self._run_controller(host)
        marker.unlink()

    # ---- down -------------------------------------------------------------------------
    def down(self) -> list[str]:
        """Remove everything `up` made (idempotent); return what was removed."""
        removed: list[str] = []
        for host in HOSTS:
            removed += self._stop_controller(host)
            removed += self._stop_qemu(host)
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
            for leftover in ("control.sock", "qemu.qmp", "qemu.ctl", "serial.sock", "compare0.sock",
                             "compare_out.sock", "controller.pid.json", "supervisor.proc.json"):
                path = self.host_dir(host) / leftover
                if path.exists() or path.is_symlink():
                    path.unlink()
        st = LabState.load(self.state_file) if self.state_file.exists() else None
        if st is not None:
            st.state = "stopped"
            st.save(self.state_file)
        if self.registry_file.exists():
            self.registry_file.unlink()
        return removed

    def _stop_controller(self, host: str) -> list[str]:
        """The supervisor first (it stops its controller), then a controller left without one."""
        hd = self.host_dir(host)
        gone = [f"supervisor {host}"] if labproc.stop(hd, "supervisor") else []
        rec = self.controller_process(host)
        if rec is not None:
            rec.signal(signal.SIGKILL)
            gone.append(f"controller {host} (pid {rec.pid})")
        self.controller_record(host).unlink(missing_ok=True)
        return gone

    def controller_process(self, host: str) -> ProcessRecord | None:
        return labproc.load_record(self.controller_record(host))

    def _stop_qemu(self, host: str) -> list[str]:
        try:
            proc = QemuProcess.attach(self.host_dir(host), QEMU_NAME)
        except CoserverError:
            return []
        proc.stop(timeout=5.0)
        return [f"qemu {host} (pid {proc.pid})"]


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
