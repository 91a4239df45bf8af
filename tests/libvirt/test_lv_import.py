"""Domain XML -> spec: end to end through the real CLI against libvirt's test driver (a node file,
test:///<path>, is what a separate process sees), refusals one line each, and the round trip
spec -> domain XML -> spec."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
from lvhelp import EXAMPLE, coserver_cli, libvirt, node_file

from coserver.hardware.config import resolve
from coserver.hardware.spec import load_spec
from coserver.libvirt import spectext
from coserver.libvirt.domainxml import domain_xml_for_spec
from coserver.libvirt.errors import ImportRefused
from coserver.libvirt.importer import import_domain
from coserver.libvirt.metadata import ServerTag

PLAIN = """<domain type='kvm'>
  <name>web</name>
  <uuid>3d0c6c1e-9a55-4f0e-8a3a-1f2e3d4c5b6a</uuid>
  <memory unit='KiB'>524288</memory>
  <vcpu placement='static'>2</vcpu>
  <os><type arch='x86_64' machine='pc-i440fx-7.2'>hvm</type><boot dev='hd'/></os>
  <features><acpi/><apic/></features>
  <cpu mode='custom' match='exact'><model fallback='allow'>Westmere</model></cpu>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/var/lib/libvirt/images/web.qcow2'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <controller type='usb' index='0' model='piix3-uhci'/>
    <interface type='bridge'>
      <mac address='52:54:00:6b:3c:58'/>
      <source bridge='br0'/>
      <model type='virtio'/>
    </interface>
    <serial type='pty'><target port='0'/></serial>
    <console type='pty'><target type='serial' port='0'/></console>
    <graphics type='vnc' port='-1'/>
    <video><model type='cirrus'/></video>
    <memballoon model='virtio'/>
  </devices>
</domain>"""

HOSTDEV = """    <hostdev mode='subsystem' type='pci' managed='yes'>
      <source><address domain='0x0000' bus='0x01' slot='0x00' function='0x0'/></source>
    </hostdev>
"""
MANY_BAD = HOSTDEV + """    <interface type='vhostuser'>
      <mac address='52:54:00:00:00:02'/><source type='unix' path='/tmp/vu.sock' mode='client'/><model type='virtio'/>
    </interface>
    <hostdev mode='subsystem' type='usb'><source><vendor id='0x1234'/><product id='0xbeef'/></source></hostdev>
    <redirdev bus='usb' type='spicevmc'/>
    <filesystem type='mount' accessmode='passthrough'><source dir='/srv'/><target dir='srv'/></filesystem>
    <disk type='block' device='disk'><source dev='/dev/sdb'/><target dev='vdb' bus='virtio'/></disk>
    <disk type='network' device='disk'><source protocol='rbd' name='pool/img'/><target dev='vdc' bus='virtio'/></disk>
"""


def _with(name: str, devices: str = "", cpu: str = "") -> str:
    xml = PLAIN.replace("<name>web</name>", f"<name>{name}</name>").replace("  </devices>", devices + "  </devices>")
    xml = xml.replace("<uuid>3d0c6c1e-9a55-4f0e-8a3a-1f2e3d4c5b6a</uuid>", "")
    return xml.replace("<cpu mode='custom' match='exact'><model fallback='allow'>Westmere</model></cpu>", cpu) \
        if cpu else xml


@pytest.fixture
def uri(tmp_path: Path) -> str:
    numa = ("<cpu mode='custom' match='exact'><model>Westmere</model><numa>"
            "<cell id='0' cpus='0' memory='262144'/><cell id='1' cpus='1' memory='262144'/></numa></cpu>")
    return node_file(tmp_path / "node.xml", PLAIN, _with("gpu", HOSTDEV), _with("messy", MANY_BAD, numa))


def test_plain_domain_imports_to_a_spec_hardware_check_accepts(uri: str, tmp_path: Path) -> None:
    out = tmp_path / "web.toml"
    got = coserver_cli("libvirt", "import", "web", "--connect", uri, "--out", str(out), "--coservers", "cs1,cs2")
    assert got.returncode == 0, got.stderr
    assert "Traceback" not in got.stderr
    spec = load_spec(out)
    assert (spec.name, spec.memory_mib, spec.cpu.sockets, spec.cpu.model) == ("web", 512, 2, "Westmere")
    assert spec.nics[0].mac == "52:54:00:6b:3c:58" and spec.nics[0].bridges["cs1"].value == "br0"
    assert spec.disks[0].paths["cs2"].value == Path("/var/lib/libvirt/images/web.qcow2")
    assert "note:" in got.stderr and "<graphics> dropped" in got.stderr
    # Both CoServers are on this machine by default (the lab): the same image path on both is then
    # refused; on a real site each host checks its own side (--host), as here.
    check = coserver_cli("hardware", "check", str(out), "--no-files", "--host", "cs1")
    assert check.returncode == 0, check.stderr
    again = coserver_cli("libvirt", "import", "web", "--connect", uri, "--out", str(out))
    assert again.returncode == 1 and again.stderr.strip().endswith("exists (--force to overwrite)")


def test_plain_domain_without_disk_paths_in_common_passes_the_default_check(uri: str, tmp_path: Path) -> None:
    """The brief's exact command (both CoServers local): an imported spec whose disks differ per
    host, as the lab's, passes it too."""
    got = coserver_cli("libvirt", "import", "web", "--connect", uri)
    assert got.returncode == 0, got.stderr
    text = got.stdout.replace('path = "/var/lib/libvirt/images/web.qcow2"',
                              '[disks.hosts.cs1]\npath = "/var/lib/a/web.qcow2"\n[disks.hosts.cs2]\n'
                              'path = "/var/lib/b/web.qcow2"')
    out = tmp_path / "web.toml"
    out.write_text(text)
    check = coserver_cli("hardware", "check", str(out), "--no-files")
    assert check.returncode == 0, check.stderr


def test_host_pci_device_is_refused_with_the_reason(uri: str) -> None:
    got = coserver_cli("libvirt", "import", "gpu", "--connect", uri)
    assert got.returncode == 1 and got.stdout == ""
    lines = got.stderr.strip().splitlines()
    assert lines == [l for l in lines if l.startswith("coserver: error: ")]
    assert len(lines) == 1, lines
    assert "<hostdev type='pci'> 0000:01:00.0: refused for COLO: host pass-through" in lines[0]


def test_every_bad_device_is_its_own_line(uri: str) -> None:
    got = coserver_cli("libvirt", "import", "messy", "--connect", uri)
    assert got.returncode == 1 and "Traceback" not in got.stderr
    lines = got.stderr.strip().splitlines()
    wanted = ["<hostdev type='pci'> 0000:01:00.0", "<interface type='vhostuser'>", "<hostdev type='usb'> 0x1234:0xbeef",
              "<redirdev>", "<filesystem> srv", "type='block' (/dev/sdb)", "type='network' (protocol rbd)",
              "2 NUMA nodes"]
    for w in wanted:
        assert sum(w in line for line in lines) == 1, (w, lines)
    assert len(lines) == len(wanted)
    assert all(line.startswith("coserver: error: domain 'messy': ") for line in lines)


def test_unknown_domain_and_unreachable_libvirt_are_one_line(uri: str, tmp_path: Path) -> None:
    got = coserver_cli("libvirt", "import", "nope", "--connect", uri)
    assert got.returncode == 1 and got.stderr.count("\n") == 1 and "domain 'nope'" in got.stderr
    got = coserver_cli("libvirt", "import", "web", "--connect", f"qemu:///system?socket={tmp_path}/none.sock")
    assert got.returncode == 1 and got.stderr.count("\n") == 1 and "cannot connect" in got.stderr


@pytest.mark.parametrize("via_cli", [False, True])
def test_round_trip_keeps_memory_vcpus_mac_and_identity(conn: Any, via_cli: bool, tmp_path: Path) -> None:
    spec = load_spec(EXAMPLE)
    xml = domain_xml_for_spec(spec, "cs1", ServerTag("lab-cs", "journal", "primary", 2), qmp_socket="/q.sock")
    if via_cli:
        uri = node_file(tmp_path / "node.xml", xml)
        got = coserver_cli("libvirt", "import", "journal", "--connect", uri, "--out", str(tmp_path / "j.toml"))
        assert got.returncode == 0, got.stderr
        back = load_spec(tmp_path / "j.toml")
    else:
        dom = conn.defineXMLFlags(xml, libvirt.VIR_DOMAIN_DEFINE_VALIDATE)
        imported = import_domain(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
        assert imported.profile == "dl380-g5"   # named by the domain's SMBIOS product
        (tmp_path / "j.toml").write_text(imported.text)
        back = load_spec(tmp_path / "j.toml")
    assert back.profile.name == spec.profile.name
    assert (back.memory_mib, back.cpu, back.machine) == (spec.memory_mib, spec.cpu, spec.machine)
    assert [n.mac for n in back.nics] == [n.mac for n in spec.nics]
    assert resolve(back, "cs1").smbios == resolve(spec, "cs1").smbios   # every SMBIOS string the guest reads
    assert back.boot.mode == "kernel" and back.boot.append == spec.boot.append
    assert back.disks[0].serial == spec.disks[0].serial


def test_identity_from_sysinfo_and_refused_cpu_modes() -> None:
    xml = PLAIN.replace("<os>", """<sysinfo type='smbios'>
        <bios><entry name='vendor'>HP</entry><entry name='version'>P67</entry><entry name='date'>05/05/2011</entry></bios>
        <system><entry name='manufacturer'>HP</entry><entry name='product'>ProLiant DL380 G7</entry>
          <entry name='serial'>CZ1234567X</entry><entry name='sku'>583914-B21</entry></system>
        <chassis><entry name='asset'>ACME-7</entry></chassis></sysinfo><os>""").replace(
        "</os>", "<smbios mode='sysinfo'/></os>").replace("pc-i440fx-7.2", "pc-q35-7.2")
    got = import_domain(xml)
    doc = tomllib.loads(got.text)
    assert got.profile == "dl380-g7" and doc["serial"] == "CZ1234567X"
    assert doc["smbios"] == {"asset_tag": "ACME-7"}   # P67, its date and the SKU are the profile's own
    with pytest.raises(ImportRefused) as exc:
        import_domain(PLAIN.replace("<cpu mode='custom' match='exact'><model fallback='allow'>Westmere</model></cpu>",
                                    "<cpu mode='host-passthrough'/>"))
    assert exc.value.reasons == [l for l in exc.value.reasons if "refused for COLO: -cpu host" in l]


def test_network_interfaces_use_the_bridge_the_caller_found() -> None:
    xml = PLAIN.replace("<interface type='bridge'>", "<interface type='network'>").replace(
        "<source bridge='br0'/>", "<source network='default'/>")
    with pytest.raises(ImportRefused, match="its bridge is unknown"):
        import_domain(xml)
    assert 'bridge = "virbr0"' in import_domain(xml, networks={"default": "virbr0"}).text


@pytest.mark.parametrize("text", ["plain", 'q"uote', "back\\slash", "tab\tnew\nline", "\x01\x7f", "ünï€ode 😀", ""])
def test_spectext_strings_read_back_unchanged(text: str) -> None:
    doc = {"name": text, "list": [text, "x"], "t": {"k": text}, "arr": [{"a": text, "hosts": {"cs1": {"p": text}}}]}
    assert tomllib.loads(spectext.dumps(doc, ["comment\x00with\ncontrol"])) == doc
