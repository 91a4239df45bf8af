"""The one test that runs QEMU: every shipped profile's argv is accepted by the installed QEMU.

QEMU starts with -S (no guest code runs), builds the machine and every device from our argv,
then answers `info pci` and `quit` on an HMP monitor on stdin; a rejected option makes it exit
non-zero at start-up with the reason on stderr. The QEMU binary is the one coserver.paths picks.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from coserver.hardware import guest_args, list_profiles, load_spec, resolve
from coserver.paths import QemuNotFound, qemu_install

SPEC = """\
name = "argv-check"
profile = "{profile}"
coservers = ["cs1", "cs2"]
serial = "CZJ0000001"
uuid = "6f1c2a7e-3b9d-4c1e-9a55-0c1d2e3f4a5b"
boot = "disk"

[cpu]
model = "{cpu}"

[smbios]
asset_tag = "rack 4, unit 12"

[[disks]]
bus = "{bus}"
serial = "D0"
path = "d0.qcow2"

[[disks]]
bus = "{bus}"
path = "d1.qcow2"

[cdrom]
path = "cd.iso"

[[nics]]
mac = "52:54:00:00:00:01"
model = "{nic}"
bridge = "br0"

[[nics]]
mac = "52:54:00:00:00:02"
model = "{nic}"
bridge = "br0"

[[devices]]
type = "i6300esb"

[[devices]]
type = "pvpanic"
"""


@pytest.mark.qemu
def test_qemu_accepts_every_profiles_argv(tmp_path: Path):
    try:
        qemu = qemu_install()
    except QemuNotFound as exc:
        pytest.skip(str(exc))
    failures = []
    runs = 0
    for profile in list_profiles():
        variants = {  # the lab default devices, and the period-faithful emulation
            "lab": ("qemu64", profile.guest.disk_bus, profile.guest.nic_model),
            "period": (profile.real.qemu_cpu_model, profile.real.qemu_disk_bus,
                       profile.real.qemu_nic_model),
        }
        for variant, (cpu, bus, nic) in variants.items():
            spec = tmp_path / f"{profile.name}-{variant}.toml"
            spec.write_text(SPEC.format(profile=profile.name, cpu=cpu, bus=bus, nic=nic))
            config = resolve(load_spec(spec), "cs1")
            argv = [str(qemu.system), *qemu.firmware_args(), "-accel", "tcg", "-nodefaults",
                    "-no-user-config", "-display", "none", "-serial", "none", "-S",
                    "-monitor", "stdio",
                    "-blockdev", "driver=null-co,node-name=n0",
                    "-blockdev", "driver=null-co,node-name=n1",
                    "-blockdev", "driver=null-co,node-name=cd0,read-only=on",
                    "-netdev", "hubport,id=h0,hubid=0", "-netdev", "hubport,id=h1,hubid=1"]
            argv += guest_args(config, drive_nodes=["n0", "n1"], netdev_ids=["h0", "h1"],
                               cdrom_node="cd0")
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
            try:
                out, err = proc.communicate("info pci\nquit\n", timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate()
                failures.append(f"{profile.name}/{variant}: no answer within 60 s")
                continue
            runs += 1
            if proc.returncode != 0:
                failures.append(f"{profile.name}/{variant}: exit {proc.returncode}: "
                                f"{err.strip()}")
            elif "Bus  0, device   3, function 0" not in out:  # nic0 at its fixed slot
                failures.append(f"{profile.name}/{variant}: nic0 not at 00:03.0:\n{out}")
    assert not failures, "\n".join(failures)
    assert runs == 2 * len(list_profiles())
