"""Host checks for `coserver doctor`: QEMU features, accelerators, namespaces, ports.

Each check asks the real thing rather than reading version numbers: QEMU is
asked over QMP which commands, object types and block drivers it has; KVM is
trusted only after a guest really booted on it (the paravirtual KVM of some
cloud machines opens /dev/kvm fine and then hangs a stock kernel).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from coserver import log
from coserver.errors import CoserverError
from coserver.machine.launcher import QemuProcess
from coserver.machine.qemuopts import qemu_opt_value
from coserver.paths import QemuInstall, cache_dir
from coserver.qmp.session import QmpSession
from coserver.sys import netns

_log = log.get("hostcheck")

COLO_COMMANDS = ("x-colo-lost-heartbeat", "query-colo-status", "migrate-incoming", "x-blockdev-change", "yank",
                 "block-export-add", "announce-self")
COLO_TYPES = ("colo-compare", "filter-mirror", "filter-redirector", "filter-rewriter", "iothread")
BLOCK_DRIVERS = ("replication", "quorum", "nbd", "qcow2")


@dataclass
class Check:
    """One line of the doctor's table."""

    name: str
    ok: bool
    detail: str
    required: bool = True

    def as_dict(self) -> dict:
        return asdict(self)


async def _qemu_features(qemu: QemuInstall) -> tuple[set[str], set[str], set[str], set[str]]:
    """Commands, QOM types, block drivers and accelerators, as QEMU itself reports them."""
    with tempfile.TemporaryDirectory(prefix="coserver-probe-") as tmp:
        proc = QemuProcess("probe", ["-machine", "none", "-nodefaults", "-display", "none", "-S"], tmp, qemu=qemu)
        await asyncio.to_thread(proc.start)
        with proc:
            async with await QmpSession.connect(proc.qmp_path, name="probe") as qmp:
                commands = {c["name"] for c in await qmp.execute("query-commands")}
                types = {t["name"] for t in await qmp.execute("qom-list-types")}
                schema = await qmp.execute("query-qmp-schema", deadline=15.0)
                accels = {t.removesuffix("-accel") for t in types if t.endswith("-accel")}
    drivers: set[str] = set()
    for entry in schema:
        if entry.get("meta-type") == "enum" and any(
                m.get("name") == "quorum" for m in entry.get("members", []) if isinstance(m, dict)):
            drivers = {m["name"] for m in entry["members"]}
            break
        if entry.get("meta-type") == "enum" and "quorum" in entry.get("values", []):
            drivers = set(entry["values"])
            break
    return commands, types, drivers, accels


def qemu_checks(qemu: QemuInstall) -> list[Check]:
    checks = [Check("qemu", True, f"{qemu.system} (QEMU {qemu.version}); {qemu.source}: {qemu.reason}")]
    try:
        commands, types, drivers, accels = asyncio.run(_qemu_features(qemu))
    except CoserverError as exc:
        return checks + [Check("qemu features", False, f"could not ask QEMU over QMP: {exc}")]
    missing_cmd = [c for c in COLO_COMMANDS if c not in commands]
    missing_types = [t for t in COLO_TYPES if t not in types]
    missing_drv = [d for d in BLOCK_DRIVERS if d not in drivers]
    checks.append(Check("replication", not missing_cmd and "replication" in drivers,
                        "x-colo-lost-heartbeat, replication driver present" if not missing_cmd and
                        "replication" in drivers else f"missing: {', '.join(missing_cmd + missing_drv)}"))
    checks.append(Check("colo proxy", not missing_types,
                        ", ".join(COLO_TYPES) if not missing_types else f"missing: {', '.join(missing_types)}"))
    checks.append(Check("tcg", "tcg" in accels, "TCG available (software emulation fallback)"
                        if "tcg" in accels else "this QEMU has no TCG"))
    checks.append(Check("kvm support in qemu", "kvm" in accels, "built with KVM" if "kvm" in accels
                        else "built without KVM", required=False))
    return checks


# ---- KVM: a real boot probe -------------------------------------------------------------

@dataclass
class KvmVerdict:
    usable: bool
    detail: str
    definitive: bool = True  # False: the probe itself broke; do not cache the verdict


def _kvm_cache() -> Path:
    return cache_dir() / "kvm-probe.json"


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def kvm_probe(qemu: QemuInstall, timeout: float = 25.0, use_cache: bool = True) -> KvmVerdict:
    """Boot the lab guest under KVM with user networking; usable only if its service answers.

    The verdict is cached per host boot and QEMU binary: KVM does not change under a running host.
    """
    if not os.path.exists("/dev/kvm"):
        return KvmVerdict(False, "/dev/kvm does not exist")
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return KvmVerdict(False, "/dev/kvm is not accessible")
    key = {"boot_id": _boot_id(), "qemu": str(qemu.system), "version": qemu.version}
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
    from coserver.images.labguest import build_lab_guest

    guest = build_lab_guest()
    port = free_port()
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


# ---- namespaces and ports ---------------------------------------------------------------

def netns_check() -> Check:
    name = f"csdoc{os.getpid() % 100000}"
    try:
        netns.create(name)
        netns.add_bridge(name, "br0")
        netns.add_tap(name, "tap0", "br0")
        return Check("namespaces", True, "can make namespaces, bridges and taps (iproute2)")
    except CoserverError as exc:
        return Check("namespaces", False, str(exc))
    finally:
        netns.delete(name)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ports_check(ports: tuple[int, ...]) -> Check:
    busy = []
    for port in ports:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("0.0.0.0", port))
            except OSError:
                busy.append(port)
    if busy:
        return Check("ports", False, f"sync ports in use on this host: {', '.join(map(str, busy))}")
    return Check("ports", True, f"sync ports free: {', '.join(map(str, ports))}")
