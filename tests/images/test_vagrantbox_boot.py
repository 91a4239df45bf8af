"""The Vagrant box, built (or taken from the cache) and booted as vagrant-libvirt would: its box.img
from the .box file under a qcow2 overlay, QEMU under TCG, user-mode networking with SSH forwarded;
then checked over SSH as `vagrant` with Vagrant's insecure private key.

Marked qemu and slow: the first build takes about 3 minutes (downloads 190-280 MB of .debs: fewer
when the host's /var/cache/apt/archives has some), a boot to SSH about a minute under TCG.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from coserver.images import qemu_img
from coserver.images import vagrantbox as vb
from coserver.images.errors import GuestBuildError
from coserver.paths import qemu_install

from .conftest import free_port

pytestmark = [pytest.mark.qemu, pytest.mark.slow]

SSH_TIMEOUT = 300.0


@pytest.fixture(scope="module")
def box() -> vb.VagrantBox:
    if os.geteuid() != 0:
        pytest.skip("building the Vagrant box needs root (mmdebstrap --mode=root)")
    try:
        vb.vagrant_keys_dir()
    except GuestBuildError as exc:
        pytest.skip(str(exc))
    t0 = time.monotonic()
    b = vb.build_vagrant_box()
    m = b.manifest
    print(f"\nVagrant box {b.key}: {time.monotonic() - t0:.1f} s to build or find; built in "
          f"{m['seconds']['total']} s ({m['seconds']['mmdebstrap']} s mmdebstrap); .debs downloaded "
          f"{m['debs']['downloaded_bytes'] >> 20} MiB, reused from the host {m['debs']['reused_bytes'] >> 20} MiB; "
          f"box {b.size_bytes >> 20} MiB, qcow2 {m['image']['size'] >> 20} MiB, {len(m['packages'])} packages")
    return b


@dataclass
class VM:
    proc: subprocess.Popen
    port: int
    key: Path
    serial: Path
    started: float
    booted_in: float = 0.0

    def ssh(self, command: str, *, timeout: float = 300.0, check: bool = True) -> subprocess.CompletedProcess:
        argv = ["ssh", "-i", str(self.key), "-p", str(self.port), "-o", "StrictHostKeyChecking=no",
                "-o", "UserKnownHostsFile=/dev/null", "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
                "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR", "vagrant@127.0.0.1", command]
        res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
        if check and res.returncode != 0:
            raise AssertionError(f"ssh {command!r}: exit {res.returncode}: {res.stderr.strip()[-1000:]}")
        return res

    def wait_ssh(self, timeout: float = SSH_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"QEMU exited {self.proc.returncode}")
            try:
                if self.ssh("true", timeout=30, check=False).returncode == 0:
                    self.booted_in = time.monotonic() - self.started
                    return
            except subprocess.TimeoutExpired:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"no SSH after {timeout:.0f} s; serial: "
                                     f"{self.serial.read_text(errors='replace')[-2000:]}")
            time.sleep(2)


def unpack_image(box: Path, d: Path) -> Path:
    """box.img out of the .box file (and its metadata checked), as vagrant box add would."""
    with tarfile.open(box) as tar:
        assert sorted(tar.getnames()) == ["Vagrantfile", "box.img", "metadata.json"]
        assert json.load(tar.extractfile("metadata.json")) == {"provider": "libvirt", "format": "qcow2",
                                                               "virtual_size": 16}
        tar.extract("box.img", d, filter="data")
    return d / "box.img"


@pytest.fixture(scope="module")
def vm(box: vb.VagrantBox, tmp_path_factory):
    d = tmp_path_factory.mktemp("vagrant-box-boot")
    proc = None
    try:
        base = unpack_image(box.box, d)
        overlay = d / "overlay.qcow2"
        qemu_img.create(overlay, backing=base, backing_fmt="qcow2")
        key = d / "vagrant-key"
        shutil.copyfile(vb.vagrant_keys_dir() / "vagrant", key)
        key.chmod(0o600)
        port, serial = free_port(), d / "serial.log"
        q = qemu_install()
        argv = [str(q.system), "-accel", "tcg", "-m", "1024", "-smp", "1", "-nographic", "-monitor", "none",
                *q.firmware_args(), "-serial", f"file:{serial}",
                "-drive", f"file={overlay},if=virtio,format=qcow2",
                "-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:22",
                "-device", "virtio-net-pci,netdev=n0,romfile="]
        with open(d / "qemu.log", "w") as log:
            started = time.monotonic()
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                    start_new_session=True)
        machine = VM(proc=proc, port=port, key=key, serial=serial, started=started)
        machine.wait_ssh()
        print(f"\nboot to SSH (TCG): {machine.booted_in:.1f} s")
        yield machine
    finally:
        if proc is not None:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        shutil.rmtree(d, ignore_errors=True)


def test_vagrant_logs_in_with_the_insecure_key_and_sudo_needs_no_password(vm):
    assert vm.ssh("id -un; id -u; echo $HOME; echo $SHELL").stdout.split() == [
        "vagrant", "1000", "/home/vagrant", "/bin/bash"]
    assert vm.ssh("sudo -n true").returncode == 0
    assert "usedns no" in vm.ssh("sudo -n /usr/sbin/sshd -T").stdout.splitlines()


def test_the_system_is_running(vm):
    state = vm.ssh("systemctl is-system-running --wait", check=False).stdout.strip()
    failed = vm.ssh("systemctl --failed --no-legend --plain", check=False).stdout.strip()
    if state != "running":
        print(f"\nsystem {state}; failed units:\n{failed}")
    assert state in ("running", "degraded"), state
    for ours in ("coserver-ssh-keygen", "systemd-networkd", "ssh", "libvirtd", "virtlogd"):
        assert ours not in failed, failed
    assert vm.ssh("systemctl is-active libvirtd systemd-networkd ssh").stdout.split() == ["active"] * 3


def test_python_makes_a_venv(vm):
    out = vm.ssh("python3 -m venv /tmp/venv && /tmp/venv/bin/python -c 'import sys; print(sys.prefix)' && "
                 "/tmp/venv/bin/pip --version", timeout=600).stdout
    assert out.splitlines()[0] == "/tmp/venv" and "pip" in out


def test_every_package_make_setup_checks_is_installed(vm):
    wanted = vb.box_packages()
    out = vm.ssh("dpkg-query -W -f='${Package} ${Status}\\n' " + " ".join(wanted), check=False).stdout
    installed = {ln.split()[0] for ln in out.splitlines() if ln.endswith("install ok installed")}
    assert set(wanted) <= installed, sorted(set(wanted) - installed)
    for pkg in ("qemu-system-x86", "etcd-server", "libvirt-clients"):
        assert pkg in installed


def test_eth0_has_its_dhcp_address(vm):
    out = vm.ssh("ip -4 -o addr show dev eth0").stdout
    assert re.search(r"inet 10\.0\.2\.15/24 .*dynamic", out), out
    assert "eth0" in vm.ssh("ls /sys/class/net").stdout.split()


def test_identity_is_made_at_first_boot(vm):
    out = vm.ssh("cat /etc/machine-id; stat -c %Y /etc/machine-id /etc/ssh/ssh_host_ed25519_key "
                 "/etc/ssh/ssh_host_ecdsa_key; awk '/^btime/ {print $2}' /proc/stat").stdout.split()
    machine_id, id_mtime, ed_mtime, ecdsa_mtime, btime = out
    assert re.fullmatch(r"[0-9a-f]{32}", machine_id)
    assert min(int(id_mtime), int(ed_mtime), int(ecdsa_mtime)) >= int(btime) - 1
    assert vm.ssh("sudo -n ls /etc/libvirt/qemu/networks/autostart/", check=False).stdout.strip() == ""


def test_all_kernel_modules_are_there(vm):
    assert vm.ssh("sudo -n modprobe -a bridge tun veth nf_tables br_netfilter && lsmod").stdout.count("\n") > 5
    for unit in ("apt-daily.timer", "fstrim.timer", "e2scrub_all.timer"):
        assert vm.ssh(f"systemctl is-enabled {unit}", check=False).stdout.strip() == "masked"
