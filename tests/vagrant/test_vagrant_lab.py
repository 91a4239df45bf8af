"""The Vagrant lab on real machines (CI's part of `make vagrant-test`): the box is built, the Vagrantfile
validates, the three machines come up provisioned by the README's commands, `coserver site check` passes
on both CoServers, and `down` leaves no domain, network or volume behind."""

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
