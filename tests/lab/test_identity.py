"""The FT server's hardware identity, as its guest sees it, is the profile's and the spec's, on
either CoServer: before and after a failover (issue acceptance: hardware profiles).

The lab guest's journal service answers INFO with /sys/class/dmi/id (SMBIOS type 1) and the
kernel's boot_id. After kill -9 of the primary's QEMU the survivor must show the same vendor,
product name, serial and UUID, and the same boot_id: the guest carried on, it did not boot
again on the other host.
"""

from __future__ import annotations

import os
import time

import pytest

from coserver.hardware.config import resolve
from coserver.hardware.spec import load_spec
from coserver.images.guestclient import connect_journal
from coserver.lab.lab import Lab, LabOptions
from coserver.lab.spec import lab_identity

pytestmark = [pytest.mark.qemu, pytest.mark.netns, pytest.mark.slow]

PREFIX = f"i{os.getpid() % 10000}"
#: What Linux shows in /sys/class/dmi/id on the real boxes (the profiles' sources).
REAL = {"dl380-g5": ("HP", "ProLiant DL380 G5"), "dl380-gen10": ("HPE", "ProLiant DL380 Gen10")}


def info(lab: Lab) -> dict:
    g = lab.status()["guest"]
    with connect_journal(g["client_netns"], g["address"], g["port"]) as client:
        return client.info()


def expected(lab: Lab, profile: str) -> dict[str, str]:
    """The identity the guest must see: the real box's names, the lab's serial and UUID, and
    the same values as the spec the lab wrote (resolved for each CoServer)."""
    serial, uuid = lab_identity(lab.prefix)
    vendor, product = REAL[profile]
    want = {"sys_vendor": vendor, "product_name": product, "product_serial": serial,
            "product_uuid": uuid}
    spec = load_spec(lab.status()["spec"])
    for host in spec.coservers:
        s = resolve(spec, host).smbios
        assert (s.manufacturer, s.product, s.serial, s.uuid) == tuple(want.values()), host
    return want


def seen(i: dict) -> dict[str, str]:
    return {k: i.get(k) for k in ("sys_vendor", "product_name", "product_serial", "product_uuid")}


@pytest.fixture
def lab_of(tmp_path):
    labs: list[Lab] = []

    def up(profile: str) -> Lab:
        lab = Lab(PREFIX, tmp_path / profile)
        labs.append(lab)
        t0 = time.monotonic()
        lab.up(LabOptions(prefix=PREFIX, workdir=tmp_path / profile, profile=profile,
                          checkpoint_ms=1000))
        print(f"\n{profile}: lab up (protected) in {time.monotonic() - t0:.1f} s")
        return lab

    try:
        yield up
    finally:
        for lab in labs:
            lab.down()


def test_dl380_g5_identity_is_the_same_on_the_survivor_after_a_primary_kill(lab_of):
    lab = lab_of("dl380-g5")
    want = expected(lab, "dl380-g5")
    before = info(lab)
    print(f"INFO on cs1: {before}")
    assert seen(before) == want
    assert lab.status()["primary"] == "cs1"

    t0 = time.monotonic()
    lab.fault("kill-qemu", "cs1")
    deadline = t0 + 60
    while True:  # cs2 serves alone (or, re-protected already, as the new primary)
        st = lab.status()
        if st["primary"] == "cs2" and st["hosts"]["cs2"].get("qemu_alive"):
            break
        assert time.monotonic() < deadline, f"no failover to cs2 within 60 s: {st['state']}"
        time.sleep(0.2)
    after = info(lab)
    print(f"INFO on cs2 {time.monotonic() - t0:.1f} s after kill -9 of cs1's QEMU: {after}")
    assert seen(after) == want
    assert after["boot_id"] == before["boot_id"], "the guest booted again: not a failover"
    assert after["uptime"] > before["uptime"]


def test_dl380_gen10_identity_is_hpe(lab_of):
    """Another profile family (HPE, q35 chipset): the guest sees that box, no failover needed."""
    lab = lab_of("dl380-gen10")
    got = info(lab)
    print(f"INFO: {got}")
    assert seen(got) == expected(lab, "dl380-gen10")
