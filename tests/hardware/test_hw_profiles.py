"""Shipped profiles: all load, all pass check, and their identity follows the real generations."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from coserver.hardware import (
    HostCapacity,
    ProfileNotFound,
    SchemaError,
    check_profile,
    get_profile,
    list_profiles,
    profile_names,
)
from coserver.hardware.profile import PROFILES_DIR, load_family

EXPECTED = ["dl360-g5", "dl360-g7", "dl360-gen9",
            "dl380-g5", "dl380-g7", "dl380-gen9", "dl380-gen10",
            "dl580-g5", "dl580-g7", "dl580-gen9"]


def test_every_expected_profile_is_shipped_once_per_family_file():
    assert profile_names() == EXPECTED
    assert sorted(p.name for p in PROFILES_DIR.glob("*.toml")) == \
        ["dl360.toml", "dl380.toml", "dl580.toml"]


@pytest.mark.parametrize("name", EXPECTED)
def test_every_profile_passes_check_on_the_lab_machine(name, lab_capacity):
    report = check_profile(name, capacity=lab_capacity)
    assert report.name == name
    assert report.qemus == 2  # primary and secondary on one lab machine


@pytest.mark.parametrize("profile", list_profiles(), ids=lambda p: p.name)
def test_identity_follows_the_generation(profile):
    s = profile.smbios
    gen = profile.generation
    # HP until Gen9, HPE from Gen10 (manufacturer, BIOS vendor, chassis)
    vendor = "HPE" if gen == "gen10" else "HP"
    assert (s.manufacturer, s.bios_vendor, s.chassis_manufacturer) == (vendor,) * 3
    label = "Gen" + gen[3:] if gen.startswith("gen") else gen.upper()  # G5, G7, Gen9, Gen10
    assert s.product == f"ProLiant {profile.family.upper()} {label}"
    assert s.family == "ProLiant"
    assert re.fullmatch(r"[PU][0-9]{2}", s.bios_version)  # System ROM family code
    # Pre-Gen9 ROMs publish no SMBIOS type 2 (no board name in the kernel's DMI line)
    assert s.board == gen.startswith("gen")
    assert profile.machine == ("pc" if gen == "g5" else "q35")
    assert profile.sources, "each generation cites where its figures come from"


def test_rom_families_of_the_reference_generations():
    roms = {name: get_profile(name).smbios.bios_version for name in EXPECTED}
    assert roms["dl380-g5"] == "P56"
    assert roms["dl380-g7"] == "P67"
    assert roms["dl380-gen9"] == roms["dl360-gen9"] == "P89"
    assert roms["dl380-gen10"] == "U30"
    assert roms["dl360-g5"] == "P58" and roms["dl360-g7"] == "P68"
    assert roms["dl580-g7"] == "P65" and roms["dl580-gen9"] == "U17"


@pytest.mark.parametrize("profile", list_profiles(), ids=lambda p: p.name)
def test_guest_defaults_are_lab_sized_and_the_real_box_is_not(profile):
    g, r = profile.guest, profile.real
    assert (g.sockets, g.cores, g.threads, g.memory_mib) == (1, 1, 1, 256)
    assert (g.cpu_model, g.nic_model, g.disk_bus) == ("qemu64", "virtio-net-pci", "virtio-blk")
    assert r.sockets >= 2 and r.max_memory_gib >= 64


def test_profile_files_cite_their_sources_in_comments():
    for path in PROFILES_DIR.glob("*.toml"):
        text = path.read_text()
        assert "QuickSpecs" in text and text.lstrip().startswith("#")


def test_unknown_profile_names_the_known_ones():
    with pytest.raises(ProfileNotFound, match=r"no hardware profile 'dl999'.*dl380-g5"):
        get_profile("dl999")


def _family_file(tmp_path: Path, replace: tuple[str, str]) -> Path:
    text = (PROFILES_DIR / "dl380.toml").read_text()
    assert replace[0] in text
    path = tmp_path / "dl380.toml"
    path.write_text(text.replace(replace[0], replace[1], 1))
    return path


@pytest.mark.parametrize("replace, message", [
    (('bios_date = "04/26/2010"', 'bios_date = "2010-04-26"'),
     r"key g5\.smbios\.bios_date: must be a date MM/DD/YYYY, as SMBIOS wants, got \"2010-04-26\""),
    (('[g5.guest]\n', '[g5.guest]\ncolour = "grey"\n'),
     r"key g5\.guest\.colour: unknown key \(known here: .*memory_mib"),
    (('[g5.guest]\ncpu_model = "qemu64"\nsockets = 1',
      '[g5.guest]\ncpu_model = "qemu64"\nsockets = 3'),
     r"key g5\.guest\.sockets: must be an integer from 1 to 2, got 3"),
    (('machine = "pc"', 'machine = "isapc"'),
     r"key g5\.machine: must be one of pc, q35; got \"isapc\""),
    (('family = "dl380"', 'family = "dl381"'),
     r"key family: must match the file name 'dl380'"),
])
def test_a_broken_profile_file_is_one_line_naming_file_and_key(tmp_path, replace, message):
    path = _family_file(tmp_path, replace)
    with pytest.raises(SchemaError) as err:
        load_family(path)
    text = str(err.value)
    assert text.startswith(f"profile {path}: ")
    assert re.search(message, text), text
    assert "\n" not in text


def test_check_profile_refuses_a_host_too_small_for_two_copies():
    tiny = HostCapacity(name="tiny", cpus=1, memory_mib=700)
    with pytest.raises(Exception, match=r"key memory_mib: 256 MiB of guest RAM needs 1280 MiB "
                                        r"on tiny"):
        check_profile("dl380-g5", capacity=tiny)
