"""Host checks for `coserver doctor`: QEMU features, namespaces, ports.

Each check asks the real thing rather than reading version numbers: QEMU is
asked over QMP which commands, object types and block drivers it has. The
accelerator (KVM only after a guest really booted on it) is chosen by
coserver.images.accel, which the lab and the benchmarks use too.
"""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from coserver import log
from coserver.errors import CoserverError
from coserver.machine.launcher import QemuProcess
from coserver.paths import QemuInstall
from coserver.qmp.errors import QmpError
from coserver.qmp.session import QmpSession
from coserver.site.pki import make_throwaway_pki
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


async def _qemu_features(qemu: QemuInstall) -> tuple[set[str], set[str], set[str], set[str], str | None]:
    """Commands, QOM types, block drivers and accelerators, as QEMU itself reports them, and why it
    cannot make TLS credentials (None: it can; a QEMU built without GnuTLS cannot)."""
    with tempfile.TemporaryDirectory(prefix="coserver-probe-") as tmp:
        proc = QemuProcess("probe", ["-machine", "none", "-nodefaults", "-display", "none", "-S"], tmp, qemu=qemu)
        await asyncio.to_thread(proc.start)
        with proc:
            async with await QmpSession.connect(proc.qmp_path, name="probe") as qmp:
                commands = {c["name"] for c in await qmp.execute("query-commands")}
                types = {t["name"] for t in await qmp.execute("qom-list-types")}
                schema = await qmp.execute("query-qmp-schema", deadline=15.0)
                accels = {t.removesuffix("-accel") for t in types if t.endswith("-accel")}
                # real credentials, as the replication uses them (tls-creds-anon made over QMP crashes
                # QEMU 10.2.2: not a probe to use)
                certs = make_throwaway_pki(Path(tmp) / "pki", {"probe": ("127.0.0.1",)}, name="probe")["probe"]
                try:
                    await qmp.execute("object-add", {"qom-type": "tls-creds-x509", "id": "probe-tls",
                                                     "endpoint": "client", "dir": str(certs)})
                    no_tls = None
                except QmpError as exc:
                    no_tls = str(exc)
    drivers: set[str] = set()
    for entry in schema:
        if entry.get("meta-type") == "enum" and any(
                m.get("name") == "quorum" for m in entry.get("members", []) if isinstance(m, dict)):
            drivers = {m["name"] for m in entry["members"]}
            break
        if entry.get("meta-type") == "enum" and "quorum" in entry.get("values", []):
            drivers = set(entry["values"])
            break
    return commands, types, drivers, accels, no_tls


def qemu_checks(qemu: QemuInstall) -> list[Check]:
    checks = [Check("qemu", True, f"{qemu.system} (QEMU {qemu.version}); {qemu.source}: {qemu.reason}")]
    try:
        commands, types, drivers, accels, no_tls = asyncio.run(_qemu_features(qemu))
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
    checks.append(Check("tls", no_tls is None, "TLS credentials (GnuTLS): the replication streams can be encrypted"
                        if no_tls is None else f"cannot make TLS credentials ({no_tls}): the replication "
                        "would run in plain TCP; build QEMU with GnuTLS (`make qemu` does)"))
    checks.append(Check("tcg", "tcg" in accels, "TCG available (software emulation fallback)"
                        if "tcg" in accels else "this QEMU has no TCG"))
    checks.append(Check("kvm support in qemu", "kvm" in accels, "built with KVM" if "kvm" in accels
                        else "built without KVM", required=False))
    return checks


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
