"""site check's libvirt line: qemu.conf settings that let libvirt's QEMUs open an FT server's files,
read from real files; the connection asked of libvirt's test driver (no libvirtd needed) and of a
socket nobody serves."""

from __future__ import annotations

from pathlib import Path

import pytest

from coserver.doctor.libvirtcheck import libvirt_line, parse_qemu_conf, qemu_conf_problems

pytest.importorskip("libvirt")

LAB_CONF = '''# the lab's
user = "+0"
group = "+0"
dynamic_ownership = 0
security_driver = "none"
namespaces = []
'''


def test_parse_keeps_settings_and_skips_comments() -> None:
    conf = parse_qemu_conf(LAB_CONF + '#user = "nobody"\n  # group = "x"\nvnc_listen = "0.0.0.0"\n')
    assert conf["user"] == "+0" and conf["group"] == "+0" and conf["security_driver"] == "none"
    assert conf["dynamic_ownership"] == "0" and conf["vnc_listen"] == "0.0.0.0"


def test_root_unconfined_passes_and_debians_default_does_not() -> None:
    assert qemu_conf_problems(parse_qemu_conf(LAB_CONF), confined_by="AppArmor") == []
    assert qemu_conf_problems({"user": "root", "group": "root"}, confined_by=None) == []
    default = qemu_conf_problems({}, confined_by="AppArmor")     # Debian's qemu.conf: all commented out
    assert len(default) == 3
    assert "libvirt-qemu" in default[0] and "AppArmor" in default[2]
    assert qemu_conf_problems({"user": "+0", "group": "+0", "security_driver": "selinux"}, confined_by=None)


def test_line_from_a_real_libvirt_and_file(tmp_path: Path) -> None:
    conf = tmp_path / "qemu.conf"
    conf.write_text(LAB_CONF)
    ok, detail = libvirt_line("test:///default", conf_path=conf, confined_by="AppArmor")
    assert ok and "answers" in detail, detail
    conf.write_text('user = "libvirt-qemu"\n')
    ok, detail = libvirt_line("test:///default", conf_path=conf, confined_by=None)
    assert not ok and detail.startswith(f"{conf}: QEMU runs as user 'libvirt-qemu'") and 'user = "+0"' in detail
    assert "\n" not in detail


def test_no_libvirtd_is_one_line(tmp_path: Path) -> None:
    ok, detail = libvirt_line(f"qemu:///system?socket={tmp_path}/none.sock", conf_path=tmp_path / "qemu.conf")
    assert not ok and detail.startswith("libvirt qemu:///system") and "cannot connect" in detail, detail
    assert "\n" not in detail
