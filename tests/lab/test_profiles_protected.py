"""Every shipped profile can be protected: each distinct device set stays protected under load
and survives a kill -9 of the primary with nothing lost (issue: COLO on q35).

The profiles differ, for COLO, only in their machine type and their NIC and disk controller
(the rest is SMBIOS identity, the same size and CPU): `test_the_combos_cover_every_profile`
proves that, and one profile per distinct (machine, NIC, disk controller) runs the real thing:
a lab pair with that guest (the default lab's pc + virtio runs in every other lab test), a client appending through 20 checkpoints (each loads the
primary's device state into the running secondary, the path that aborted q35 secondaries),
then the primary's QEMU killed and every acknowledged append read back on the survivor.
`make test-faults` runs all ten profiles with both device sets.
"""

from __future__ import annotations

import os

import pytest

from coserver.hardware import list_profiles
from coserver.hardware.devices import DISK_BUSES, NIC_MODELS
from coserver.lab.lab import DEFAULT_PROFILE, Lab, LabOptions
from coserver.lab.spec import guest_devices
from coserver.lab.trials import load_table, run_load_trial

pytestmark = [pytest.mark.qemu, pytest.mark.netns, pytest.mark.slow]

PREFIX = f"p{os.getpid() % 10000}"

#: The default lab's own combo: every other lab test (faults, re-protection, TLS, ...) runs it
#: protected under load and kills its primary, so it is not run again here.
DEFAULT_LAB = (DEFAULT_PROFILE, "virtio")   # pc   virtio-net-pci virtio-blk
#: One profile per other distinct (machine, NIC, disk controller) of the catalogue.
COMBOS = [
    ("dl380-g5", "emulated"),      # pc   e1000          megasas
    ("dl380-gen10", "virtio"),     # q35  virtio-net-pci virtio-blk
    ("dl380-g7", "emulated"),      # q35  e1000          megasas
    ("dl380-gen10", "emulated"),   # q35  e1000e         megasas-gen2
]


def combo(profile: str, devices: str) -> tuple[str, str, str]:
    machine = next(p.machine for p in list_profiles() if p.name == profile)
    return (machine, *guest_devices(profile, devices))


def test_the_combos_cover_every_profile():
    """Every profile and device set is one of COMBOS for COLO: same machine, NIC, disk controller,
    and the same guest size and CPU everywhere (only SMBIOS strings differ)."""
    assert DEFAULT_LAB == (LabOptions().profile, LabOptions().devices)
    tested = {combo(p, d) for p, d in [*COMBOS, DEFAULT_LAB]}
    for profile in list_profiles():
        for devices in ("virtio", "emulated"):
            assert combo(profile.name, devices) in tested, (profile.name, devices)
    sizes = {(p.guest.cpu_model, p.guest.sockets, p.guest.cores, p.guest.threads, p.guest.memory_mib)
             for p in list_profiles()}
    assert len(sizes) == 1, sizes


@pytest.mark.parametrize("profile, devices", COMBOS, ids=[f"{p}-{d}" for p, d in COMBOS])
def test_protected_under_load_then_primary_killed(profile, devices, tmp_path):
    machine, nic, disk = combo(profile, devices)
    lab = Lab(PREFIX, tmp_path / "lab")
    try:
        st = lab.up(LabOptions(prefix=PREFIX, workdir=tmp_path / "lab", profile=profile, devices=devices,
                               checkpoint_ms=1000))
        assert st["state"] == "protected" and st["devices"] == f"{nic}+{disk}", st
        argv_line = next(ln for ln in lab.qemu_log("cs1").read_text().splitlines()
                         if ln.startswith("--- coserver"))
        assert f"-machine {machine}" in argv_line, argv_line
        nic_driver, disk_driver = NIC_MODELS[nic].driver, DISK_BUSES[disk].driver
        assert f"{nic_driver}," in argv_line and f"{disk_driver}," in argv_line, argv_line
        serial = (lab.server_dir("cs1") / "serial.log").read_text()
        assert f"ready disk=/dev/{'vda' if disk == 'virtio-blk' else 'sda'}" in serial, serial[-500:]

        r = run_load_trial(lab, profile, devices, checkpoints=20)
        print("\n" + load_table([r]))
        assert r.stayed_protected and r.checkpoints >= 20, r.problems
        assert r.lost == 0 and r.acked > 100, r.problems
        assert r.ok, r.problems
        assert r.failover is not None and r.failover.survivor == "cs2"
    finally:
        lab.down()
