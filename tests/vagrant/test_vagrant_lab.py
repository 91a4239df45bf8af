"""The Vagrant lab. In CI: the box is built, the lab's own libvirtd comes up in its namespace, vagrant
takes the box and validates the Vagrantfile, and `down` leaves nothing behind (~5 min on a clean machine).
With COSERVER_VAGRANT_FULL=1 (`make vagrant-test` brings the lab up anyway): the three machines come up
provisioned by the README's commands and `coserver site check` passes on both CoServers (~20 min here:
three machines booting under TCG, too long for CI's budget)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from coserver.lab.vagrantlab import COSERVERS, MACHINES, NETNS, VagrantLab
from coserver.sys import netns

pytestmark = [pytest.mark.qemu, pytest.mark.netns, pytest.mark.slow]


@pytest.fixture
def vagrant_lab(tmp_path: Path):
    if os.geteuid() != 0:
        pytest.skip("needs root")
    if shutil.which("vagrant") is None:
        pytest.skip("vagrant is not installed (make apt-vagrant)")
    if netns.exists(NETNS):
        pytest.skip(f"a Vagrant lab is already up here (namespace {NETNS}): `coserver vagrant down` first")
    lab = VagrantLab(Path("/var/tmp") / f"cs-vagrant-test-{os.getpid()}", cs_memory_mib=1536,
                     say=lambda m: print(f".. {m}", flush=True))
    try:
        yield lab
    finally:
        lab.down()
        shutil.rmtree(lab.workdir, ignore_errors=True)


def test_the_box_is_taken_the_vagrantfile_validates_and_down_leaves_nothing(vagrant_lab: VagrantLab) -> None:
    from coserver.images.vagrantbox import build_vagrant_box

    lab = vagrant_lab
    lab.check()
    lab.workdir.mkdir(mode=0o700, parents=True, exist_ok=True)
    lab.start_host()
    lab.add_box(build_vagrant_box().box)
    assert "coserver/debian12" in lab.vagrant("box", "list").stdout
    assert "validated successfully" in lab.vagrant("validate").stdout
    status = lab.vagrant("status").stdout
    assert all(f"{m} " in status and "not created" in status for m in MACHINES), status
    lab.down()
    assert not netns.exists(NETNS)
    assert not (lab.workdir / "libvirt").exists() and not (lab.workdir / "vagrant.d").exists()


@pytest.mark.skipif(os.environ.get("COSERVER_VAGRANT_FULL") != "1",
                    reason="three machines under TCG take ~20 min: COSERVER_VAGRANT_FULL=1 runs them (make vagrant-up does the same)")
def test_three_machines_come_up_and_both_coservers_pass_site_check(vagrant_lab: VagrantLab) -> None:
    lab = vagrant_lab
    result = lab.up(start_server=False)
    print(result["times"])
    for cs in COSERVERS:
        check = result["site_check"][cs]
        assert check["ok"], f"{cs}: {check['failed']}"
        names = {c["name"] for c in check["checks"]}
        assert {"witness"} <= {n.split()[0] for n in names}, names
    running = lab.virsh("list", "--name").split()
    assert sorted(running) == sorted(lab.domain(m) for m in MACHINES)
    # the controllers run under systemd on both CoServers, as the README's step 6 has them
    for cs in COSERVERS:
        res = lab.ssh(cs, ["systemctl", "is-active", "coserver-controller@journal"])
        assert res.stdout.strip() == "active", (cs, res.stdout, res.stderr)
    # down: nothing left (no domain, network, volume: the lab's libvirt is gone with its namespace)
    lab.down()
    assert not netns.exists(NETNS)
    assert not (lab.workdir / "libvirt").exists()
    left = subprocess.run(["pgrep", "-f", str(lab.workdir)], capture_output=True, text=True, check=False)
    assert left.stdout.strip() == "", left.stdout
