"""A lab network on which the bench starts QEMUs itself: no COLO pair, no controllers.

The unprotected baseline (one QEMU of the lab guest), the restart baseline (a
guest on cs1 whose disk is replicated to cs2, booted again on cs2) and the
time-to-protect run need the lab's network and guest hardware but not what
`Lab.up` does with them. A Site makes the same namespaces (LabNet), writes the
same FT server spec (write_lab_spec: same profile, machine, NIC and disk
models, so the guest is the same hardware as the protected one), and registers
its workdir like a lab: `Site.down()` is `Lab.down()`, and after a crash
`coserver lab down --prefix P` removes everything a Site made too (its QEMUs
are named and placed as the lab's, other processes die with the namespaces).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from coserver.colo.argv import Node, primary_args
from coserver.errors import CoserverError
from coserver.hardware.argv import ConfigGuestHardware
from coserver.hardware.config import resolve
from coserver.hardware.spec import load_spec
from coserver.images.accel import choose_accel
from coserver.images.guestclient import connect_journal
from coserver.images.labguest import LabGuest, build_lab_guest
from coserver.lab.lab import DEFAULT_PROFILE, QEMU_NAME, REGISTRY, Lab, overlay_dir
from coserver.lab.net import GUEST_ADDRESS, HOSTS, TAP
from coserver.lab.spec import GUEST_PORT, write_lab_spec
from coserver.machine.launcher import QemuProcess, last_words
from coserver.paths import qemu_install


class SiteError(CoserverError):
    """A bench site could not be made or its guest did not come up."""


class Site:
    """The lab's network and guest hardware under `prefix`, QEMUs started by the caller."""

    def __init__(self, prefix: str, workdir: Path, profile: str = DEFAULT_PROFILE) -> None:
        self.lab = Lab(prefix, workdir)
        self.net = self.lab.net
        self.prefix, self.workdir, self.profile = prefix, Path(workdir), profile
        self.accel = "tcg"
        self.configs: dict = {}
        self.guest: LabGuest | None = None
        self.procs: list[QemuProcess] = []

    # ---- where things are ---------------------------------------------------------------
    def host_dir(self, host: str) -> Path:
        return self.lab.host_dir(host)

    def disk(self, host: str) -> Path:
        return self.host_dir(host) / "disk.qcow2"

    @property
    def client_ns(self) -> str:
        return self.net.ns("client")

    address, port = GUEST_ADDRESS, GUEST_PORT

    # ---- make and remove ----------------------------------------------------------------
    def create(self) -> None:
        """Spec and network; the disks (host_dir/disk.qcow2) are the caller's to make."""
        if self.net.existing() or self.lab.registry_file.exists():
            raise SiteError(f"prefix {self.prefix!r} is in use; run `coserver lab down --prefix {self.prefix}`")
        self.workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        for h in HOSTS:
            self.host_dir(h).mkdir(mode=0o700, exist_ok=True)
        self.guest = build_lab_guest()
        spec_path = write_lab_spec(self.workdir / "ftserver.toml", prefix=self.prefix, profile=self.profile,
                                   guest=self.guest, disks={h: self.disk(h) for h in HOSTS})
        spec = load_spec(spec_path)
        self.configs = {h: resolve(spec, h) for h in HOSTS}
        REGISTRY.mkdir(parents=True, exist_ok=True)
        self.lab.registry_file.write_text(json.dumps({"workdir": str(self.workdir)}) + "\n")
        self.net.create()
        self.accel = choose_accel(qemu_install())

    def down(self) -> None:
        self.lab.down()
        for p in self.procs:  # our children: reap them (Lab.down stopped them by record)
            p.alive()

    # ---- QEMUs ----------------------------------------------------------------------------
    def hardware(self, host: str) -> ConfigGuestHardware:
        return ConfigGuestHardware(self.configs[host])

    def node(self, host: str) -> Node:
        cfg = self.configs[host]
        return Node(name=host, workdir=self.host_dir(host), sync_addr=self.net.repl_address(host), tap=TAP,
                    disk=Path(cfg.disks[0].path), mac=cfg.nics[0].mac, netns=self.net.ns(host),
                    overlay_dir=overlay_dir(self.prefix, host))

    def start_qemu(self, host: str, args: list[str]) -> QemuProcess:
        """Start a QEMU named like the lab's (so Lab.down finds it) in host's namespace."""
        proc = QemuProcess(QEMU_NAME, args, self.host_dir(host), netns=self.net.ns(host)).start()
        self.procs.append(proc)
        return proc

    def start_simplex(self, host: str, *, paused: bool = False) -> QemuProcess:
        """The lab guest alone on `host`: exactly the lab primary's command line before protection."""
        return self.start_qemu(host, primary_args(self.node(host), self.hardware(host), self.accel,
                                                  start_paused=paused))

    def wait_guest(self, *procs: QemuProcess, timeout: float = 120.0) -> float:
        """Until the journal service answers from the client namespace; the seconds it took."""
        t0 = time.monotonic()
        while True:
            try:
                connect_journal(self.client_ns, self.address, self.port, 2.0).close()
                return time.monotonic() - t0
            except CoserverError as exc:
                for p in procs:
                    if not p.alive():
                        raise SiteError(f"QEMU in {p.workdir} exited: {last_words(p.log_path)}") from exc
                if time.monotonic() - t0 > timeout:
                    raise SiteError(f"the guest did not answer within {timeout:.0f} s: {exc}") from exc
                time.sleep(0.1)


def fresh_dir(base: Path, name: str) -> Path:
    """An empty directory base/name (removed first if a previous run left one)."""
    d = base / name
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True, mode=0o700)
    return d
