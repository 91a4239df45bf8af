"""Golden files: the exact QEMU argv of every shipped profile, with each device set.

A change to a profile, to argv building or to a device's options shows up here as a diff a
reviewer reads, instead of slipping into what a guest sees (a moved PCI slot or a new SMBIOS
string changes the guest's hardware: Windows re-detects it, licences may notice). After an
intended change, regenerate and commit the files:

    COSERVER_REGEN_GOLDEN=1 .venv/bin/pytest tests/hardware/test_hw_golden.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from coserver.hardware import guest_args, list_profiles, load_spec, resolve

from .conftest import GOOD_SPEC

GOLDEN = Path(__file__).parent / "golden"
REGEN = os.environ.get("COSERVER_REGEN_GOLDEN") == "1"
CASES = [(p.name, devices) for p in list_profiles() for devices in ("virtio", "emulated")]


def spec_for(profile: str, devices: str) -> str:
    """GOOD_SPEC under `profile`, with the profile's own device set (no [cpu]: the profile's guest)."""
    p = next(x for x in list_profiles() if x.name == profile)
    nic, disk = ((p.guest.nic_model, p.guest.disk_bus) if devices == "virtio"
                 else (p.real.qemu_nic_model, p.real.qemu_disk_bus))
    text = GOOD_SPEC.replace('profile = "dl380-g5"', f'profile = "{profile}"')
    text = text.replace('[[disks]]\n', f'[[disks]]\nbus = "{disk}"\n')
    text = text.replace('[[nics]]\n', f'[[nics]]\nmodel = "{nic}"\n')
    return text


@pytest.mark.parametrize("profile, devices", CASES, ids=[f"{p}-{d}" for p, d in CASES])
def test_argv_matches_the_golden_file(profile, devices, write_spec, tmp_path):
    config = resolve(load_spec(write_spec(spec_for(profile, devices))), "cs1")
    argv = guest_args(config, drive_nodes=["colo-disk0"], netdev_ids=["hn0"], cdrom_node="cd0")
    argv = [a.replace(str(tmp_path), "<specdir>") for a in argv]
    golden = GOLDEN / f"{profile}-{devices}.json"
    if REGEN:
        GOLDEN.mkdir(exist_ok=True)
        golden.write_text(json.dumps(argv, indent=1) + "\n")
    assert golden.is_file(), f"{golden} missing: run with COSERVER_REGEN_GOLDEN=1 and commit it"
    assert argv == json.loads(golden.read_text()), f"argv of {profile}/{devices} changed: see {golden}"
