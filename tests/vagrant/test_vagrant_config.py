"""The Vagrant lab's files agree with each other, and bad input gets one line (no machine is made)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from coserver.cli.main import main
from coserver.lab.vagrantlab import (
    COSERVERS,
    GUEST_ADDRESS,
    VAGRANT_DIR,
    WITNESS_ADDRESS,
    VagrantLab,
    VagrantLabError,
    host_accel,
    nested_kvm_enabled,
    site_text,
)
from coserver.site.load import load_site

ROOT = VAGRANT_DIR.parent.parent

VAGRANTFILE = VAGRANT_DIR / "Vagrantfile"


def test_the_site_file_parses_and_names_the_vagrantfiles_addresses(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text(site_text(checkpoint_ms=2000, accel="tcg"))
    site = load_site(path)
    text = VAGRANTFILE.read_text()
    assert f'"{WITNESS_ADDRESS}"' in text
    assert [f"{e}" for e in site.witness.endpoints] == [f"{WITNESS_ADDRESS}:2379"]
    for n, host in enumerate(COSERVERS, start=1):
        cs = site.coservers[host]
        assert cs.management == f"10.210.1.1{n}"          # the Vagrantfile's "10.210.1.1#{n}"
        assert [link.device for link in cs.links] == ["eth3", "eth4"]   # eth0 vagrant's, eth1 mgmt, eth2 LAN
    assert '"10.210.1.1#{n}"' in text and "cs-lan" in text
    assert GUEST_ADDRESS.rsplit(".", 1)[0] == "10.210.2"
    # TCG inside TCG: fault detection waits longer than on real hosts, and the site says so
    assert (site.heartbeat_timeout_s, site.qmp_deadline_s, site.kill_hung_after_s, site.fence_after_s) == (5, 4, 6, 4)


def test_the_staged_spec_puts_the_guest_on_the_vagrant_lan(tmp_path: Path) -> None:
    from coserver.images.labguest import LabGuest
    from coserver.lab.spec import write_lab_spec
    from coserver.lab.vagrantlab import vagrant_spec_text

    guest = LabGuest(key="k", directory=tmp_path, vmlinuz=tmp_path / "vmlinuz", initrd=tmp_path / "initrd.img",
                     data_template=tmp_path / "d.qcow2", journal=tmp_path / "journal",
                     manifest_path=tmp_path / "m.json", kernel_release="6.1", kernel_package="linux-image",
                     modules=(), manifest={})
    spec = write_lab_spec(tmp_path / "journal.toml", prefix="vagrant", profile="dl380-g5", guest=guest,
                          disks=dict.fromkeys(("cs1", "cs2"), tmp_path / "disk.qcow2"), name="journal")
    text = vagrant_spec_text(spec.read_text())
    assert f"cs.ip={GUEST_ADDRESS}/24" in text and 'bridge = "br-lan"' in text
    assert "lanbr" not in text


def test_the_vagrantfile_is_valid_ruby_and_its_provisioning_scripts_exist() -> None:
    assert subprocess.run(["ruby", "-c", str(VAGRANTFILE)], capture_output=True, check=False).returncode == 0
    for script in re.findall(r'path: "([^"]+)"', VAGRANTFILE.read_text()):
        path = VAGRANT_DIR / script
        assert path.is_file() and path.stat().st_mode & 0o111, script
        assert subprocess.run(["bash", "-n", str(path)], check=False).returncode == 0, script


@pytest.mark.parametrize(("kwargs", "words"), [
    ({"cs_memory_mib": 512}, "at least 1024 MiB"),
    ({"witness_memory_mib": 64}, "at least 256 MiB"),
    ({"cs_memory_mib": 10_000_000}, "too little memory"),
])
def test_bad_sizes_are_one_line_before_anything_is_made(tmp_path: Path, kwargs: dict[str, int], words: str) -> None:
    if "too little" in words and subprocess.run(["which", "vagrant"], capture_output=True).returncode != 0:
        pytest.skip("vagrant is not installed (make apt-vagrant): the tool checks come first")
    lab = VagrantLab(tmp_path / "w", **kwargs)
    with pytest.raises(VagrantLabError, match=words) as err:
        lab.check()
    assert "\n" not in str(err.value)
    assert not (tmp_path / "w").exists()


def test_the_cli_says_it_in_one_line_with_exit_1(tmp_path: Path) -> None:
    res = CliRunner().invoke(main, ["vagrant", "up", "--workdir", str(tmp_path / "w"), "--cs-memory", "100"])
    assert res.exit_code == 1
    assert res.output.strip().splitlines() == [
        "coserver: error: --cs-memory 100: a CoServer needs at least 1024 MiB (its controller, QEMU and the guest's "
        "256 MiB)"]
    assert "Traceback" not in res.output


def test_nested_kvm_is_read_from_the_kernels_parameters(tmp_path: Path) -> None:
    intel, amd = tmp_path / "intel", tmp_path / "amd"
    assert not nested_kvm_enabled((intel, amd))           # neither module loaded
    amd.write_text("0\n")
    assert not nested_kvm_enabled((intel, amd))
    intel.write_text("Y\n")
    assert nested_kvm_enabled((intel, amd))


def test_vagrant_test_refuses_tcg_machines_in_one_line_with_the_measured_reason() -> None:
    """Where the machines would be TCG guests the fault table is not run (README: COLO inside TCG inside
    TCG does not hold a pair); exit 2 and one line, before anything is made."""
    env = {**os.environ, "COSERVER_VAGRANT_ACCEL": "tcg", "PYTHONPATH": str(ROOT)}
    got = subprocess.run([sys.executable, "-m", "coserver.lab.vagranttrials", "--workdir", "/nonexistent/x"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert got.returncode == 2, got.stderr
    lines = got.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vagrant-test: not run: the machines would be TCG guests")
    assert "nested KVM" in lines[0] and "--allow-tcg" in lines[0]
    assert host_accel({"COSERVER_VAGRANT_ACCEL": "kvm"}) == "kvm"
