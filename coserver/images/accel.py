"""Which accelerator QEMU runs guests with here: KVM only where a guest really booted on it.

The paravirtual KVM of some cloud machines opens /dev/kvm fine and then hangs a
stock kernel, so a readable /dev/kvm proves nothing: kvm_probe() boots the lab
guest under KVM and trusts it only if the guest's service answers (cached per
host boot and QEMU binary). It lives with the guest images because it boots one;
the lab, the benchmarks and `coserver doctor`, all above this floor, ask
choose_accel().
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from coserver.errors import CoserverError
from coserver.images.labguest import build_lab_guest
from coserver.machine.launcher import QemuProcess
from coserver.machine.qemuopts import qemu_opt_value
from coserver.paths import QemuInstall, cache_dir
from coserver.sys.proc import boot_id


@dataclass
class KvmVerdict:
    usable: bool
    detail: str
    definitive: bool = True  # False: the probe itself broke; do not cache the verdict


def _kvm_cache() -> Path:
    return cache_dir() / "kvm-probe.json"


def kvm_probe(qemu: QemuInstall, timeout: float = 25.0, use_cache: bool = True) -> KvmVerdict:
    """Boot the lab guest under KVM with user networking; usable only if its service answers.

    The verdict is cached per host boot and QEMU binary: KVM does not change under a running host.
    """
    if not os.path.exists("/dev/kvm"):
        return KvmVerdict(False, "/dev/kvm does not exist")
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return KvmVerdict(False, "/dev/kvm is not accessible")
    key = {"boot_id": boot_id(), "qemu": str(qemu.system), "version": qemu.version}
    cache = _kvm_cache()
    if use_cache and cache.is_file():
        try:
            data = json.loads(cache.read_text())
            if data.get("key") == key:
                return KvmVerdict(data["usable"], data["detail"] + " (cached for this boot)")
        except (ValueError, KeyError):
            pass
    verdict = _kvm_boot(qemu, timeout)
    if verdict.definitive:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps({"key": key, "usable": verdict.usable, "detail": verdict.detail}))
    return verdict


def _kvm_boot(qemu: QemuInstall, timeout: float) -> KvmVerdict:
    guest = build_lab_guest()
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="coserver-kvm-") as tmp:
        disk = guest.new_data_disk(Path(tmp) / "disk.qcow2")
        args = ["-accel", "kvm", "-machine", "pc", "-m", "256", "-nodefaults", "-display", "none",
                "-kernel", str(guest.vmlinuz), "-initrd", str(guest.initrd),
                "-append", guest.cmdline("10.0.2.15", 24, "10.0.2.2"),
                "-drive", f"file={qemu_opt_value(disk)},if=virtio,format=qcow2",
                "-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:7777",
                "-device", "virtio-net-pci,netdev=n0,romfile="]
        proc = QemuProcess("kvmprobe", args, tmp, qemu=qemu)
        try:
            with proc:  # starts QEMU, stops it on every exit path
                t0 = time.monotonic()
                while time.monotonic() - t0 < timeout:
                    if not proc.alive():
                        return KvmVerdict(False, "QEMU exited under KVM during the boot probe")
                    try:
                        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                            s.settimeout(2)
                            s.sendall(b"COUNT\n")
                            if s.recv(64).startswith(b"COUNT"):
                                return KvmVerdict(True, f"a guest booted under KVM in {time.monotonic() - t0:.1f} s")
                    except OSError:
                        pass
                    time.sleep(0.5)
                return KvmVerdict(False, f"boot probe: the guest did not answer within {timeout:.0f} s under KVM "
                                         "(paravirtual or broken KVM); using TCG")
        except CoserverError as exc:
            return KvmVerdict(False, f"boot probe failed: {exc}", definitive=False)


def choose_accel(qemu: QemuInstall) -> str:
    """'kvm' where a boot probe proved it, else 'tcg'. COSERVER_ACCEL overrides."""
    forced = os.environ.get("COSERVER_ACCEL")
    if forced in ("kvm", "tcg"):
        return forced
    return "kvm" if kvm_probe(qemu).usable else "tcg"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
