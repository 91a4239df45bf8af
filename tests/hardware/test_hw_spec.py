"""Spec validation: every rule fails on its broken input with the expected one-line message."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import coserver.hardware
from coserver.hardware import ColoIncompatibleError, SchemaError, SpecError, TopologyError, load_spec
from coserver.hardware.spec import MAX_DISKS

from .conftest import GOOD_SPEC


def test_the_good_spec_loads(write_spec):
    spec = load_spec(write_spec())
    assert spec.name == "journal" and spec.profile.name == "dl380-g5"
    assert spec.coservers == ("cs1", "cs2")
    assert spec.cpu.vcpus == 1 and spec.memory_mib == 256
    assert spec.disks[0].bus == "virtio-blk"  # the profile's default
    assert spec.disks[0].paths["cs1"].value.name == "disk0.qcow2"
    assert spec.disks[0].paths["cs1"].value.is_absolute()  # relative to the spec's directory
    assert spec.nics[0].model == "virtio-net-pci"
    assert spec.boot.mode == "kernel" and spec.boot.kernels["cs2"].key == "boot.kernel"
    assert spec.lab.port == 7777


def test_the_shipped_example_spec_loads():
    example = Path(coserver.hardware.__file__).parent / "examples" / "lab-journal.toml"
    spec = load_spec(example)
    assert spec.profile.name == "dl380-g5" and spec.lab.address == "10.77.0.10"


def _fails(write_spec, text, cls, expected):
    path = write_spec(text)
    with pytest.raises(cls) as err:
        load_spec(path)
    message = str(err.value)
    assert "\n" not in message
    assert message == f"spec {path}: {expected}" or re.fullmatch(
        re.escape(f"spec {path}: ") + expected, message), message
    return err.value


def _top(extra: str) -> str:
    """GOOD_SPEC with top-level keys added (they must precede the first table)."""
    return extra + "\n" + GOOD_SPEC


def _replace(old: str, new: str) -> str:
    assert old in GOOD_SPEC, old
    return GOOD_SPEC.replace(old, new, 1)


# -- schema: bad keys, wrong types ----------------------------------------------------------

def test_unknown_key_is_named_with_the_known_ones(write_spec):
    _fails(write_spec, _replace("sockets = 1", "socket = 1"), SchemaError,
           "key cpu.socket: unknown key (known here: cores, model, sockets, threads, vcpus)")


def test_unknown_top_level_key(write_spec):
    e = _fails(write_spec, _top('colour = "grey"'), SchemaError,
               r"key colour: unknown key \(known here: .*\)")
    assert e.key == "colour"


def test_wrong_type(write_spec):
    _fails(write_spec, _replace("memory_mib = 256", 'memory_mib = "256"'), SchemaError,
           'key memory_mib: must be a positive integer, got "256"')


def test_bool_is_not_an_integer(write_spec):
    _fails(write_spec, _replace("cores = 1", "cores = true"), SchemaError,
           "key cpu.cores: must be a positive integer, got true")


def test_missing_required_key(write_spec):
    _fails(write_spec, _replace('serial = "CZJ7300ABC"\n', ""), SchemaError,
           "key serial: required key is missing")


def test_not_toml(write_spec):
    _fails(write_spec, 'name = "x"\nprofile = \n', SchemaError,
           r"not valid TOML: Invalid value \(at line 2, column 11\)")


def test_missing_file(tmp_path):
    with pytest.raises(SchemaError, match=r"^spec .*/nope\.toml: no such file$"):
        load_spec(tmp_path / "nope.toml")


def test_unknown_profile(write_spec):
    _fails(write_spec, _replace('profile = "dl380-g5"', 'profile = "dl380-g6"'), SchemaError,
           r'key profile: no such profile "dl380-g6" \(known: dl360-g5, .*\)')


@pytest.mark.parametrize("old, new, expected", [
    ('uuid = "6f1c2a7e-3b9d-4c1e-9a55-0c1d2e3f4a5b"', 'uuid = "not-a-uuid"',
     'key uuid: must be a UUID like 6f1c2a7e-3b9d-4c1e-9a55-0c1d2e3f4a5b, got "not-a-uuid"'),
    ('uuid = "6f1c2a7e-3b9d-4c1e-9a55-0c1d2e3f4a5b"',
     'uuid = "00000000-0000-0000-0000-000000000000"',
     "key uuid: must not be 00000000-0000-0000-0000-000000000000: firmware and operating "
     "systems read it as 'no UUID'"),
    ('mac = "52:54:00:c0:5e:01"', 'mac = "52:54:00:c0:5e"',
     'key nics[0].mac: must be a MAC address like 52:54:00:12:34:56, got "52:54:00:c0:5e"'),
    ('mac = "52:54:00:c0:5e:01"', 'mac = "01:00:5e:00:00:01"',
     'key nics[0].mac: must be a unicast MAC (first octet even), got "01:00:5e:00:00:01"'),
    ('serial = "CZJ7300ABC"', 'serial = " CZJ"',
     'key serial: must be 1 to 64 printable ASCII characters, no leading or trailing space, '
     'got " CZJ"'),
    ('coservers = ["cs1", "cs2"]', 'coservers = ["cs1", "cs1"]',
     "key coservers: must name two different CoServers, got 'cs1' twice"),
    ('bridge = "br-lan"', 'bridge = "a-bridge-name-too-long"',
     r'key nics\[0\]\.bridge: must be a Linux interface name \(1-15 of \[A-Za-z0-9_\.-\]\), '
     r'got "a-bridge-name-too-long"'),
    ('address = "10.77.0.10"', 'address = "fe80::1"',
     'key lab.address: must be an IPv4 address (colo-compare handles IPv4 only), got "fe80::1"'),
    ('port = 7777', 'port = 70000', "key lab.port: must be an integer from 1 to 65535, got 70000"),
    ('mode = "kernel"', 'mode = "pxe"', 'key boot.mode: must be one of disk, kernel; got "pxe"'),
])
def test_bad_values(write_spec, old, new, expected):
    text = _replace(old, new)
    path = write_spec(text)
    with pytest.raises(SchemaError) as err:
        load_spec(path)
    message = str(err.value)
    prefix = f"spec {path}: "
    assert message == prefix + expected or re.fullmatch(re.escape(prefix) + expected, message), \
        message


def test_machine_must_be_the_profiles_chipset(write_spec):
    _fails(write_spec, _top('machine = "pc-q35-7.2"'), SchemaError,
           r'key machine: must be a pc machine type \(pc or pc-i440fx-.*\) as profile dl380-g5 '
           r'uses, got "pc-q35-7.2"')


def test_a_pinned_machine_version_is_kept(write_spec):
    assert load_spec(write_spec(_top('machine = "pc-i440fx-7.2"'))).machine == "pc-i440fx-7.2"


def test_per_host_path_missing_for_one_coserver(write_spec):
    text = _replace('[disks.hosts.cs2]\npath = "cs2/disk0.qcow2"\n', "")
    _fails(write_spec, text, SchemaError,
           "key disks[0].hosts.cs2.path: missing: give disks[0].path for both CoServers or "
           "disks[0].hosts.cs2.path for this one")


def test_per_host_table_for_a_stranger(write_spec):
    text = _replace("[disks.hosts.cs2]", "[disks.hosts.cs3]")
    _fails(write_spec, text, SchemaError,
           "key disks[0].hosts.cs3: not one of this spec's coservers (cs1, cs2)")


def test_duplicate_mac(write_spec):
    text = GOOD_SPEC.replace('[boot]', '[[nics]]\nmac = "52:54:00:C0:5E:01"\nbridge = "br-lan"\n\n'
                                       '[boot]')
    _fails(write_spec, text, SchemaError, "key nics[1].mac: same MAC as nics[0]: 52:54:00:c0:5e:01")


def test_two_disks_on_one_image(write_spec):
    text = GOOD_SPEC.replace("[cdrom]\n", '[[disks]]\npath = "cs1/disk0.qcow2"\n\n[cdrom]\n')
    _fails(write_spec, text, SchemaError,
           r"key disks\[1\]\.path: same image as disks\[0\] on cs1: .*/cs1/disk0\.qcow2")


def test_boot_from_disk_needs_a_disk(write_spec):
    start = GOOD_SPEC.index("[[disks]]")
    end = GOOD_SPEC.index("[cdrom]")
    text = GOOD_SPEC[:start] + GOOD_SPEC[end:]
    boot = text.index("[boot]")
    lab = text.index("[lab]")
    text = text[:boot] + text[lab:]
    _fails(write_spec, _top('boot = "disk"').replace(GOOD_SPEC, text), SchemaError,
           "key boot: boot from disk needs at least one [[disks]]")


def test_an_ft_server_needs_a_nic(write_spec):
    start = GOOD_SPEC.index("[[nics]]")
    end = GOOD_SPEC.index("[boot]")
    _fails(write_spec, GOOD_SPEC[:start] + GOOD_SPEC[end:], SchemaError,
           r"key nics: required: an FT server needs at least one \[\[nics\]\] .*")


# -- impossible topology ------------------------------------------------------------------------

def test_zero_sockets(write_spec):
    _fails(write_spec, _replace("sockets = 1", "sockets = 0"), SchemaError,
           "key cpu.sockets: must be a positive integer, got 0")


def test_vcpus_must_fit_the_topology(write_spec):
    e = _fails(write_spec, _replace("threads = 1", "threads = 1\nvcpus = 3"), TopologyError,
               "key cpu.vcpus: 3 vCPUs do not fit sockets*cores*threads = 1*1*1 = 1")
    assert isinstance(e, SpecError)


def test_more_sockets_than_the_real_box(write_spec):
    _fails(write_spec, _replace("sockets = 1", "sockets = 4"), TopologyError,
           "key cpu.sockets: a HP ProLiant DL380 G5 has at most 2 sockets, got 4")


def test_hyper_threading_on_a_box_that_had_none(write_spec):
    _fails(write_spec, _replace("threads = 1", "threads = 2"), TopologyError,
           "key cpu.threads: a HP ProLiant DL380 G5 has at most 1 threads per core, got 2")


def test_more_memory_than_the_real_box(write_spec):
    _fails(write_spec, _replace("memory_mib = 256", "memory_mib = 70000"), TopologyError,
           "key memory_mib: a HP ProLiant DL380 G5 takes at most 64 GiB (65536 MiB), got 70000")


def test_more_nics_than_the_real_box_has_ports(write_spec):
    nic = '[[nics]]\nmac = "52:54:00:c0:5e:0{}"\nbridge = "br-lan"\n\n'
    text = GOOD_SPEC.replace("[boot]", nic.format(2) + nic.format(3) + "[boot]")
    _fails(write_spec, text, TopologyError,
           "key nics: a HP ProLiant DL380 G5 has 2 NIC ports, the spec asks for 3")


def test_too_many_disks_on_one_bus(write_spec):
    disks = "".join(f'[[disks]]\nbus = "ahci"\npath = "d{i}.qcow2"\n\n'
                    for i in range(MAX_DISKS["ahci"] + 1))
    text = GOOD_SPEC.replace("[cdrom]\n", disks + "[cdrom]\n")
    _fails(write_spec, text, TopologyError, "key disks: at most 6 disks on bus ahci, got 7")


# -- devices COLO cannot keep in step ---------------------------------------------------------

@pytest.mark.parametrize("device, reason", [
    ("vfio-pci", "host pass-through"),
    ("pci-assign", "host pass-through"),
    ("usb-host", "USB host pass-through"),
    ("vhost-user-blk-pci", "vhost-user"),
    ("vhost-vsock-pci", "in-kernel vhost"),
])
def test_pass_through_and_vhost_devices_are_refused(write_spec, device, reason):
    text = GOOD_SPEC + f'\n[[devices]]\ntype = "{device}"\n'
    _fails(write_spec, text, ColoIncompatibleError,
           rf"key devices\[0\]\.type: refused for COLO: {re.escape(reason)}.*")


def test_vhost_on_for_a_nic_is_refused(write_spec):
    _fails(write_spec, _replace('bridge = "br-lan"', 'bridge = "br-lan"\nvhost = true'),
           ColoIncompatibleError,
           r"key nics\[0\]\.vhost: refused for COLO: vhost=on: in-kernel vhost: the data path "
           r"bypasses QEMU, so COLO's filters and colo-compare never see .*")


def test_a_vhost_user_disk_bus_is_refused(write_spec):
    _fails(write_spec, _replace('serial = "JOURNAL-DATA"', 'serial = "JOURNAL-DATA"\n'
                                                           'bus = "vhost-user-blk-pci"'),
           ColoIncompatibleError, r"key disks\[0\]\.bus: refused for COLO: vhost-user: .*")


def test_a_pass_through_nic_model_is_refused(write_spec):
    _fails(write_spec, _replace('bridge = "br-lan"', 'bridge = "br-lan"\nmodel = "vfio-pci"'),
           ColoIncompatibleError, r"key nics\[0\]\.model: refused for COLO: host pass-through.*")


def test_cpu_host_is_refused(write_spec):
    _fails(write_spec, _replace('model = "qemu64"', 'model = "host"'), ColoIncompatibleError,
           r"key cpu\.model: refused for COLO: -cpu host copies the CPU of whichever CoServer .*")


def test_an_unknown_device_type_is_a_schema_error(write_spec):
    _fails(write_spec, GOOD_SPEC + '\n[[devices]]\ntype = "sound-blaster"\n', SchemaError,
           'key devices[0].type: must be one of i6300esb, pvpanic; got "sound-blaster"')


def test_allowed_extra_devices_load(write_spec):
    text = GOOD_SPEC + '\n[[devices]]\ntype = "i6300esb"\n\n[[devices]]\ntype = "pvpanic"\n'
    assert load_spec(write_spec(text)).devices == ("i6300esb", "pvpanic")
