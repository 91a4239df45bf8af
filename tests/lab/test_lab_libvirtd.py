"""A libvirtd per lab CoServer (issue "libvirt": `lab up --backend libvirt`'s daemons).

The lab's network plus a libvirtd on each host (no controllers, no COLO): cs1's daemon runs the lab's
FT server as the domain coserver.libvirt.domainxml makes of its spec, with the selected QEMU under
TCG, on a copy of the lab guest's disk. It must be cs1's alone (cs2's `virsh list` is empty), answer
on the controller's second QMP socket, boot the guest with the spec's hardware identity (the journal
service's INFO from the client LAN), survive a kill of its libvirtd (the daemon restarted reconnects
to it), and leave nothing behind: no libvirtd or QEMU, namespace, mount or cgroup.

The coserver hook is installed in each host's /etc/libvirt: `virsh start` of the domain without the
controller's start token is refused, with it the domain starts.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from coserver.errors import CoserverError
from coserver.hardware.config import resolve
from coserver.hardware.spec import load_spec
from coserver.images.guestclient import connect_journal
from coserver.images.labguest import build_lab_guest
from coserver.lab import libvirtd as lablv
from coserver.lab.hostexec import host_argv
from coserver.lab.lab import Lab, LabError, LabOptions
from coserver.lab.net import GUEST_ADDRESS, HOSTS
from coserver.lab.spec import GUEST_PORT, lab_identity, write_lab_spec
from coserver.libvirt import starttoken
from coserver.libvirt.domainxml import domain_xml_for_spec
from coserver.libvirt.metadata import ServerTag
from coserver.paths import qemu_install
from coserver.qmp.session import QmpSession
from coserver.sys import netns
from coserver.sys.proc import ProcessRecord

from .labutil import coserver, status

PREFIX = f"lv{os.getpid() % 10000}"
NAME = "journal"
#: the controller's own QMP monitor, as the host's view names it (its /run/coserver)
QMP_IN_VIEW = Path("/run/coserver") / f"{NAME}.libvirt.qmp"
REAL_G5 = ("HP", "ProLiant DL380 G5")


# ---- unit level: no namespace, no daemon ---------------------------------------------------------
def test_bad_backend_and_missing_libvirtd_are_one_line_lab_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(LabError) as bad:
        Lab.validate(LabOptions(backend="xen", insecure=True))
    assert str(bad.value) == "--backend must be one of qemu, libvirt, got 'xen'"
    monkeypatch.setattr(lablv, "LIBVIRTD", Path("/nonexistent/sbin/libvirtd"))
    with pytest.raises(LabError) as missing:
        Lab.validate(LabOptions(backend="libvirt", insecure=True))
    msg = str(missing.value)
    assert "\n" not in msg and msg.startswith("--backend libvirt: libvirtd (/nonexistent/sbin/libvirtd) is missing")
    assert "apt-get install" in msg
    Lab.validate(LabOptions(insecure=True))   # the default backend needs no libvirt at all


def test_missing_qemu_user_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lablv, "QEMU_USER", "no-such-user-cs")
    if not all(os.access(p, os.X_OK) for p in (lablv.LIBVIRTD, lablv.VIRSH)):
        pytest.skip("libvirtd is not installed here")
    with pytest.raises(lablv.LibvirtdError, match="needs the system user 'no-such-user-cs'"):
        lablv.check_installed()


def test_start_without_prepared_directories_is_one_line(tmp_path: Path) -> None:
    lv = lablv.HostLibvirtd(host="cs1", root=tmp_path / "libvirt", host_dir=tmp_path, view=lambda c: c)
    with pytest.raises(lablv.LibvirtdError, match=r"^libvirtd of cs1: .* is not prepared$"):
        lv.start()
    with pytest.raises(lablv.LibvirtdError, match="libvirtd of cs1 is not running"):
        lv.kill()
    assert lv.stop() == []


def test_host_argv_adds_the_libvirt_view_only_when_asked() -> None:
    plain = host_argv(Path("/e"), Path("/l"), Path("/r"), ["virsh", "list"])
    assert "--libvirt" not in plain and "--no-kvm" not in plain
    lv = host_argv(Path("/e"), Path("/l"), Path("/r"), ["virsh", "list"], libvirt=Path("/w/cs1/libvirt"), no_kvm=True)
    assert lv[lv.index("--libvirt") + 1] == "/w/cs1/libvirt" and "--no-kvm" in lv
    assert lv[lv.index("--") + 1:] == ["virsh", "list"]


# ---- the daemons, a domain, the guest ------------------------------------------------------------
def _mounts() -> list[str]:
    return Path("/proc/self/mountinfo").read_text().splitlines()


def _cgroup_dirs() -> set[str]:
    """What libvirt would add to the machine's cgroup tree for a domain (machine/, machine.slice)."""
    base = Path("/sys/fs/cgroup")
    return {str(p) for p in base.glob("*/machine*")} | {str(p) for p in base.glob("machine*")}


def _processes_naming(text: str) -> list[str]:
    """Live processes whose command line contains `text` (this test's workdir: its QEMUs' disks)."""
    out = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if text in cmd and state != "Z":
                out.append(f"{proc.name}: {cmd[:100]}")
    return out


async def _qmp_status(path: Path) -> str:
    async with await QmpSession.connect(path, name="test", connect_timeout=20) as s:
        return str((await s.execute("query-status"))["status"])


def _wait_journal(ns: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with connect_journal(ns, GUEST_ADDRESS, GUEST_PORT, 3.0) as client:
                return client.info()
        except CoserverError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1.0)


@pytest.mark.qemu
@pytest.mark.netns   # not slow: about 35 s here (two libvirtds 5 s each, the guest's boot 12-14 s)
def test_a_libvirtd_per_host_runs_the_ft_server_domain_on_cs1_only() -> None:
    if not all(os.access(p, os.X_OK) for p in (lablv.LIBVIRTD, lablv.VIRSH)):
        pytest.skip("libvirtd is not installed (make setup)")
    qemu = qemu_install()
    workdir = Path(tempfile.mkdtemp(prefix=f"cs-{PREFIX}-", dir="/tmp"))   # short: unix socket paths
    lab = Lab(PREFIX, workdir)
    cgroups_before = _cgroup_dirs()
    ours: list[ProcessRecord] = []   # every libvirtd and QEMU this test saw
    t0 = time.monotonic()

    def mark(what: str) -> None:
        print(f"  {time.monotonic() - t0:6.1f} s  {what}")

    try:
        lab.net.create()
        mark("network")
        took = lab.start_libvirtds()
        print("\nlibvirtd answering: " + ", ".join(f"{h} {s:.1f} s" for h, s in took.items()))
        cs1, cs2 = lab.libvirtd("cs1"), lab.libvirtd("cs2")
        p1, p2 = cs1.process(), cs2.process()
        assert p1 is not None and p2 is not None and p1.pid != p2.pid
        ours += [p1, p2]
        for lv in (cs1, cs2):   # the host's own config and hook, in the host's own /etc/libvirt
            hook = lv.dir("etc") / "hooks" / "qemu.d" / "50-coserver"
            assert hook.is_file() and os.access(hook, os.X_OK)
            assert "'/run/coserver'" in hook.read_text()
            assert 'cgroup_controllers = []' in (lv.dir("etc") / "qemu.conf").read_text()
            assert (lv.dir("run") / "libvirt-sock").exists()
            assert (lv.dir("run") / "libvirt-sock").stat().st_mode & 0o777 == 0o600
        assert not Path("/run/libvirt/libvirt-sock").exists()   # the machine's own /run has none

        # the lab's FT server spec (as lab up writes it), its disk a copy of the lab guest's
        mark("libvirtds checked")
        guest = build_lab_guest()
        disks = {h: lab.host_dir(h) / "disk.qcow2" for h in HOSTS}
        guest.new_data_disk(disks["cs1"])
        spec = load_spec(write_lab_spec(workdir / f"{NAME}.toml", prefix=PREFIX, profile="dl380-g5",
                                        guest=guest, disks=disks))
        run1 = lab.run_dir("cs1")
        mark("spec and disk")

        def define(token: str) -> None:
            tag = ServerTag(site=f"lab-{PREFIX}", name=NAME, role="primary", epoch=1, token=token)
            xml = domain_xml_for_spec(spec, "cs1", tag, qmp_socket=QMP_IN_VIEW, accel="tcg",
                                      emulator=qemu.system, disks=True,
                                      qemu_args=qemu.firmware_args())   # a built QEMU's -L, as argv.py does
            (run1 / f"{NAME}.xml").write_text(xml)
            cs1.virsh_ok("define", f"/run/coserver/{NAME}.xml")

        # the hook: an operator's start (no token issued) is refused, the controller's is not
        define(starttoken.issue(run1, NAME))
        starttoken.withdraw(run1, NAME)
        refused = cs1.virsh("start", NAME, timeout=60)
        assert refused.returncode != 0 and "only its controller starts it" in refused.stderr, refused.stderr
        mark("defined; an operator's start refused by the hook")
        define(starttoken.issue(run1, NAME))
        t_start = time.monotonic()
        cs1.virsh_ok("start", NAME, timeout=120)
        starttoken.withdraw(run1, NAME)
        print(f"virsh start: {time.monotonic() - t_start:.1f} s")

        assert cs1.virsh_ok("list", "--name").split() == [NAME]
        assert cs2.virsh_ok("list", "--all", "--name").split() == []
        info = cs1.virsh_ok("dominfo", NAME)
        assert "running" in info and f"Name:           {NAME}" in info, info
        qemu_pid = cs1.domain_pids()[NAME]
        ours.append(ProcessRecord.of(qemu_pid))
        qmp = run1 / QMP_IN_VIEW.name
        # libvirt starts QEMU with umask 002, so the socket itself is 0775: what keeps it root's
        # alone is the host's run directory (0700, root's), as with every socket in it
        assert run1.stat().st_mode & 0o777 == 0o700 and run1.stat().st_uid == 0
        assert asyncio.run(_qmp_status(qmp)) == "running"
        assert _cgroup_dirs() == cgroups_before   # cgroup_controllers = []: nothing in the machine's tree
        mark("running on cs1 only, QMP answers")
        assert "-accel tcg" in cs1.domain_log(NAME).read_text() or "accel=tcg" in cs1.domain_log(NAME).read_text()

        # the guest boots and serves, with the spec's identity
        t_boot = time.monotonic()
        seen = _wait_journal(lab.net.ns("client"), timeout=120)
        print(f"guest answering INFO: {time.monotonic() - t_boot:.1f} s after start")
        serial, uuid = lab_identity(PREFIX)
        smbios = resolve(spec, "cs1").smbios
        want = {"sys_vendor": REAL_G5[0], "product_name": REAL_G5[1], "product_serial": serial,
                "product_uuid": uuid}
        assert (smbios.manufacturer, smbios.product, smbios.serial, smbios.uuid) == tuple(want.values())
        assert {k: seen.get(k) for k in want} == want

        # libvirtd killed (a crash) under the running domain, then started again: it reconnects
        killed = cs1.kill()
        assert killed == p1.pid and cs1.process() is None
        assert os.path.exists(f"/proc/{qemu_pid}")
        assert asyncio.run(_qmp_status(qmp)) == "running"
        t_re = time.monotonic()
        ours.append(cs1.start())
        print(f"libvirtd restarted and answering: {time.monotonic() - t_re:.1f} s")
        assert cs1.virsh_ok("list", "--name").split() == [NAME]
        assert cs1.domain_pids()[NAME] == qemu_pid
        with connect_journal(lab.net.ns("client"), GUEST_ADDRESS, GUEST_PORT, 5.0) as client:
            assert client.info()["product_serial"] == serial

        mark("libvirtd of cs1 killed and restarted under the domain")
        cs1.virsh_ok("destroy", NAME)
        assert cs1.virsh_ok("list", "--name").split() == []
        deadline = time.monotonic() + 10
        while os.path.exists(f"/proc/{qemu_pid}") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not os.path.exists(f"/proc/{qemu_pid}")
        assert cs1.domain_log(NAME).is_file()
        mark("destroyed")

        # started once more and left running: lab down must end its QEMU too (libvirtd would not)
        define(starttoken.issue(run1, NAME))
        cs1.virsh_ok("start", NAME, timeout=120)
        starttoken.withdraw(run1, NAME)
        ours.append(ProcessRecord.of(cs1.domain_pids()[NAME]))
        mark("started again for lab down")
    finally:
        removed = lab.down()
        print(f"lab down: {removed}; the whole test {time.monotonic() - t0:.1f} s")
    assert any(r.startswith(f"libvirt domain cs1/{NAME} (qemu pid ") for r in removed), removed
    assert not [n for n in netns.list_namespaces(f"{PREFIX}-")]
    assert not [rec.pid for rec in ours if rec.alive()]   # a zombie awaiting PID 1 counts as gone
    assert _processes_naming(str(workdir)) == []
    assert not [m for m in _mounts() if str(workdir) in m or "coserver-lab-" + PREFIX in m]
    assert _cgroup_dirs() == cgroups_before
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.mark.qemu
@pytest.mark.netns
@pytest.mark.slow
def test_lab_up_backend_libvirt_runs_a_libvirtd_per_host_beside_the_protected_pair(tmp_path: Path) -> None:
    """The whole lab through its CLI: `lab up --backend libvirt` protects the pair as ever (the controllers
    still run QEMU themselves) with a libvirtd on each host, reachable with `lab exec HOST -- virsh`,
    killed and started again by `lab fault`, shown by `lab status`, and gone after `lab down`."""
    if not all(os.access(p, os.X_OK) for p in (lablv.LIBVIRTD, lablv.VIRSH)):
        pytest.skip("libvirtd is not installed (make setup)")
    prefix = f"lu{os.getpid() % 10000}"
    workdir = tmp_path / "lab"
    t0 = time.monotonic()
    pids: dict[str, int] = {}
    try:
        coserver("lab", "up", "--prefix", prefix, "--workdir", str(workdir), "--backend", "libvirt", "--insecure",
                 "--checkpoint-ms", "1000")
        print(f"\nlab up --backend libvirt: protected in {time.monotonic() - t0:.1f} s")
        st = status(prefix)
        assert st["state"] == "protected" and st["backend"] == "libvirt"
        pids.update({h: st["hosts"][h]["libvirtd_pid"] for h in HOSTS})
        assert all(pids.values()) and pids["cs1"] != pids["cs2"]
        for host in HOSTS:
            out = coserver("lab", "exec", host, "--prefix", prefix, "--", "virsh", "-c", "qemu:///system",
                           "uri").stdout
            assert out.strip() == "qemu:///system"
            hook = coserver("lab", "exec", host, "--prefix", prefix, "--", "cat",
                            "/etc/libvirt/hooks/qemu.d/50-coserver").stdout
            assert "coserver.libvirt.hook" in hook
        killed = coserver("lab", "fault", "kill-libvirtd", "--host", "cs1", "--prefix", prefix, "--json").stdout
        assert f'"pid": {pids["cs1"]}' in killed
        down = coserver("lab", "exec", "cs1", "--prefix", prefix, "--", "virsh", "-c", "qemu:///system", "uri",
                        check=False)
        assert down.returncode != 0
        again = coserver("lab", "fault", "kill-libvirtd", "--host", "cs1", "--prefix", prefix, check=False)
        assert again.returncode == 1 and again.stderr.strip().endswith("libvirtd of cs1 is not running")
        coserver("lab", "fault", "start-libvirtd", "--host", "cs1", "--prefix", prefix)
        st = status(prefix)
        assert st["state"] == "protected" and st["hosts"]["cs1"]["libvirtd_pid"] not in (None, pids["cs1"])
        pids["cs1b"] = st["hosts"]["cs1"]["libvirtd_pid"]
    finally:
        coserver("lab", "down", "--prefix", prefix, check=False)
        print(f"the whole test {time.monotonic() - t0:.1f} s")
    assert not netns.list_namespaces(f"{prefix}-")
    assert not [p for p in pids.values() if os.path.exists(f"/proc/{p}/exe")]   # a zombie has no exe
