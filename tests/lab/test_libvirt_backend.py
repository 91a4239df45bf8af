"""The libvirt backend (issue: libvirt) on the real lab: a libvirtd per CoServer runs each copy as a
domain; the controllers start, watch, fail over and re-protect it as with the qemu backend.

One lab serves every test, in order: protected and visible in `virsh` on both hosts with the
qemu backend's guest identity; kill -9 of the primary's QEMU and `virsh destroy` of its domain fail
over with nothing lost and re-protect; libvirtd killed and restarted under the primary moves
nothing; `virsh suspend` of either copy is undone at once and said (COLO cannot keep a paused copy
in step); `virsh shutdown` stops the FT server on both hosts, nothing restarts it, and every
acknowledged write is on disk when it is started again."""

from __future__ import annotations

import os
import re
import time

import pytest

from coserver.images.errors import JournalError
from coserver.images.guestclient import Writer, connect_journal, missing_acks
from coserver.lab.lab import DEFAULT_PROFILE, Lab, LabOptions
from coserver.lab.trials import run_trial, table
from coserver.libvirt import metadata

from .labutil import coserver, status
from .test_identity import expected, seen

pytestmark = [pytest.mark.qemu, pytest.mark.netns]

PREFIX = f"v{os.getpid() % 10000}"
SERVER = "journal"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("libvirtlab")
    the_lab = Lab(PREFIX, workdir)
    try:
        up = the_lab.up(LabOptions(prefix=PREFIX, workdir=workdir, checkpoint_ms=1000, backend="libvirt"))
        assert up["state"] == "protected", up["state"]
        yield the_lab
    finally:
        the_lab.down()


def _protected(timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    st: dict = {}
    while time.monotonic() < deadline:
        st = status(PREFIX)
        if st["state"] == "protected" and all(e.get("state") == "protected" for e in st["hosts"].values()):
            return st
        time.sleep(0.5)
    raise AssertionError(f"not protected within {timeout:.0f} s: {st.get('state')}")


def _virsh_state(lab: Lab, host: str, settle_s: float = 5.0) -> str:
    """`virsh domstate` of the FT server's domain on `host`: running, shut off, ...

    A protected primary stops for each checkpoint, and libvirt shows its domain paused for that
    moment: a paused state counts only when it lasts longer than a few checkpoint pauses."""
    deadline = time.monotonic() + settle_s
    while True:
        state = lab.libvirtd(host).virsh_ok("domstate", SERVER).strip()
        if state != "paused" or time.monotonic() > deadline:
            return state
        time.sleep(0.2)


def _role_in_libvirt(lab: Lab, host: str) -> str:
    root = metadata.domain_root(lab.libvirtd(host).virsh_ok("dumpxml", SERVER))
    tag = metadata.find(root)
    assert tag is not None and tag.name == SERVER
    return tag.role


def test_protected_seen_by_virsh_on_both_hosts_with_the_spec_identity(lab):
    st = _protected()
    for host in ("cs1", "cs2"):
        assert _virsh_state(lab, host) == "running"
        listed = coserver("lab", "exec", host, "--prefix", PREFIX, "--", "virsh", "list", "--name").stdout.split()
        assert SERVER in listed, (host, listed)
        assert "journal" in coserver("lab", "exec", host, "--prefix", PREFIX, "--", "virsh", "dominfo", SERVER).stdout
        # the controller's QEMU is the domain's: the pid libvirt recorded
        assert lab.libvirtd(host).domain_pids()[SERVER] == st["hosts"][host]["qemu_pid"]
        # the controller's QMP socket (libvirt's QEMU makes it 0775) is root's alone, and so is its directory
        modes = coserver("lab", "exec", host, "--prefix", PREFIX, "--", "stat", "-c", "%a %U %n",
                         f"/var/lib/coserver/servers/{SERVER}", f"/var/lib/coserver/servers/{SERVER}/{SERVER}.qmp")
        assert [line.split()[:2] for line in modes.stdout.splitlines()] == [["700", "root"], ["600", "root"]], \
            modes.stdout
        # site check asks the host's libvirtd and reads its qemu.conf (QEMU as root, unconfined)
        check = coserver("lab", "exec", host, "--prefix", PREFIX, "--", "coserver", "site", "check")
        assert re.search(r"^ok +libvirt +libvirt \d+\.\d+\.\d+ at qemu:///system answers", check.stdout, re.M), \
            check.stdout
    assert _role_in_libvirt(lab, st["secondary"]) == "secondary"
    assert _role_in_libvirt(lab, st["primary"]) == "primary"   # started simplex, retagged when protected
    # the guest sees the machine it sees under the qemu backend (tests/lab/test_identity.py): the real
    # box's names, the spec's serial and UUID
    g = st["guest"]
    with connect_journal(g["client_netns"], g["address"], g["port"]) as c:
        assert seen(c.info()) == expected(lab, DEFAULT_PROFILE)


@pytest.mark.parametrize("fault", ["kill-primary-qemu", "destroy-primary-domain"])
def test_the_primary_lost_fails_over_with_nothing_lost_and_virsh_shows_it(lab, fault):
    before = _protected()
    r = run_trial(lab, fault)
    print("\n" + table([r]))
    assert r.lost == 0 and r.ok, r.problems
    assert r.survivor == before["secondary"]
    after = _protected()   # re-protected: the old primary's host runs a new secondary domain
    assert after["primary"] == before["secondary"]
    for host in ("cs1", "cs2"):
        assert _virsh_state(lab, host) == "running", host
    # each domain's metadata says what the copy is now: the promoted one primary, the new one secondary
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _role_in_libvirt(lab, after["primary"]) != "primary":
        time.sleep(0.5)
    assert _role_in_libvirt(lab, after["primary"]) == "primary"
    assert _role_in_libvirt(lab, after["secondary"]) == "secondary"


def test_libvirtd_restarted_under_the_primary_moves_nothing(lab):
    before = _protected()
    primary = before["primary"]
    pid = before["hosts"][primary]["qemu_pid"]
    checkpoints = before["checkpoints"]
    r = run_trial(lab, "restart-libvirtd-primary")
    print("\n" + table([r]))
    assert r.lost == 0 and r.ok, r.problems
    st = status(PREFIX)
    assert st["state"] == "protected" and st["primary"] == primary
    assert st["hosts"][primary]["qemu_pid"] == pid          # the same QEMU: not restarted, not failed over
    assert st["checkpoints"] > checkpoints                  # and still checkpointing
    assert _virsh_state(lab, primary) == "running"          # libvirt sees its domain again
    assert lab.libvirtd(primary).domain_pids()[SERVER] == pid


def test_virsh_suspend_is_refused_at_once_and_said(lab):
    """libvirt has no hook for suspend: the controller sees the stop, resumes the copy within a tick and
    records why; the pair stays protected, nothing fails over, the client barely notices."""
    st = _protected()
    primary, secondary, g = st["primary"], st["secondary"], st["guest"]
    writer = Writer(g["client_netns"], g["address"], g["port"], interval=0.05, tag="virsh-suspend").start()
    time.sleep(2)
    for host in (primary, secondary):
        lab.libvirtd(host).virsh_ok("suspend", SERVER)
        t0, state = time.monotonic(), "paused"
        while state != "running" and time.monotonic() - t0 < 5:
            time.sleep(0.1)
            state = lab.libvirtd(host).virsh_ok("domstate", SERVER).strip()
        print(f"\n{host}: virsh suspend undone after {time.monotonic() - t0:.2f} s (domstate {state})")
        assert state == "running", host
        refused = status(PREFIX)["hosts"][host].get("pause_refused") or {}
        assert refused.get("count", 0) >= 1 and "coserver server stop" in refused.get("message", ""), (host, refused)
        assert refused["paused_ms"] < 2000, refused
    time.sleep(2)
    result = writer.stop()
    after = _protected()
    assert (after["primary"], after["secondary"]) == (primary, secondary)     # nothing failed over
    assert after["hosts"][primary]["qemu_pid"] == st["hosts"][primary]["qemu_pid"]
    print(f"client: {len(result.acked)} appends acknowledged, largest gap {result.largest_gap():.3f} s")
    assert result.acked and result.largest_gap() < 3.0
    with connect_journal(g["client_netns"], g["address"], g["port"]) as c:
        assert missing_acks(c, result.acked) == []


def test_virsh_shutdown_is_a_planned_stop_on_both_hosts(lab):
    st = _protected()
    primary, g = st["primary"], st["guest"]
    writer = Writer(g["client_netns"], g["address"], g["port"], interval=0.05, tag="virsh-off").start()
    time.sleep(2)
    t0_wall = time.time()
    lab.libvirtd(primary).virsh_ok("shutdown", SERVER)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        st = status(PREFIX)
        if all(e.get("state") == "stopped" and not e.get("qemu_alive") for e in st["hosts"].values()):
            break
        time.sleep(0.5)
    else:
        raise AssertionError(f"both hosts did not stop after virsh shutdown: {st['state']}")
    acked = writer.stop().acked
    time.sleep(5)   # and nothing brings it back
    st = status(PREFIX)
    assert st["state"] == "stopped", st["state"]
    for host, e in st["hosts"].items():
        moved = [t["to"] for t in (e.get("history") or []) if t.get("at", 0) >= t0_wall]
        assert not ({"failing_over", "simplex"} & set(moved)), (host, moved)
        assert _virsh_state(lab, host) == "shut off", host
    coserver("server", "start", SERVER, "--prefix", PREFIX, "--json", timeout=300)
    st = _protected()
    deadline = time.monotonic() + 60   # protected once booted; its journal service may answer a moment later
    while True:
        try:
            with connect_journal(g["client_netns"], g["address"], g["port"], timeout=5) as c:
                assert missing_acks(c, acked) == []
            break
        except JournalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)
