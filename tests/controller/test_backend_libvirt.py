"""The site's `backend` key and what the controller asks libvirtd to run for each role.

The domain itself is started by a real libvirtd in the lab tests (tests/lab/test_libvirt_backend.py);
here: the choice reaches the controller, and each role's domain carries what that role needs and
nothing libvirt already makes (the tap's -netdev) or must not make (the disks: COLO's graph)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from coserver.controller import actions
from coserver.controller.siteconfig import controller_config_for
from coserver.libvirt import metadata
from coserver.libvirt.domainxml import QEMU_NAMESPACE
from coserver.site import load_site
from coserver.site.errors import SiteError

from .test_siteconfig import EXAMPLE_SPEC, _site

QEMU_ARG = f"{{{QEMU_NAMESPACE}}}arg"


def _libvirt_site(tmp_path: Path, line: str = 'backend = "libvirt"') -> Path:
    tmp_path.mkdir(exist_ok=True)
    path = _site(tmp_path)
    path.write_text(path.read_text().replace("\n[witness]", f"\n{line}\n\n[witness]", 1))
    return path


def test_backend_defaults_to_qemu_and_libvirt_reaches_the_controller(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    plain = controller_config_for(load_site(_site(tmp_path / "a")), EXAMPLE_SPEC, "cs1")
    assert plain.backend == "qemu" and plain.colo_node().netdev_id == "hn0"
    cfg = controller_config_for(load_site(_libvirt_site(tmp_path / "b")), EXAMPLE_SPEC, "cs1")
    assert cfg.backend == "libvirt" and cfg.libvirt_uri == "qemu:///system"
    assert cfg.colo_node().netdev_id == "hostnet0"   # libvirt's netdev for <interface> net0


@pytest.mark.parametrize("line, said", [
    ('backend = "xen"', "backend: must be one of qemu, libvirt"),
    ('libvirt_uri = "qemu+ssh://other/system"', "libvirt_uri"),
])
def test_bad_backend_keys_are_one_line_errors(tmp_path: Path, line: str, said: str) -> None:
    with pytest.raises(SiteError) as err:
        load_site(_libvirt_site(tmp_path, line))
    assert said in str(err.value) and "\n" not in str(err.value)


def _domain(tmp_path: Path, role: str) -> tuple[ET.Element, list[str]]:
    cfg = controller_config_for(load_site(_libvirt_site(tmp_path)), EXAMPLE_SPEC, "cs2")
    text = actions.domain_xml_for(cfg, role, 7, "ab" * 16, Path(cfg.qemu_workdir) / "journal.qmp")
    root = ET.fromstring(text)
    return root, [a.attrib["value"] for a in root.iter(QEMU_ARG)]


def test_secondary_domain_carries_colo_on_its_command_line_and_the_nic_natively(tmp_path: Path) -> None:
    root, args = _domain(tmp_path, "secondary")
    assert root.findtext("name") == "journal"
    tag = metadata.find(root)
    assert tag is not None and (tag.role, tag.epoch, tag.token, tag.name) == ("secondary", 7, "ab" * 16, "journal")
    # the NIC on the site's bridge, made by libvirt; the filters on libvirt's netdev, no -netdev of ours
    iface = root.find("devices/interface")
    assert iface is not None and iface.attrib["type"] == "bridge"
    assert iface.find("source").attrib["bridge"] and iface.find("mac").attrib["address"] == "52:54:00:c0:5e:01"
    assert "-netdev" not in args
    filters = [a for a in args if a.startswith(("filter-redirector", "filter-rewriter"))]
    assert len(filters) == 3 and all("netdev=hostnet0" in f for f in filters)
    # COLO's disk graph, not libvirt's <disk>; waits for the primary's migration
    assert root.find("devices/disk") is None
    assert any('"driver":"replication"' in a and '"mode":"secondary"' in a for a in args)
    assert args[-2:] == ["-incoming", "defer"]
    # the controller's own QMP monitor beside libvirt's
    assert any(a.startswith("socket,id=coserver-qmp,path=") and "journal.qmp" in a for a in args)


def test_simplex_domain_has_the_one_child_quorum_and_no_incoming(tmp_path: Path) -> None:
    root, args = _domain(tmp_path, "simplex")
    assert metadata.find(root).role == "simplex"
    assert any('"driver":"quorum"' in a and '"children":["disk0"]' in a for a in args)
    assert "-incoming" not in args and not any(a.startswith("filter-") for a in args)
