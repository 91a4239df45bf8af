"""Resolved configs per CoServer: equality between hosts, file digests, host capacity."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from coserver.hardware import (
    CapacityError,
    ConfigMismatchError,
    FileDigestError,
    HostCapacity,
    SchemaError,
    check_capacity,
    check_spec,
    compare_configs,
    config_differences,
    config_digest,
    guest_view,
    load_spec,
    local_host_capacity,
    measure,
    required_memory_mib,
    resolve,
    to_dict,
)

from .conftest import GOOD_SPEC


def test_resolve_gives_each_coserver_its_own_paths_and_the_same_guest(write_spec):
    spec = load_spec(write_spec())
    a, b = resolve(spec, "cs1"), resolve(spec, "cs2")
    assert a.disks[0].path != b.disks[0].path
    assert a.disks[0].path.parts[-2:] == ("cs1", "disk0.qcow2")
    assert a.host == "cs1" and a.nics[0].bridge == "br-lan"
    assert guest_view(a) == guest_view(b)
    assert config_digest(a) == config_digest(b)
    compare_configs(a, b)  # no exception


def test_guest_view_has_the_identity_and_no_host_local_field(write_spec):
    view = guest_view(resolve(load_spec(write_spec()), "cs1"))
    text = json.dumps(view)
    assert "cs1" not in text and "br-lan" not in text and ".qcow2" not in text
    s = view["smbios"]
    assert (s["manufacturer"], s["product"], s["serial"], s["uuid"]) == \
        ("HP", "ProLiant DL380 G5", "CZJ7300ABC", "6f1c2a7e-3b9d-4c1e-9a55-0c1d2e3f4a5b")
    assert s["chassis_serial"] == "CZJ7300ABC" and s["board"] is False
    assert view["nics"][0]["mac"] == "52:54:00:c0:5e:01"
    full = to_dict(resolve(load_spec(write_spec()), "cs1"))
    assert full["host"] == "cs1" and full["disks"][0]["path"].endswith("cs1/disk0.qcow2")


def test_smbios_overrides_from_the_spec(write_spec):
    text = GOOD_SPEC.replace("[cpu]", '[smbios]\nbios_date = "01/15/2009"\nasset_tag = "ACME-42"\n'
                                      'sku = "458564-421"\n\n[cpu]')
    s = resolve(load_spec(write_spec(text)), "cs1").smbios
    assert (s.bios_version, s.bios_date, s.asset_tag, s.sku) == \
        ("P56", "01/15/2009", "ACME-42", "458564-421")


def test_configs_that_differ_between_hosts_are_refused_at_the_first_key(write_spec, tmp_path):
    # Each CoServer keeps its own copy of the spec; cs2's copy drifted.
    a = resolve(load_spec(write_spec(GOOD_SPEC, "cs1.toml")), "cs1")
    b = resolve(load_spec(write_spec(GOOD_SPEC.replace("memory_mib = 256", "memory_mib = 512"),
                                     "cs2.toml")), "cs2")
    with pytest.raises(ConfigMismatchError) as err:
        compare_configs(a, b)
    assert str(err.value) == (f"spec {tmp_path / 'cs1.toml'}: key memory_mib: differs between "
                              f"CoServers: cs1 has 256, cs2 has 512")
    assert config_digest(a) != config_digest(b)


def test_compare_against_a_peers_guest_view_received_as_json(write_spec):
    spec = load_spec(write_spec())
    mine = resolve(spec, "cs1")
    peer = json.loads(json.dumps(guest_view(resolve(spec, "cs2"))))
    peer["nics"][0]["model"] = "e1000"
    peer["smbios"]["serial"] = "OTHER"
    assert [k for k, _, _ in config_differences(mine, peer)] == ["smbios.serial",
                                                                 "nics[0].model"]
    with pytest.raises(ConfigMismatchError,
                       match=r'key smbios\.serial: differs between CoServers: mine has '
                             r'"CZJ7300ABC", peer has "OTHER" \(and 1 more differences\)$'):
        compare_configs(mine, peer, names=("mine", "peer"))


def test_measure_records_the_local_files_digests(write_spec):
    config = measure(resolve(load_spec(write_spec(iso_cs1=b"the iso")), "cs1"))
    assert config.cdrom.sha256 == hashlib.sha256(b"the iso").hexdigest()
    assert config.boot.kernel_sha256 == hashlib.sha256(b"kernel\n").hexdigest()


def test_iso_that_differs_between_hosts_is_refused(write_spec):
    path = write_spec(iso_cs1=b"debian-12.iso", iso_cs2=b"debian-11.iso")
    with pytest.raises(ConfigMismatchError) as err:
        check_spec(path, capacity=HostCapacity("lab", 2, 24576))
    d1 = hashlib.sha256(b"debian-12.iso").hexdigest()
    d2 = hashlib.sha256(b"debian-11.iso").hexdigest()
    assert str(err.value) == (f'spec {path}: key cdrom.sha256: differs between CoServers: '
                              f'cs1 has "{d1}", cs2 has "{d2}"')


def test_iso_that_is_not_the_declared_one_is_refused(write_spec):
    declared = hashlib.sha256(b"the right iso").hexdigest()
    text = GOOD_SPEC.replace("[cdrom]\n", f'[cdrom]\nsha256 = "{declared}"\n')
    path = write_spec(text, iso_cs1=b"a wrong iso")
    with pytest.raises(FileDigestError,
                       match=r"key cdrom\.hosts\.cs1\.path: sha256 of .*/cs1/install\.iso is "
                             rf"[0-9a-f]{{64}}, but cdrom\.sha256 says {declared}$"):
        check_spec(path, local_hosts=["cs1"], capacity=HostCapacity("cs1", 2, 24576))


def test_missing_local_file(write_spec, tmp_path):
    path = write_spec()
    (tmp_path / "guest" / "vmlinuz").unlink()
    with pytest.raises(FileDigestError, match=r"key boot\.kernel: cannot read .*/guest/vmlinuz: "
                                              r"No such file or directory$"):
        check_spec(path, capacity=HostCapacity("lab", 2, 24576))


def test_check_spec_good(write_spec, lab_capacity):
    report = check_spec(write_spec(), capacity=lab_capacity)
    assert report.local_hosts == ("cs1", "cs2") and report.qemus == 2 and report.measured
    assert report.summary().startswith("ok spec journal: HP ProLiant DL380 G5, pc, 1 vCPU, "
                                       "256 MiB, 1 disk(s), 1 NIC(s)")
    data = report.to_dict()
    assert data["ok"] and data["capacity"]["required_memory_mib"] == 256 * 3 + 2 * 256


def test_one_coserver_per_machine(write_spec, lab_capacity):
    report = check_spec(write_spec(), local_hosts=["cs2"], capacity=lab_capacity)
    assert report.qemus == 1 and report.config.host == "cs2"


def test_check_names_an_unknown_local_host(write_spec, lab_capacity):
    with pytest.raises(SchemaError, match=r"key coservers: 'cs9' is not one of this spec's "
                                          r"coservers \(cs1, cs2\)$"):
        check_spec(write_spec(), local_hosts=["cs9"], capacity=lab_capacity)


def test_two_local_coservers_on_one_image_are_refused(write_spec, lab_capacity):
    text = GOOD_SPEC.replace('[disks.hosts.cs1]\npath = "cs1/disk0.qcow2"\n'
                             '[disks.hosts.cs2]\npath = "cs2/disk0.qcow2"\n',
                             'path = "shared/disk0.qcow2"\n')
    with pytest.raises(SchemaError, match=r"key disks\[0\]\.path: cs1 and cs2 both use "
                                          r".*/shared/disk0\.qcow2 on this machine; each QEMU "
                                          r"needs its own copy of the image$"):
        check_spec(write_spec(text), capacity=lab_capacity)
    # the same path is fine when each CoServer is its own machine
    check_spec(write_spec(text), local_hosts=["cs1"], capacity=lab_capacity)


# -- host capacity ---------------------------------------------------------------------------

def test_more_memory_than_the_host_has(write_spec):
    text = GOOD_SPEC.replace("memory_mib = 256", "memory_mib = 12288")
    config = resolve(load_spec(write_spec(text)), "cs1")
    host = HostCapacity("cs1", cpus=2, memory_mib=24105)
    with pytest.raises(CapacityError) as err:
        check_capacity(config, host)
    assert str(err.value).endswith(
        "key memory_mib: 12288 MiB of guest RAM needs 24832 MiB on cs1 (2 x guest RAM, one "
        "being the COLO secondary's RAM cache, + 1 x 256 MiB QEMU overhead), which has "
        "24105 MiB")
    check_capacity(config, HostCapacity("big", cpus=2, memory_mib=32768))


def test_more_vcpus_than_the_host_has(write_spec):
    text = GOOD_SPEC.replace("sockets = 1", "sockets = 2").replace("cores = 1", "cores = 2")
    config = resolve(load_spec(write_spec(text)), "cs1")
    with pytest.raises(CapacityError, match=r"key cpu: 4 vCPUs exceed the 2 CPUs of lab$"):
        check_capacity(config, HostCapacity("lab", cpus=2, memory_mib=24576))


def test_lab_needs_room_for_primary_and_secondary(write_spec):
    config = resolve(load_spec(write_spec()), "cs1")
    assert required_memory_mib(config, qemus=1) == 2 * 256 + 256
    assert required_memory_mib(config, qemus=2) == 3 * 256 + 2 * 256
    with pytest.raises(CapacityError):
        check_capacity(config, HostCapacity("lab", 2, 1200), qemus=2)
    check_capacity(config, HostCapacity("lab", 2, 1200), qemus=1)


def test_local_host_capacity_reads_proc(tmp_path):
    (tmp_path / "cpuinfo").write_text("processor\t: 0\nmodel name\t: X\n\nprocessor\t: 1\n"
                                      "model name\t: X\n")
    (tmp_path / "meminfo").write_text("MemTotal:       24683600 kB\nMemFree:  1 kB\n")
    assert local_host_capacity("cs1", proc=tmp_path) == HostCapacity("cs1", 2, 24105)


def test_local_host_capacity_of_this_machine():
    cap = local_host_capacity()
    assert cap.cpus >= 1 and cap.memory_mib > 256


def test_local_host_capacity_unreadable(tmp_path):
    with pytest.raises(Exception, match=r"cannot read host capacity from .*: No such file"):
        local_host_capacity(proc=tmp_path / "none")
    assert not (Path(tmp_path) / "none").exists()
