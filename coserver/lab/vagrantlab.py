"""The Vagrant lab: cs1, cs2 and a witness as three machines of their own (contrib/vagrant/Vagrantfile).

The namespace lab proves the logic on one kernel; this one gives each CoServer its own kernel, disks
and power switch. It runs on this machine without touching the machine's own libvirt or network:

- a network namespace of its own (``cs-vagrant``) with a libvirtd of its own (coserver.lab.libvirtd,
  its directories under <workdir>/libvirt bound over /etc/libvirt, /var/lib/libvirt, ... in that
  view), in which vagrant runs too: libvirt's bridges, dnsmasq and iptables rules, the machines' QEMUs
  and vagrant's ssh to them all live in that namespace; ``down`` destroys the machines, stops that
  libvirtd and deletes the namespace and the directories, so no domain, network or volume is left;
- vagrant's own state (VAGRANT_HOME: the box; the .vagrant directory) under <workdir> too;
- the stage (<workdir>/stage, rsynced into each machine as /opt/coserver-stage): what the README's
  "Deploying on two hosts" has an operator carry to two new hosts: the site file, the pair's key
  (made once, copied), each host's certificates (the CA's key stays here), the FT server's spec and
  its guest (the lab guest), plus what these machines cannot download: the Python wheels and this
  host's cached builds (the patched QEMU and its self-test verdicts: the same Debian, the same binary).

The machines' provisioning (contrib/vagrant/provision/*.sh) runs the README's commands; ``up`` then
starts the FT server from cs1 (``coserver server start journal`` returns when protected) and runs
``coserver site check`` on both CoServers. Success means the state is true: ``up`` fails with the
reason when a check fails or the server is not protected.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from coserver.errors import CoserverError
from coserver.lab import libvirtd as labvirt
from coserver.lab.hostexec import host_argv
from coserver.lab.spec import lab_guest_address, write_lab_spec
from coserver.paths import cache_dir, qemu_install
from coserver.sys import netns
from coserver.sys.files import sha256_file, write_new
from coserver.sys.run import last_line
from coserver.sys.sysfs import flag_on

REPO = Path(__file__).resolve().parents[2]
VAGRANT_DIR = REPO / "contrib" / "vagrant"
DEFAULT_WORKDIR = Path("/var/tmp/coserver-vagrant")
NETNS = "cs-vagrant"
BOX_NAME = "coserver/debian12"
SITE_NAME = "vagrant"
MACHINES = ("witness", "cs1", "cs2")
COSERVERS = ("cs1", "cs2")
#: Addresses fixed by the Vagrantfile.
WITNESS_ADDRESS = "10.210.1.21"
GUEST_ADDRESS = "10.210.2.10"
SERVER = "journal"
#: The libvirt domain of a machine (the Vagrantfile's default_prefix + the machine's name).
DOMAIN_PREFIX = "coserver-"
#: The sync links' interfaces (the Vagrantfile's libvirt__mac) on cs<n>: link 1, link 2.
SYNC_MAC = "52:54:00:ca:{link:02x}:{n:02x}"
VAGRANT = "vagrant"
DNSMASQ = Path("/usr/sbin/dnsmasq")
APT_HINT = "apt-get install --no-install-recommends $(grep -v '^#' deps/apt-vagrant.txt)  (or: make vagrant-setup)"

Progress = Callable[[str], None]


#: Where the host's kernel says KVM may run guests that run KVM themselves (nested virtualisation).
NESTED = (Path("/sys/module/kvm_intel/parameters/nested"), Path("/sys/module/kvm_amd/parameters/nested"))


def nested_kvm_enabled(paths: tuple[Path, ...] = NESTED) -> bool:
    """Does the loaded KVM module (Intel's or AMD's) let guests run KVM themselves?"""
    return any(flag_on(path) for path in paths)


def host_accel(env: dict[str, str] | None = None) -> str:
    """The machines' accelerator: "kvm" where a KVM boot probe passes on this host (coserver.images.accel)
    and the kernel allows nested virtualisation, so the CoServers' own QEMUs run KVM too; else "tcg"
    (TCG inside TCG). COSERVER_VAGRANT_ACCEL=kvm|tcg decides instead."""
    forced = (os.environ if env is None else env).get("COSERVER_VAGRANT_ACCEL")
    if forced in ("kvm", "tcg"):
        return forced
    from coserver.images.accel import kvm_probe

    try:
        usable = kvm_probe(qemu_install()).usable
    except CoserverError:
        usable = False
    return "kvm" if usable and nested_kvm_enabled() else "tcg"


class VagrantLabError(CoserverError):
    """The Vagrant lab could not be checked, staged, brought up, used or torn down; one line says which."""


@dataclass
class VagrantLab:
    """One Vagrant lab under `workdir` (see the module docstring for what lives where)."""

    workdir: Path = DEFAULT_WORKDIR
    cs_memory_mib: int = 2048
    cs_cpus: int = 2
    witness_memory_mib: int = 512
    checkpoint_ms: int = 2000
    accel: str = "tcg"
    say: Progress = field(default=lambda _m: None, repr=False)

    # ---- places ---------------------------------------------------------------------------------
    @property
    def stage_dir(self) -> Path:
        return self.workdir / "stage"

    @property
    def pki_dir(self) -> Path:
        """The site's PKI with the CA's key: stays on this machine (the stage gets copies of host dirs)."""
        return self.workdir / "pki"

    def _host_dirs(self) -> dict[str, Path]:
        return {key: self.workdir / "host" / key for key in ("etc", "lib", "run")}

    @property
    def libvirtd(self) -> labvirt.HostLibvirtd:
        return labvirt.HostLibvirtd(host="vagrant", root=self.workdir / "libvirt", host_dir=self.workdir,
                                    view=self.view)

    def view(self, argv: list[str]) -> list[str]:
        """argv as run on the Vagrant lab's host: its namespace, its libvirt directories, no KVM (TCG)."""
        d = self._host_dirs()
        return netns.exec_argv(NETNS, host_argv(d["etc"], d["lib"], d["run"], argv, libvirt=self.workdir / "libvirt",
                                                no_kvm=self.accel == "tcg"))

    def env(self) -> dict[str, str]:
        return {**os.environ,
                "VAGRANT_HOME": str(self.workdir / "vagrant.d"),
                "VAGRANT_DOTFILE_PATH": str(self.workdir / "dot-vagrant"),
                "VAGRANT_CWD": str(VAGRANT_DIR),
                "VAGRANT_DEFAULT_PROVIDER": "libvirt",
                "VAGRANT_CHECKPOINT_DISABLE": "1",
                "VAGRANT_BOX_UPDATE_CHECK_DISABLE": "1",
                "VAGRANT_NO_COLOR": "1",
                "LIBVIRT_DEFAULT_URI": labvirt.URI,
                "COSERVER_VAGRANT_STAGE": str(self.stage_dir),
                "COSERVER_VAGRANT_BOX": BOX_NAME,
                "COSERVER_VAGRANT_ACCEL": self.accel,
                "COSERVER_VAGRANT_CS_MEMORY": str(self.cs_memory_mib),
                "COSERVER_VAGRANT_CS_CPUS": str(self.cs_cpus),
                "COSERVER_VAGRANT_WITNESS_MEMORY": str(self.witness_memory_mib)}

    # ---- checks ---------------------------------------------------------------------------------
    def check(self) -> None:
        """What the lab needs on this machine, before anything is made: one line for the first lack."""
        if self.cs_memory_mib < 1024:
            raise VagrantLabError(f"--cs-memory {self.cs_memory_mib}: a CoServer needs at least 1024 MiB "
                                  "(its controller, QEMU and the guest's 256 MiB)")
        if self.witness_memory_mib < 256 or self.cs_cpus < 1:
            raise VagrantLabError(f"--witness-memory {self.witness_memory_mib} / --cs-cpus {self.cs_cpus}: the witness "
                                  "needs at least 256 MiB, a CoServer at least one vCPU")
        if os.geteuid() != 0:
            raise VagrantLabError("the Vagrant lab needs root (network namespace, libvirtd)")
        if shutil.which(VAGRANT) is None:
            raise VagrantLabError(f"vagrant is not installed: {APT_HINT}")
        plugins = subprocess.run([VAGRANT, "plugin", "list"], capture_output=True, text=True, timeout=120,
                                 check=False, env={**os.environ, "VAGRANT_CHECKPOINT_DISABLE": "1"})
        if "vagrant-libvirt" not in plugins.stdout:
            raise VagrantLabError(f"vagrant's libvirt provider (vagrant-libvirt) is missing: {APT_HINT}")
        if not os.access(DNSMASQ, os.X_OK):
            raise VagrantLabError(f"dnsmasq ({DNSMASQ}) is missing (libvirt's DHCP on the management network): "
                                  f"{APT_HINT}")
        if shutil.which("iptables") is None and not Path("/usr/sbin/iptables").exists():
            raise VagrantLabError(f"iptables is missing (libvirt's network driver needs it): {APT_HINT}")
        labvirt.check_installed()
        need = 2 * self.cs_memory_mib + self.witness_memory_mib + 1024
        avail = _mem_available_mib()
        if avail < need:
            raise VagrantLabError(f"too little memory: the lab's machines need {need} MiB "
                                  f"(2 x {self.cs_memory_mib} + {self.witness_memory_mib} + 1024 for this host), "
                                  f"{avail} MiB are available: free some, or lower --cs-memory")

    # ---- the stage ------------------------------------------------------------------------------
    def stage(self) -> dict[str, Any]:
        """Make <workdir>/stage (see the module docstring); returns what it holds, with the box."""
        from coserver.images.labguest import build_lab_guest
        from coserver.images.vagrantbox import build_vagrant_box
        from coserver.site.keygen import write_key
        from coserver.site.load import load_site
        from coserver.site.pki import issue_user_cert, make_site_certs

        self.say("the box (coserver image vagrant-box)")
        box = build_vagrant_box(progress=self.say)
        stage = self.stage_dir
        # A site's secrets are made once: `up` again on running machines (after a failure, or to
        # re-provision) keeps the pair key and the CA they run with; `down` throws both away.
        key = stage / "pair.key"
        kept_key = key.read_bytes() if key.is_file() else None
        if stage.exists():
            shutil.rmtree(stage)
        stage.mkdir(mode=0o700, parents=True)
        site_file = stage / "site.toml"
        site_file.write_text(site_text(checkpoint_ms=self.checkpoint_ms, accel=self.accel))
        if kept_key is None:
            write_key(key)
        else:
            write_new(key, kept_key)
        site = load_site(site_file)
        if not (self.pki_dir / "ca").is_dir():
            self.say("the site's certificates (coserver site certs, and root's for the witness)")
            shutil.rmtree(self.pki_dir, ignore_errors=True)
            make_site_certs(site, self.pki_dir)
            issue_user_cert(self.pki_dir, "root")
        (stage / "pki").mkdir(mode=0o700)
        for d in sorted(self.pki_dir.iterdir()):
            if d.is_dir() and d.name != "ca":
                shutil.copytree(d, stage / "pki" / d.name, symlinks=True)
        self.say("the FT server: the lab guest, its spec")
        guest = build_lab_guest(progress=self.say)
        gdir = stage / "guest"
        gdir.mkdir()
        for src, name in ((guest.vmlinuz, "vmlinuz"), (guest.initrd, "initrd.img"),
                          (guest.data_template, "journal-data.qcow2")):
            shutil.copyfile(src, gdir / name)
        (stage / "servers").mkdir()
        images = Path("/var/lib/coserver/images/journal")
        in_vm = replace(guest, vmlinuz=images / "vmlinuz", initrd=images / "initrd.img")
        disk = Path("/var/lib/coserver/disks/journal-data.qcow2")
        spec = write_lab_spec(stage / "servers" / f"{SERVER}.toml", prefix=SITE_NAME, profile="dl380-g5",
                              guest=in_vm, disks=dict.fromkeys(COSERVERS, disk), name=SERVER)
        spec.write_text(vagrant_spec_text(spec.read_text()))
        self.say("the Python wheels (PyPI, cached by pyproject.toml)")
        wheels = build_wheels(progress=self.say)
        shutil.copytree(wheels, stage / "wheels")
        self.say("this host's cached builds (the patched QEMU, the lab guest, the self-test verdicts)")
        self._stage_cache(stage / "cache")
        return {"box": str(box.box), "stage": str(stage), "guest": guest.key}

    def _stage_cache(self, dst: Path) -> None:
        cache = cache_dir()
        qemu = qemu_install().system.resolve()
        build = qemu.parent.parent
        if build.parent.name != "qemu" or build.parent.parent != cache:
            raise VagrantLabError(f"the selected QEMU {qemu} is not a build in {cache}/qemu (make setup): the "
                                  "machines get this host's build, the same binary")
        (dst / "qemu").mkdir(parents=True)
        shutil.copytree(build, dst / "qemu" / build.name, symlinks=True)
        for name in ("selftest-verdicts.json", "qemu-selected.json"):
            if (cache / name).is_file():
                shutil.copy2(cache / name, dst / name)
        if (cache / "guest").is_dir():
            shutil.copytree(cache / "guest", dst / "guest", symlinks=True,
                            ignore=shutil.ignore_patterns(".lock", "*.partial", "tmp*"))

    # ---- the lab's host: namespace and libvirtd ---------------------------------------------------
    def start_host(self) -> None:
        """The namespace (loopback up) and its libvirtd, if not already there."""
        for d in [*self._host_dirs().values(), self.stage_dir]:   # vagrant validates the synced stage's path
            d.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not netns.exists(NETNS):
            netns.create(NETNS)
        lv = self.libvirtd
        if lv.process() is None:
            lv.prepare()
            lv.start()

    # ---- vagrant ----------------------------------------------------------------------------------
    def vagrant(self, *args: str, timeout: float = 3600.0, check: bool = True,
                echo: bool = False) -> subprocess.CompletedProcess[str]:
        """`vagrant ARGS` in the lab's view; check: a failure raises with vagrant's last line."""
        argv = self.view([VAGRANT, *args])
        if echo:
            res = subprocess.run(argv, text=True, timeout=timeout, check=False, env=self.env(),
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            sys.stderr.write(res.stdout)
        else:
            res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, env=self.env())
        if check and res.returncode != 0:
            raise VagrantLabError(f"vagrant {' '.join(args)}: exit {res.returncode}: "
                                  f"{last_line(res)}")
        return res

    def add_box(self, box: Path) -> None:
        listed = self.vagrant("box", "list", check=False).stdout
        marker = self.workdir / "box.sha256"
        digest = sha256_file(box)
        if BOX_NAME in listed and marker.is_file() and marker.read_text() == digest:
            return
        self.say(f"vagrant box add {BOX_NAME} ({box.stat().st_size >> 20} MiB)")
        self.vagrant("box", "add", "--force", "--name", BOX_NAME, str(box))
        marker.write_text(digest)

    def ssh(self, machine: str, argv: list[str], *, timeout: float = 600.0,
            check: bool = False) -> subprocess.CompletedProcess[str]:
        """Run argv as root on a machine (ssh with vagrant's key; argv quoted, never a built string)."""
        cfg = self.ssh_config(machine)
        ssh = ["ssh", "-F", str(cfg), machine, "sudo", "-n", "--", *[shlex.quote(a) for a in argv]]
        res = subprocess.run(netns.exec_argv(NETNS, ssh), capture_output=True, text=True, timeout=timeout,
                             check=False)
        if check and res.returncode != 0:
            raise VagrantLabError(f"{machine}: {' '.join(argv)}: exit {res.returncode}: "
                                  f"{last_line(res)}")
        return res

    def ssh_config(self, machine: str) -> Path:
        path = self.workdir / f"ssh-config.{machine}"
        if not path.is_file():
            res = self.vagrant("ssh-config", machine, timeout=120)
            path.write_text(res.stdout)
        return path

    def domain(self, machine: str) -> str:
        return f"{DOMAIN_PREFIX}{machine}"

    def virsh(self, *args: str, timeout: float = 60.0, check: bool = True) -> str:
        res = self.libvirtd.virsh(*args, timeout=timeout)
        if check and res.returncode != 0:
            raise VagrantLabError(f"virsh {' '.join(args)}: {last_line(res)}")
        return res.stdout

    # ---- the whole lab ------------------------------------------------------------------------------
    def up(self, *, start_server: bool = True) -> dict[str, Any]:
        """Check, stage, bring up the three machines, start the FT server protected, check both
        CoServers; returns the timings and the checks. Raises with the reason on any failure."""
        times: dict[str, float] = {}
        t0 = time.monotonic()
        self.check()
        self.workdir.mkdir(mode=0o700, parents=True, exist_ok=True)
        staged = self.stage()
        times["stage_s"] = round(time.monotonic() - t0, 1)
        t = time.monotonic()
        self.start_host()
        self.add_box(Path(staged["box"]))
        self.vagrant("validate")
        times["host_s"] = round(time.monotonic() - t, 1)
        for machine in MACHINES:
            t = time.monotonic()
            self.say(f"vagrant up {machine} (boot and provisioning)")
            # vagrant syncs rsync folders when it boots a machine, not when it provisions a running
            # one: a second `up` would re-provision it from the stage it had (an older key, CA, code)
            self.vagrant("up", machine, "--no-parallel", "--no-provision", echo=True, timeout=7200)
            self.vagrant("rsync", machine, timeout=1800)
            self.vagrant("provision", machine, echo=True, timeout=7200)
            (self.workdir / f"ssh-config.{machine}").unlink(missing_ok=True)
            times[f"up_{machine}_s"] = round(time.monotonic() - t, 1)
        result: dict[str, Any] = {"staged": staged, "times": times}
        if start_server:
            t = time.monotonic()
            self.say(f"coserver server start {SERVER} (on cs1; returns when protected)")
            self.ssh("cs1", ["coserver", "server", "start", SERVER], timeout=3600, check=True)
            times["protect_s"] = round(time.monotonic() - t, 1)
            result["status"] = self.server_status()
        result["site_check"] = {cs: self.site_check(cs) for cs in COSERVERS}
        failed = [cs for cs, c in result["site_check"].items() if not c["ok"]]
        times["total_s"] = round(time.monotonic() - t0, 1)
        if failed:
            raise VagrantLabError(f"coserver site check failed on {', '.join(failed)}: "
                                  + "; ".join(result["site_check"][cs]["failed"] for cs in failed))
        return result

    def site_check(self, machine: str) -> dict[str, Any]:
        res = self.ssh(machine, ["coserver", "site", "check", "--json"], timeout=300)
        try:
            data = json.loads(res.stdout)
        except ValueError:
            return {"ok": False, "failed": last_line(res), "checks": []}
        bad = [f"{c['name']}: {c['detail']}" for c in data.get("checks", []) if not c.get("ok")]
        return {"ok": res.returncode == 0 and not bad, "failed": "; ".join(bad), "checks": data.get("checks", [])}

    def server_status(self) -> dict[str, Any]:
        res = self.ssh("cs1", ["coserver", "status", SERVER, "--json"], timeout=120)
        try:
            return dict(json.loads(res.stdout))
        except ValueError:
            return {"error": last_line(res)}

    def down(self) -> list[str]:
        """Destroy the machines, stop the lab's libvirtd, delete its namespace and directories."""
        done: list[str] = []
        lv = self.libvirtd
        if lv.process() is not None:
            self.vagrant("destroy", "-f", check=False, timeout=600)
            done += [f"stopped {name}" for name in lv.stop()]
        if netns.exists(NETNS):
            netns.delete(NETNS)
            done.append(f"namespace {NETNS} deleted")
        for sub in ("libvirt", "vagrant.d", "dot-vagrant", "stage", "pki", "host"):
            p = self.workdir / sub
            if p.exists():
                _unmount_under(p)
                shutil.rmtree(p)
        for p in self.workdir.glob("ssh-config.*"):
            p.unlink()
        return done


#: The Vagrant site's fault-detection timing (site file keys): machines of TCG inside TCG.
#: fence_after_s: a primary whose keep-alive stalled past the lease re-claims its epoch this long (etcd
#: still holds the old lease for up to its TTL after the last refresh arrived); at 1 s, the Vagrant
#: lab's new primary fenced itself 15 s after a failover. Up to heartbeat_timeout_s it costs nothing:
#: the fence bound is the larger of the two.
SLOW_TIMING = {"heartbeat_interval_s": 0.5, "heartbeat_timeout_s": 5.0, "qmp_deadline_s": 4.0, "kill_hung_after_s": 6.0,
               "fence_after_s": 4.0}


def vagrant_spec_text(lab_spec: str) -> str:
    """The namespace lab's spec of the journal guest, moved to the Vagrant lab's client LAN: its address
    and its bridge. Each must be found: the first fault run got a guest still on the namespace lab's
    address (that lab's subnet had changed), unreachable from the LAN, and read it as a failover fault."""
    out = lab_spec
    for old, new in ((lab_guest_address(0), GUEST_ADDRESS), ('bridge = "lanbr"', 'bridge = "br-lan"')):
        if old not in out:
            raise VagrantLabError(f"the lab guest's spec has no {old!r} to move to the Vagrant LAN")
        out = out.replace(old, new)
    return out


def site_text(*, checkpoint_ms: int, accel: str) -> str:
    """The Vagrant lab's site file (the same on both CoServers): the Vagrantfile's addresses."""
    lines = [
        "# The coserver Vagrant lab's site (written by `coserver vagrant up`): cs1 and cs2 as the",
        "# Vagrantfile makes them (contrib/vagrant/Vagrantfile), the witness on the management network.",
        f'name = "{SITE_NAME}"',
        'preferred = "cs1"',
        f"checkpoint_ms = {checkpoint_ms}",
        f'accel = "{accel}"',
        "boot_grace_s = 60",
        "stop_timeout_s = 120",
        "# TCG inside TCG: a machine stalls for a second at times (measured: heartbeats 1 s late, QMP",
        "# answering in 0.5 s): fault detection waits longer (the promotion's wait grows with it)",
        *(f"{key} = {value:g}" for key, value in SLOW_TIMING.items()),
        "",
        "[witness]",
        f'endpoints = ["{WITNESS_ADDRESS}:2379"]',
        'ca = "/etc/coserver/pki/{host}/ca-cert.pem"',
        'cert = "/etc/coserver/pki/{host}/client-cert.pem"',
        'key = "/etc/coserver/pki/{host}/client-key.pem"',
    ]
    for n, host in enumerate(COSERVERS, start=1):
        peer = 3 - n
        lines += ["", f"[coservers.{host}]", f'management = "10.210.1.1{n}"', f'replication = "10.210.20.{n}"',
                  'bridge = "br-lan"']
        for link in (1, 2):
            lines += [f"[[coservers.{host}.links]]", f'device = "eth{2 + link}"', f'local = "10.210.1{link}.{n}/24"',
                      f'peer = "10.210.1{link}.{peer}"']
    return "\n".join(lines) + "\n"


def build_wheels(progress: Progress | None = None) -> Path:
    """Wheels of the project's Python dependencies (and pip, setuptools: `make venv` offline), in
    <cache>/vagrant-wheels/<key>, key = pyproject.toml and this Python; built from PyPI once."""
    import hashlib

    from coserver.images.cache import cached_build

    key = hashlib.sha256((REPO / "pyproject.toml").read_bytes() + sys.version.encode()).hexdigest()[:16]
    return cached_build(cache_dir() / "vagrant-wheels", key, load=_load_wheels, build=_pip_wheels,
                        what="Python wheels", say=progress or (lambda _m: None))


def _load_wheels(directory: Path) -> Path:
    from coserver.images.errors import GuestBuildError

    if not any(directory.glob("*.whl")):
        raise GuestBuildError(f"Python wheels {directory}: none built")
    return directory


def _pip_wheels(tmp: Path) -> None:
    for args in (["pip", "setuptools", "wheel"], [f"{REPO}[test,bench]"]):
        res = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--wheel-dir", str(tmp), *args],
                             capture_output=True, text=True, timeout=1800, check=False, cwd=REPO)
        if res.returncode != 0:
            raise VagrantLabError(f"pip wheel {' '.join(args)}: {last_line(res)}")
    for own in tmp.glob("coserver-*.whl"):
        own.unlink()     # the machines install the synced checkout itself (pip install -e)


def _mem_available_mib() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) // 1024
    return 0


def _unmount_under(path: Path) -> None:
    """Nothing of the lab stays mounted (the view's mounts die with its processes; this is a guard)."""
    mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    for m in sorted((m for m in mounts if m.startswith(str(path) + "/") or m == str(path)), reverse=True):
        subprocess.run(["umount", "-l", m], check=False, capture_output=True, timeout=30)
