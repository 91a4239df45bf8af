"""QEMU argv built from resolved configs: machine, SMBIOS identity, devices on given nodes."""

from __future__ import annotations

import pytest

from coserver.hardware import (
    ConfigGuestHardware,
    HardwareError,
    boot_args,
    cdrom_device_args,
    default_config,
    disk_device_args,
    extra_device_args,
    get_profile,
    guest_args,
    load_spec,
    machine_args,
    nic_device_args,
    resolve,
    smbios_args,
    storage_controller_args,
)

from .conftest import GOOD_SPEC


def _config(write_spec, text=GOOD_SPEC, host="cs1"):
    return resolve(load_spec(write_spec(text)), host)


def _smbios(args, kind):
    found = [args[i + 1] for i, a in enumerate(args) if a == "-smbios"
             and args[i + 1].startswith(f"type={kind},")]
    return found


def _fields(option: str) -> dict[str, str]:
    parts = option.split(",")
    return dict(p.split("=", 1) for p in parts[1:])


def test_machine_args(write_spec):
    args = machine_args(_config(write_spec))
    assert args[:10] == ["-machine", "pc", "-cpu", "qemu64", "-smp",
                         "1,sockets=1,cores=1,threads=1", "-m", "256M",
                         "-uuid", "6f1c2a7e-3b9d-4c1e-9a55-0c1d2e3f4a5b"]
    assert all(isinstance(a, str) for a in args)


def test_type1_carries_what_linux_shows_in_sys_class_dmi_id(write_spec):
    args = machine_args(_config(write_spec))
    (t1,) = _smbios(args, 1)
    f = _fields(t1)
    assert f == {"manufacturer": "HP", "product": "ProLiant DL380 G5", "version": "",
                 "serial": "CZJ7300ABC", "uuid": "6f1c2a7e-3b9d-4c1e-9a55-0c1d2e3f4a5b",
                 "family": "ProLiant"}
    assert f["uuid"] == args[args.index("-uuid") + 1]  # -uuid and type 1 agree
    (t0,) = _smbios(args, 0)
    assert _fields(t0) == {"vendor": "HP", "version": "P56", "date": "04/26/2010"}
    (t3,) = _smbios(args, 3)
    assert _fields(t3) == {"manufacturer": "HP", "version": "", "serial": "CZJ7300ABC"}
    assert _smbios(args, 2) == []  # a G5 ROM has no type 2: none is made up
    assert _fields(_smbios(args, 4)[0]) == {"manufacturer": "Intel", "version": ""}


def test_a_gen10_has_a_board_and_hpe_everywhere():
    config = default_config(get_profile("dl380-gen10"), serial="CZ2827ABCD",
                            uuid="11111111-2222-3333-4444-555555555555")
    args = smbios_args(config)
    (t2,) = _smbios(args, 2)
    assert _fields(t2) == {"manufacturer": "HPE", "product": "ProLiant DL380 Gen10",
                           "version": "", "serial": "CZ2827ABCD"}
    t1 = _fields(_smbios(args, 1)[0])
    assert (t1["manufacturer"], t1["sku"]) == ("HPE", "868703-B21")
    assert _fields(_smbios(args, 0)[0])["version"] == "U30"


def test_commas_in_values_are_doubled(write_spec):
    text = GOOD_SPEC.replace("[cpu]", '[smbios]\nasset_tag = "rack 4, unit 12"\n\n[cpu]')
    (t3,) = _smbios(smbios_args(_config(write_spec, text)), 3)
    assert t3.endswith(",asset=rack 4,, unit 12")


def test_bios_release_and_pinned_machine(write_spec):
    text = 'machine = "pc-q35-7.2"\n' + GOOD_SPEC.replace('profile = "dl380-g5"',
                                                          'profile = "dl360-gen9"')
    args = machine_args(_config(write_spec, text))
    assert args[1] == "pc-q35-7.2"
    assert _fields(_smbios(args, 0)[0])["release"] == "2.30"


def test_smp_with_fewer_vcpus_online_than_slots(write_spec):
    text = GOOD_SPEC.replace('profile = "dl380-g5"', 'profile = "dl380-g7"').replace(
        "cores = 1\nthreads = 1", "cores = 2\nthreads = 2\nvcpus = 2")
    args = machine_args(_config(write_spec, text))
    assert args[args.index("-smp") + 1] == "2,sockets=1,cores=2,threads=2,maxcpus=4"


def test_kernel_boot_uses_this_hosts_paths(write_spec, tmp_path):
    args = boot_args(_config(write_spec))
    assert args == ["-kernel", str(tmp_path / "guest" / "vmlinuz"),
                    "-initrd", str(tmp_path / "guest" / "initrd.img"),
                    "-append", "console=ttyS0 panic=-1"]


def test_disk_boot_is_strict_and_marks_the_first_disk(write_spec):
    text = 'boot = "disk"\n' + GOOD_SPEC[:GOOD_SPEC.index("[boot]")] + \
        GOOD_SPEC[GOOD_SPEC.index("[lab]"):]
    config = _config(write_spec, text)
    assert boot_args(config) == ["-boot", "strict=on"]
    assert disk_device_args(config, 0, "colo-disk0") == [
        "-device", "virtio-blk-pci,drive=colo-disk0,id=disk0,serial=JOURNAL-DATA,bootindex=1,"
                   "addr=0x10"]


def test_virtio_blk_disk_on_the_colo_node(write_spec):
    config = _config(write_spec)
    assert storage_controller_args(config) == []
    assert disk_device_args(config, 0, drive_node="colo-disk0") == [
        "-device", "virtio-blk-pci,drive=colo-disk0,id=disk0,serial=JOURNAL-DATA,addr=0x10"]


@pytest.mark.parametrize("bus, controller, device", [
    ("megasas", "megasas,id=hba-megasas,addr=0x0c",
     "scsi-hd,bus=hba-megasas.0,scsi-id=1,lun=0,drive=n1,id=disk1"),
    ("virtio-scsi", "virtio-scsi-pci,id=hba-virtio-scsi,addr=0x0b",
     "scsi-hd,bus=hba-virtio-scsi.0,scsi-id=1,lun=0,drive=n1,id=disk1"),
    ("ahci", "ahci,id=hba-ahci,addr=0x0e", "ide-hd,bus=hba-ahci.1,drive=n1,id=disk1"),
])
def test_controller_once_and_disks_behind_it(write_spec, bus, controller, device):
    text = GOOD_SPEC.replace('serial = "JOURNAL-DATA"', f'serial = "JOURNAL-DATA"\nbus = "{bus}"')
    text = text.replace("[cdrom]\n", f'[[disks]]\nbus = "{bus}"\npath = "d1.qcow2"\n\n[cdrom]\n')
    config = _config(write_spec, text)
    assert storage_controller_args(config) == ["-device", controller]
    assert disk_device_args(config, 1, "n1") == ["-device", device]


def test_nic_with_fixed_mac_and_no_option_rom(write_spec):
    config = _config(write_spec)
    assert nic_device_args(config, 0, netdev_id="hn0") == [
        "-device", "virtio-net-pci,netdev=hn0,mac=52:54:00:c0:5e:01,id=nic0,addr=0x03,romfile="]
    text = GOOD_SPEC.replace('bridge = "br-lan"', 'bridge = "br-lan"\nmodel = "e1000"')
    assert nic_device_args(_config(write_spec, text), 0, "hn0")[1].startswith("e1000,netdev=hn0,")


def test_cdrom_on_the_chipsets_own_controller(write_spec):
    assert cdrom_device_args(_config(write_spec), "cd0") == [
        "-device", "ide-cd,bus=ide.1,unit=0,drive=cd0,id=cdrom0"]
    text = GOOD_SPEC.replace('profile = "dl380-g5"', 'profile = "dl380-gen9"')
    assert cdrom_device_args(_config(write_spec, text), "cd0") == [
        "-device", "ide-cd,bus=ide.2,drive=cd0,id=cdrom0"]


def test_extra_devices(write_spec):
    text = GOOD_SPEC + '\n[[devices]]\ntype = "i6300esb"\n\n[[devices]]\ntype = "pvpanic"\n'
    assert extra_device_args(_config(write_spec, text)) == [
        "-device", "i6300esb,id=i6300esb,addr=0x18", "-device", "pvpanic,id=pvpanic0"]


def test_guest_args_assembles_everything_in_order(write_spec):
    config = _config(write_spec)
    args = guest_args(config, drive_nodes=["colo-disk0"], netdev_ids=["hn0"], cdrom_node="cd0")
    assert args[:len(machine_args(config))] == machine_args(config)
    devices = [args[i + 1].split(",")[0] for i, a in enumerate(args) if a == "-device"]
    assert devices == ["virtio-blk-pci", "ide-cd", "virtio-net-pci"]
    assert "-kernel" in args


@pytest.mark.parametrize("call, message", [
    (lambda c: disk_device_args(c, 3, "n0"), r"no disks\[3\] \(the spec has 1 disks\)"),
    (lambda c: disk_device_args(c, 0, "0bad,node"), r"drive node name '0bad,node': must be a "
                                                    r"QEMU id"),
    (lambda c: nic_device_args(c, 0, "x" * 40), r"netdev id 'x+': must be a QEMU id"),
    (lambda c: guest_args(c, drive_nodes=[], netdev_ids=["hn0"], cdrom_node="cd0"),
     r"1 disks but 0 drive nodes given"),
    (lambda c: guest_args(c, drive_nodes=["d"], netdev_ids=["hn0"]),
     r"the CD-ROM node must be given exactly when the spec has a \[cdrom\]"),
])
def test_wrong_calls_are_one_line_errors(write_spec, call, message):
    with pytest.raises(HardwareError, match=message):
        call(_config(write_spec))


def _single(text: str) -> str:
    start = text.index("[cdrom]")
    return text[:start] + text[text.index("[[nics]]"):]


def test_config_as_the_single_disk_guest_interface(write_spec):
    config = _config(write_spec, _single(GOOD_SPEC))
    guest = ConfigGuestHardware(config)
    assert guest.machine_args() == machine_args(config) + boot_args(config)
    assert guest.disk_device_args("colo-disk0") == disk_device_args(config, 0, "colo-disk0")
    assert guest.nic_device_args("hn0", "52:54:00:C0:5E:01") == nic_device_args(config, 0, "hn0")
    with pytest.raises(HardwareError, match=r"MAC 52:54:00:00:00:09 is not the spec's "
                                            r"nics\[0\]\.mac 52:54:00:c0:5e:01"):
        guest.nic_device_args("hn0", "52:54:00:00:00:09")


def test_the_single_disk_interface_refuses_a_cdrom(write_spec):
    with pytest.raises(HardwareError, match=r"1 disks, 1 NICs and a CD-ROM"):
        ConfigGuestHardware(_config(write_spec))
