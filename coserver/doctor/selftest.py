"""The COLO self-test: does *this* QEMU really keep a guest fault-tolerant?

Upstream broke COLO without noticing (7.2 deadlocks at the first checkpoint
under TCG, 10.0.2 never enters COLO, 10.2 aborts): a version number proves
nothing, so `coserver doctor` and `make setup` run the real thing, small:

  1. a private network namespace with a bridge and two taps (one per side);
  2. the lab guest on the primary, a *blank* disk on the secondary;
  3. protection: disk mirrored over NBD, proxy added, COLO entered, both
     sides confirmed by query-colo-status;
  4. a client appends over TCP (request/response, as in production) until
     N checkpoints have passed, QMP answering on both sides within a deadline
     the whole time and checkpoints at the configured period (no storm);
  5. kill -9 the primary, fail over to the secondary, and read back every
     acknowledged append there.
PASS only if every step holds; otherwise FAIL with the step and the reason.
Everything it made (namespace, QEMUs, files) is removed on every exit path.

It runs once per machine type the hardware profiles use (pc, q35): a QEMU
can keep one chipset in step and abort on the other (q35's ICH9 LPC post_load
re-mapped its RCRB into a running secondary, qemu/patches/10.2/0004), so a
host learns which profiles it cannot protect.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from contextlib import AsyncExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from coserver import log
from coserver.colo.argv import Node, primary_args, secondary_args
from coserver.colo.guest import BasicGuestHardware
from coserver.colo.primary import Primary
from coserver.colo.secondary import Secondary
from coserver.colo.settings import ColoSettings, SyncPorts
from coserver.colo.status import CheckpointWatch, read_state
from coserver.colo.tls import ColoTls
from coserver.errors import CoserverError
from coserver.hardware import list_profiles
from coserver.images import qemu_img
from coserver.images.guestclient import connect_journal, missing_acks
from coserver.images.labguest import build_lab_guest
from coserver.machine.launcher import QemuProcess, last_words
from coserver.paths import QemuInstall, version_tuple
from coserver.qmp.errors import QmpError, QmpTimeout
from coserver.qmp.session import QmpSession
from coserver.site.pki import make_throwaway_pki
from coserver.sys import netns

_log = log.get("selftest")

GUEST_IP = "10.213.0.10"
CLIENT_IP = "10.213.0.1"
GUEST_MAC = "52:54:00:c0:5e:01"
GUEST_PORT = 7777


class SelfTestFailure(CoserverError):
    """A self-test step failed; .step names it."""

    def __init__(self, step: str, reason: str) -> None:
        self.step, self.reason = step, reason
        super().__init__(f"{step}: {reason}")


@dataclass
class SelfTestReport:
    """What the self-test saw; `coserver doctor --json` prints it."""

    passed: bool = False
    machine: str = "pc"
    step: str = ""
    reason: str = ""
    qemu_binary: str = ""
    qemu_version: str = ""
    accel: str = "tcg"
    tls: bool = False
    checkpoint_ms: int = 0
    checkpoints: int = 0
    colo_seconds: float = 0.0
    appends_acked: int = 0
    appends_lost: int = 0
    failover_gap_s: float | None = None
    pause_ms_median: float | None = None
    duration_s: float = 0.0
    steps_done: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


class SelfTest:
    """One run of the self-test against one QEMU binary."""

    def __init__(self, qemu: QemuInstall, *, checkpoint_ms: int = 1000, required_checkpoints: int = 10,
                 accel: str = "tcg", boot_timeout: float = 90.0, keep_workdir: bool = False,
                 machine: str = "pc", progress: Callable[[str], None] | None = None, tls: bool = False) -> None:
        """tls: every stream between the two QEMUs over TLS, each side admitting only the other's
        certificate (a throwaway CA made for the run)."""
        self.qemu = qemu
        self.tls = tls
        self.settings = ColoSettings(checkpoint_ms=checkpoint_ms, qmp_deadline_s=3.0, migrate_timeout_s=60.0,
                                     sync_timeout_s=120.0)
        self.required = required_checkpoints
        self.accel = accel
        self.machine = machine
        self.boot_timeout = boot_timeout
        self.keep_workdir = keep_workdir
        self.progress = progress or (lambda msg: None)
        self.report = SelfTestReport(qemu_binary=str(qemu.system), qemu_version=qemu.version, accel=accel,
                                     checkpoint_ms=checkpoint_ms, machine=machine, tls=tls)
        self.ns = f"csst{os.getpid() % 100000}"
        self.ports = SyncPorts()
        self.procs: dict[str, QemuProcess] = {}

    # ---- step bookkeeping ------------------------------------------------------------
    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        self.report.step = name
        self.progress(name)
        try:
            yield
        except SelfTestFailure as exc:  # report it under the step being run
            raise SelfTestFailure(name, exc.reason) from exc
        except (CoserverError, OSError, asyncio.TimeoutError) as exc:
            raise SelfTestFailure(name, self._explain(exc)) from exc
        self.report.steps_done.append(name)

    def _explain(self, exc: BaseException) -> str:
        """Prefer a dead QEMU's own last words over the symptom seen on QMP."""
        for role, proc in self.procs.items():
            if not proc.alive():
                tail = last_words(proc.log_path)
                return f"{role} QEMU exited ({tail or 'no message'}); then: {exc}"
        if isinstance(exc, QmpTimeout) or isinstance(exc.__cause__, QmpTimeout):
            return (f"QMP stopped answering, QEMU is hung (the COLO checkpoint deadlock of QEMU "
                    f"without the BQL fix): {exc}")
        return str(exc) or type(exc).__name__

    # ---- the run ---------------------------------------------------------------------
    async def run(self) -> SelfTestReport:
        started = time.monotonic()
        workdir = Path(tempfile.mkdtemp(prefix="coserver-selftest-"))
        os.chmod(workdir, 0o700)
        try:
            await self._run(workdir)
            self.report.passed = True
            self.report.step = "done"
        except SelfTestFailure as exc:
            self.report.step, self.report.reason = exc.step, exc.reason
        finally:
            await asyncio.to_thread(self._cleanup, workdir)
            self.report.duration_s = round(time.monotonic() - started, 1)
        return self.report

    async def _run(self, workdir: Path) -> None:
        with self.step("build the lab guest"):
            guest = await asyncio.to_thread(build_lab_guest)
        with self.step("make a private network"):
            netns.create(self.ns)
            netns.add_bridge(self.ns, "br0", f"{CLIENT_IP}/24")
            netns.add_tap(self.ns, "tapp", "br0")
            netns.add_tap(self.ns, "taps", "br0")
        hw = BasicGuestHardware(kernel=guest.vmlinuz, initrd=guest.initrd,
                                append=guest.cmdline(GUEST_IP, 24, port=GUEST_PORT), machine=self.machine)
        ptls = stls = None
        if self.tls:
            with self.step("make a throwaway CA and the two QEMUs' certificates"):
                dirs = make_throwaway_pki(workdir / "pki", {"primary": ("127.0.0.1",), "secondary": ("127.0.0.1",)},
                                          name="selftest")
                ptls, stls = ColoTls(dirs["primary"], "secondary"), ColoTls(dirs["secondary"], "primary")
        pnode = Node("primary", workdir / "p", "127.0.0.1", "tapp", workdir / "p" / "disk.qcow2", GUEST_MAC, self.ns,
                     tls=ptls)
        snode = Node("secondary", workdir / "s", "127.0.0.1", "taps", workdir / "s" / "disk.qcow2", GUEST_MAC,
                     self.ns, tls=stls)
        with self.step("prepare the disks"):
            for node in (pnode, snode):
                node.workdir.mkdir(mode=0o700)
            guest.new_data_disk(pnode.disk)
            size = qemu_img.info(pnode.disk).virtual_size
            qemu_img.create(snode.disk, size)  # blank: the sync must fill it
            snode.create_overlays()
        qv = version_tuple(self.qemu.version)
        async with AsyncExitStack() as stack:
            with self.step("start the secondary QEMU"):
                sproc = await self._start("secondary", secondary_args(
                    snode, hw, self.accel, primary_sync_addr=pnode.sync_addr, ports=self.ports, qemu_version=qv),
                    snode.workdir)
                sqmp = await stack.enter_async_context(await QmpSession.connect(sproc.qmp_path, name="secondary"))
            with self.step("start the primary QEMU"):
                pproc = await self._start("primary", primary_args(pnode, hw, self.accel), pnode.workdir)
                pqmp = await stack.enter_async_context(await QmpSession.connect(pproc.qmp_path, name="primary"))
            with self.step("boot the guest on the primary"):
                client = await self._wait_guest()
                stack.callback(client.close)
                acked = {client.append(f"before-colo-{i}"): f"before-colo-{i}" for i in range(5)}
            primary = Primary(pqmp, pnode, self.settings)
            secondary = Secondary(sqmp, snode, self.settings)
            with self.step("enter COLO (sync disk over NBD, proxy, migrate)"):
                await secondary.prepare(self.ports)
                await primary.protect(snode.sync_addr, self.ports)
                await secondary.wait_colo()
                pstate = await read_state(pqmp, self.settings.qmp_deadline_s)
                if pstate.mode != "primary":
                    raise SelfTestFailure("enter COLO", f"primary reports COLO mode {pstate.mode!r}")
            with self.step(f"run {self.required} checkpoints with a client writing"):
                watch = CheckpointWatch(pqmp)
                watch.start()
                try:
                    await self._checkpoints(pqmp, sqmp, client, acked, watch)
                finally:
                    await watch.stop()
            with self.step("fail over to the secondary (kill -9 primary)"):
                last_ack = time.monotonic()
                pproc.kill()
                await secondary.failover()
                sstate = await read_state(sqmp, self.settings.qmp_deadline_s)
                if sstate.mode != "none" or sstate.last_mode != "secondary":
                    raise SelfTestFailure("fail over", f"secondary reports mode={sstate.mode} "
                                                       f"last-mode={sstate.last_mode} after failover")
            with self.step("read back every acknowledged append on the survivor"):
                client = await self._after_failover(client, acked)
                self.report.failover_gap_s = round(time.monotonic() - last_ack, 3)
                stack.callback(client.close)
                lost = await asyncio.to_thread(missing_acks, client, acked)
                self.report.appends_lost = len(lost)
                if lost:
                    raise SelfTestFailure("data check", f"{len(lost)} of {len(acked)} acknowledged appends "
                                                        f"missing after failover (first: seq {lost[0]})")

    async def _start(self, name: str, args: list[str], workdir: Path) -> QemuProcess:
        proc = QemuProcess(name, args, workdir, netns=self.ns, qemu=self.qemu)
        self.procs[name] = proc
        await asyncio.to_thread(proc.start)
        return proc

    async def _wait_guest(self):
        deadline = time.monotonic() + self.boot_timeout
        while True:
            try:
                return await asyncio.to_thread(connect_journal, self.ns, GUEST_IP, GUEST_PORT, 5.0)
            except CoserverError as exc:
                if time.monotonic() > deadline:
                    raise SelfTestFailure("boot the guest", f"journal service not answering after "
                                                            f"{self.boot_timeout:.0f} s: {exc}") from exc
                for role, proc in self.procs.items():
                    if not proc.alive():
                        raise SelfTestFailure("boot the guest", f"{role} QEMU exited: "
                                                                f"{last_words(proc.log_path)}") from exc
                await asyncio.sleep(0.5)

    async def _checkpoints(self, pqmp: QmpSession, sqmp: QmpSession, client, acked: dict[int, str],
                           watch: CheckpointWatch) -> None:
        period = self.settings.checkpoint_ms / 1000.0
        t0 = time.monotonic()
        limit = t0 + self.required * period * 3 + 30
        count, i = 0, 0
        while count < self.required:
            if time.monotonic() > limit:
                raise SelfTestFailure("checkpoints", f"only {count} of {self.required} checkpoints in "
                                                     f"{time.monotonic() - t0:.0f} s")
            text = f"colo-{i}"
            try:
                seq = await asyncio.to_thread(client.append, text)
            except CoserverError as exc:  # the guest stopped answering: ask QEMU why
                await self._diagnose(pqmp, sqmp, count)
                raise SelfTestFailure("checkpoints", f"after {count} checkpoints the guest stopped answering "
                                                     f"while both QEMUs answer QMP: {exc}") from exc
            acked[seq] = text
            i += 1
            pstate, sstate = await self._diagnose(pqmp, sqmp, count)
            if pstate.mode != "primary" or sstate.mode != "secondary":
                raise SelfTestFailure("checkpoints", f"COLO left after {count} checkpoints: primary "
                                                     f"{pstate.mode}/{pstate.reason}, secondary "
                                                     f"{sstate.mode}/{sstate.reason}")
            count = watch.count
            await asyncio.sleep(0.05)
        elapsed = time.monotonic() - t0
        self.report.checkpoints, self.report.colo_seconds = count, round(elapsed, 1)
        if watch.pauses:
            self.report.pause_ms_median = round(1000 * sorted(watch.pauses)[len(watch.pauses) // 2], 1)
        self.report.appends_acked = len(acked)
        expected = elapsed / period
        if count > 1.5 * expected + 3:
            raise SelfTestFailure("checkpoints", f"checkpoint storm: {count} checkpoints in {elapsed:.1f} s "
                                                 f"at a {period:g} s period ({count / elapsed:.1f}/s)")

    async def _diagnose(self, pqmp: QmpSession, sqmp: QmpSession, count: int):
        """Both sides' COLO state; SelfTestFailure naming the hung or dead side if QMP fails."""
        try:
            return (await read_state(pqmp, self.settings.qmp_deadline_s),
                    await read_state(sqmp, self.settings.qmp_deadline_s))
        except QmpError as exc:
            raise SelfTestFailure("checkpoints", f"after {count} checkpoints: {self._explain(exc)}") from exc

    async def _after_failover(self, client, acked: dict[int, str]):
        """Keep the old TCP connection if it survived failover; otherwise reconnect."""
        try:
            await asyncio.to_thread(client.count)
            return client
        except CoserverError:
            client.close()
        return await self._wait_guest()

    def _cleanup(self, workdir: Path) -> None:
        for proc in self.procs.values():
            try:
                proc.stop(timeout=5.0)
            except CoserverError as exc:
                _log.warning("selftest.stop.failed", reason=str(exc))
        netns.delete(self.ns)
        if not self.keep_workdir:
            shutil.rmtree(workdir, ignore_errors=True)


def run_selftest(qemu: QemuInstall, **kw) -> SelfTestReport:
    """Synchronous entry point for the CLI and `make setup`: one machine type (default pc)."""
    return asyncio.run(SelfTest(qemu, **kw).run())


def profile_machines() -> dict[str, list[str]]:
    """Each machine type the shipped profiles use -> the profiles that use it."""
    out: dict[str, list[str]] = {}
    for profile in list_profiles():
        out.setdefault(profile.machine, []).append(profile.name)
    return dict(sorted(out.items()))
