"""Spec -> domain XML, validated by libvirt itself (the test driver with VIR_DOMAIN_DEFINE_VALIDATE:
libvirt's RNG schema, <qemu:commandline> included), and the guest's identity kept as the qemu
backend gives it (hardware.argv.smbios_tables)."""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from lvhelp import EXAMPLE, libvirt

from coserver.controller.control import Command
from coserver.controller.roles import Role
from coserver.hardware.argv import smbios_tables
from coserver.hardware.config import resolve
from coserver.hardware.spec import NAME, load_spec
from coserver.libvirt import domainxml, hook, metadata
from coserver.libvirt.domainxml import QEMU_NAMESPACE, domain_xml, domain_xml_for_spec
from coserver.libvirt.errors import LibvirtError, MetadataError
from coserver.libvirt.metadata import ServerTag

TAG = ServerTag(site="lab-cs", name="journal", role="primary", epoch=3, token="0123456789abcdef0123456789abcdef")
RICH = """
name = "rich"
profile = "dl380-gen9"
coservers = ["a1", "a2"]
serial = "CZJ9990XYZ"
uuid = "0b5c1d2e-3f40-4152-8a63-748596a7b8c9"
machine = "pc-q35-7.2"
memory_mib = 1024
boot = "disk"
[cpu]
model = "Haswell-noTSX"
sockets = 2
cores = 2
threads = 2
vcpus = 6
[smbios]
bios_version = "P89"
asset_tag = "ACME,0042"
sku = "719064-B21"
[[disks]]
bus = "megasas"
format = "raw"
serial = "RICH-D0"
path = "/srv/rich/d0.img"
[[disks]]
bus = "virtio-blk"
path = "/srv/rich/d1.qcow2"
[[disks]]
bus = "ahci"
path = "/srv/rich/d2.qcow2"
[cdrom]
path = "/srv/rich/install.iso"
[[nics]]
mac = "52:54:00:aa:00:01"
model = "e1000e"
bridge = "br-lan"
[[nics]]
mac = "52:54:00:aa:00:02"
bridge = "br-dmz"
[[devices]]
type = "i6300esb"
[[devices]]
type = "pvpanic"
"""


def _define(conn: Any, xml: str) -> Any:
    return conn.defineXMLFlags(xml, libvirt.VIR_DOMAIN_DEFINE_VALIDATE)


def _identity_from_xml(xml: str) -> dict[int, dict[str, str]]:
    """What QEMU will be told, per SMBIOS type: libvirt's -smbios from <sysinfo>, then ours from
    <qemu:commandline> over it (QEMU applies a later option's keys over an earlier one's)."""
    root = ET.fromstring(xml)
    types = {v: k for k, v in domainxml.SYSINFO_BLOCKS.items()}
    out: dict[int, dict[str, str]] = {}
    for block in root.find("sysinfo") or []:
        out.setdefault(types[block.tag], {}).update({e.get("name", ""): e.text or "" for e in block})
    args = [a.get("value", "") for a in root.iter(f"{{{QEMU_NAMESPACE}}}arg")]
    for opt, value in zip(args, args[1:], strict=False):
        if opt == "-smbios":
            head, *pairs = value.split(",")
            out.setdefault(int(head.split("=")[1]), {}).update(p.split("=", 1) for p in pairs)
    return out


@pytest.mark.parametrize("host", ["cs1", "cs2"])
def test_lab_journal_domain_is_valid_libvirt_xml(conn: Any, host: str) -> None:
    spec = load_spec(EXAMPLE)
    xml = domain_xml_for_spec(spec, host, TAG, qmp_socket="/run/coserver/journal/ctl.qmp", accel="tcg",
                              qemu_args=["-incoming", "defer"], serial_log="/var/lib/coserver/journal/serial.log")
    dom = _define(conn, xml)
    assert dom.name() == "journal" and dom.UUIDString() == spec.uuid
    back = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    assert metadata.parse(back) == TAG    # libvirt keeps coserver's element as given
    root = ET.fromstring(back)
    assert root.get("type") == "qemu"
    assert root.findtext("memory") == str(256 * 1024) and root.findtext("vcpu") == "1"
    assert root.find("devices/interface/mac").get("address") == "52:54:00:c0:5e:01"
    assert root.find("devices/interface/source").get("bridge") == "br-lan"
    assert root.find("devices/interface/driver").get("name") == "qemu"   # never vhost
    assert root.find("os/smbios").get("mode") == "sysinfo"
    assert root.findtext("os/kernel", "").endswith("lab/guest/vmlinuz")
    assert root.find("devices/disk/source").get("file").endswith(f"lab/{host}/journal-data.qcow2")
    # the console stays a pty for virsh console, and everything the guest prints is kept
    serial = root.find("devices/serial")
    assert serial.get("type") == "pty"
    assert serial.find("log").attrib == {"file": "/var/lib/coserver/journal/serial.log", "append": "on"}


def test_rich_spec_is_valid_and_keeps_argv_slots(conn: Any, tmp_path: Path) -> None:
    (tmp_path / "rich.toml").write_text(RICH)
    spec = load_spec(tmp_path / "rich.toml")
    xml = domain_xml_for_spec(spec, "a1", ServerTag("site1", "rich", "secondary", 0), qmp_socket="/run/x/rich.qmp",
                              cpuset="2-3")
    _define(conn, xml)
    root = ET.fromstring(xml)
    assert root.find("vcpu").text == "8" and root.find("vcpu").get("current") == "6"
    assert root.find("vcpu").get("cpuset") == "2-3"
    assert root.find("cpu/topology").attrib == {"sockets": "2", "dies": "1", "cores": "2", "threads": "2"}
    slots = {e.tag + ":" + (e.get("type") or e.get("model") or ""): e.find("address").get("slot")
             for e in root.find("devices") if e.find("address") is not None and e.find("address").get("type") == "pci"}
    assert slots["controller:scsi"] == "0x0c" and slots["controller:sata"] == "0x0e"   # argv.HBA
    assert slots["interface:bridge"] in ("0x03", "0x04") and slots["disk:file"] == "0x10"
    assert slots["watchdog:i6300esb"] == "0x18"
    assert root.find("devices/controller[@type='sata']").get("index") == "1"   # q35's own is index 0
    assert root.find("devices/panic").get("model") == "isa"
    cd = root.find("devices/disk[@device='cdrom']")
    assert cd.find("target").get("bus") == "sata" and cd.find("readonly") is not None
    assert [d.findtext("serial") for d in root.findall("devices/disk[@device='disk']")] == ["RICH-D0", None, None]
    assert root.find("devices/disk/boot").get("order") == "1"
    assert [i.find("model").get("type") for i in root.findall("devices/interface")] == ["e1000e", "virtio"]
    assert root.find("devices/memballoon").get("model") == "none"
    assert root.find("devices/controller[@type='usb']").get("model") == "none"


@pytest.mark.parametrize("spec_text", ["example", "rich"])
def test_smbios_identity_is_exactly_the_qemu_backends(spec_text: str, tmp_path: Path) -> None:
    if spec_text == "rich":
        (tmp_path / "rich.toml").write_text(RICH)
        config = resolve(load_spec(tmp_path / "rich.toml"), "a1")
    else:
        config = resolve(load_spec(EXAMPLE), "cs1")
    xml = domain_xml(config, ServerTag("s", config.name, "primary", 1), qmp_socket="/q.sock")
    want = {kind: {k: v for k, v in pairs if v is not None} for kind, pairs in smbios_tables(config)}
    got = _identity_from_xml(xml)
    # the commandline quotes commas QEMU-style (,,): unquote for the comparison
    got = {t: {k: v.replace(",,", ",") for k, v in d.items()} for t, d in got.items()}
    assert got == want


def test_board_profile_has_baseboard_and_commas_are_quoted(tmp_path: Path) -> None:
    (tmp_path / "rich.toml").write_text(RICH)
    config = resolve(load_spec(tmp_path / "rich.toml"), "a1")
    xml = domain_xml(config, ServerTag("s", "rich", "primary", 1), qmp_socket="/run/a,b/q.sock")
    root = ET.fromstring(xml)
    board = {e.get("name"): e.text for e in root.find("sysinfo/baseBoard")}
    assert board["asset"] == "ACME,0042"     # in XML a comma is just a comma
    args = [a.get("value") for a in root.iter(f"{{{QEMU_NAMESPACE}}}arg")]
    assert "socket,id=coserver-qmp,path=/run/a,,b/q.sock,server=on,wait=off" in args
    assert args[args.index("-mon") + 1] == "chardev=coserver-qmp,mode=control"


def test_disks_can_be_left_to_the_colo_arguments(tmp_path: Path) -> None:
    config = resolve(load_spec(EXAMPLE), "cs1")
    root = ET.fromstring(domain_xml(config, ServerTag("s", "journal", "primary", 1), qmp_socket="/q", disks=False))
    assert root.find("devices/disk") is None


def test_bad_arguments_are_one_line_errors() -> None:
    config = resolve(load_spec(EXAMPLE), "cs1")
    tag = ServerTag("s", "journal", "primary", 1)
    for kwargs, words in (({"qmp_socket": "relative.sock"}, "absolute"),
                          ({"qmp_socket": "/q", "accel": "hvf"}, "accelerator"),
                          ({"qmp_socket": "/q", "cpuset": "1;rm"}, "cpuset"),
                          ({"qmp_socket": "/q", "qemu_args": ["a\0b"]}, "NUL")):
        with pytest.raises(LibvirtError, match=words) as exc:
            domain_xml(config, tag, **kwargs)  # type: ignore[arg-type]
        assert "\n" not in str(exc.value)
    with pytest.raises(LibvirtError, match="names FT server"):
        domain_xml(config, ServerTag("s", "other", "primary", 1), qmp_socket="/q")
    with pytest.raises(LibvirtError, match="resolve"):
        domain_xml(dataclasses.replace(config, host=None), tag, qmp_socket="/q")


def test_xml_special_characters_in_values_stay_values(conn: Any, tmp_path: Path) -> None:
    text = RICH.replace('asset_tag = "ACME,0042"', 'asset_tag = "<b>&\\"x\\"</b>\'"')
    (tmp_path / "rich.toml").write_text(text)
    xml = domain_xml_for_spec(load_spec(tmp_path / "rich.toml"), "a1", ServerTag("s", "rich", "primary", 1),
                              qmp_socket="/q")
    _define(conn, xml)
    board = {e.get("name"): e.text for e in ET.fromstring(xml).find("sysinfo/chassis")}
    assert board["asset"] == "<b>&\"x\"</b>'"


def test_metadata_element_round_trips_and_is_strict() -> None:
    root = ET.Element("domain")
    ET.SubElement(root, "metadata").append(metadata.element(TAG))
    assert metadata.find(root) == TAG
    assert metadata.parse("<domain><name>x</name></domain>") is None
    for bad, words in (('site="S"', "site"), ('role="boss"', "role"), ('epoch="-1"', "epoch"), ('token="xyz"', "token"),
                       ('color="red"', "unknown attribute")):
        attrs = {"site": 'site="s"', "name": 'name="n"', "role": 'role="primary"', "epoch": 'epoch="1"'}
        key = bad.split("=")[0]
        attrs[key] = bad
        el = f'<coserver:server xmlns:coserver="{metadata.NAMESPACE}" {" ".join(attrs.values())}/>'
        with pytest.raises(MetadataError, match=words):
            metadata.parse(f"<domain><metadata>{el}</metadata></domain>")
    with pytest.raises(MetadataError, match="well-formed"):
        metadata.parse("<domain>")


def test_constants_shared_without_imports_stay_equal() -> None:
    """The hook and metadata repeat a few values so the hook loads nothing heavy: they must agree."""
    assert metadata.NAME == NAME
    assert set(metadata.ROLES) == {r.value for r in Role}
    assert hook.NAMESPACE_BYTES == metadata.NAMESPACE.encode()
    assert hook.QEMU_RELEASED == Command.QEMU_RELEASED.value
