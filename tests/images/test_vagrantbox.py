"""The Vagrant box builder's logic (coserver.images.vagrantbox): the package lists it reads, its
key, the box file's format, the .debs it reuses, its cache checks and its command's errors. The
real build and boot are in test_vagrantbox_boot.py."""

from __future__ import annotations

import dataclasses
import json
import os
import tarfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from coserver.cli.main import main
from coserver.images import vagrantbox as vb
from coserver.images.debpkg import DebPackage
from coserver.images.errors import GuestBuildError, ImageError

REPO = Path(__file__).resolve().parents[2]


def inputs(**kw) -> vb.BoxInputs:
    base = dict(packages=("openssh-server", "sudo"), kernel=DebPackage("linux-image-6.1.0-1-amd64", "6.1.1-1"),
                vagrant_pub="ssh-rsa AAAA vagrant insecure public key", mmdebstrap_version="1.3.5-7",
                syslinux_version="3:6.04")
    base.update(kw)
    return vb.BoxInputs(**base)


# ---------------------------------------------------------------- package lists


def test_apt_list_comments_blanks_and_several_names_a_line():
    text = "# a comment\nqemu-utils\n\n  gcc make # the build\nlibglib2.0-dev\t python3.11 g++ #x y\n"
    assert vb.parse_apt_list(text, "t.txt") == ["qemu-utils", "gcc", "make", "libglib2.0-dev", "python3.11",
                                                "g++"]


@pytest.mark.parametrize("word", ["Qemu", "qemu_utils", "-x", "a", "pkg=1.0", "pkg/bookworm"])
def test_apt_list_refuses_what_is_not_a_package_name(word):
    with pytest.raises(ImageError) as ei:
        vb.parse_apt_list(f"gcc\n# fine\nmake {word}\n", "deps/x.txt")
    assert str(ei.value) == f"deps/x.txt line 3: {word!r} is not a Debian package name"


def test_the_box_has_every_package_make_setup_checks():
    pkgs = vb.box_packages()
    assert list(pkgs) == sorted(set(pkgs))
    for name in vb.APT_LISTS:
        listed = vb.parse_apt_list((REPO / "deps" / name).read_text(), name)
        assert listed and set(listed) <= set(pkgs), name
    for must in ("qemu-system-x86", "etcd-server", "libvirt-clients", "libvirt-daemon-system", "openssh-server",
                 "linux-image-amd64", "systemd-sysv", "rsync", "sudo", "python3-venv"):
        assert must in pkgs
    # test-only and host-side lists are not in the box
    assert "chromium" not in pkgs and "vagrant" not in pkgs


def test_package_lists_are_read_from_the_deps_dir(tmp_path):
    (tmp_path / "apt-setup.txt").write_text("hello # greeting\n")
    (tmp_path / "apt-libvirt.txt").write_text("")
    assert "hello" in vb.box_packages(tmp_path) and "sudo" in vb.box_packages(tmp_path)
    (tmp_path / "apt-libvirt.txt").unlink()
    with pytest.raises(ImageError) as ei:
        vb.box_packages(tmp_path)
    assert "apt-libvirt.txt" in str(ei.value) and "\n" not in str(ei.value)


# ---------------------------------------------------------------- key


def test_key_follows_every_input(tmp_path):
    k = vb.box_key(inputs())
    assert k == vb.box_key(inputs()) and len(k) == 20
    changed = [inputs(packages=("openssh-server", "sudo", "vim")),
               inputs(kernel=DebPackage("linux-image-6.1.0-1-amd64", "6.1.1-2")),
               inputs(vagrant_pub="ssh-ed25519 AAAA other"),
               inputs(mmdebstrap_version="1.4.0-1"),
               inputs(syslinux_version="3:6.05"),
               inputs(build_version="2"),
               inputs(params=dict(inputs().params, cmdline=[*vb.CMDLINE, "ipv6.disable=1"])),
               inputs(params=dict(inputs().params, disk_size=32 << 30)),
               inputs(params=dict(inputs().params, metadata=dict(vb.METADATA, virtual_size=32)))]
    keys = {vb.box_key(i) for i in changed}
    assert k not in keys and len(keys) == len(changed)


def test_key_follows_the_box_files_and_their_modes(tmp_path):
    src = tmp_path / "vagrant"
    (src / "root/etc").mkdir(parents=True)
    (src / "root/etc/f").write_text("a\n")
    a = vb.box_key(inputs(src_dir=src))
    (src / "root/etc/f").chmod(0o755)
    b = vb.box_key(inputs(src_dir=src))
    (src / "root/etc/f").write_text("b\n")
    c = vb.box_key(inputs(src_dir=src))
    assert len({a, b, c, vb.box_key(inputs())}) == 4


def test_the_box_files_are_in_the_key():
    sources = inputs().material()["sources"]
    assert {"root/etc/sudoers.d/vagrant", "root/etc/systemd/network/10-eth0.network",
            "root/etc/systemd/system/coserver-ssh-keygen.service",
            "root/etc/ssh/sshd_config.d/vagrant.conf"} <= set(sources)


# ---------------------------------------------------------------- the box's settings and file


def test_metadata_and_kernel_command_line():
    assert vb.METADATA == {"provider": "libvirt", "format": "qcow2", "virtual_size": 16}
    assert vb.LAYOUT.size == 16 << 30
    for word in ("rw", "console=ttyS0,115200", "net.ifnames=0", "biosdevname=0"):
        assert word in vb.CMDLINE
    assert "systemd-networkd.service" in vb.ENABLED_UNITS
    for unit in ("apt-daily.timer", "apt-daily-upgrade.timer", "e2scrub_all.timer", "fstrim.timer", "man-db.timer"):
        assert unit in vb.MASKED_UNITS


def test_box_file_is_a_tar_of_metadata_vagrantfile_and_image(tmp_path):
    image = tmp_path / "box.img"
    image.write_bytes(b"QFI\xfb" + bytes(4092))
    box = tmp_path / "x.box"
    vb.write_box(box, image)
    with tarfile.open(box) as tar:
        assert tar.getnames() == ["metadata.json", "Vagrantfile", "box.img"]
        assert json.load(tar.extractfile("metadata.json")) == vb.METADATA
        vfile = tar.extractfile("Vagrantfile").read().decode()
        assert tar.extractfile("box.img").read() == image.read_bytes()
        assert all(m.uid == 0 and m.mode == 0o644 for m in tar.getmembers())
    assert vfile and all(ln.startswith("#") for ln in vfile.splitlines())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["box.img", "x.box"]


# ---------------------------------------------------------------- .debs reused from the host


def test_deb_file_names_escape_the_epoch():
    assert vb.deb_filename("openssh-server", "1:9.2p1-2+deb12u3", "amd64") == \
        "openssh-server_1%3a9.2p1-2+deb12u3_amd64.deb"


def test_seeding_links_only_regular_debs(tmp_path):
    src, dst = tmp_path / "cache", tmp_path / "root/var/cache/apt/archives"
    (src / "partial").mkdir(parents=True)
    (src / "a_1_amd64.deb").write_bytes(b"a")
    (src / "b_2_all.deb").write_bytes(b"bb")
    (src / "lock").write_text("")
    (src / "partial" / "c_1_amd64.deb").write_bytes(b"c")
    os.symlink(src / "a_1_amd64.deb", src / "link_1_amd64.deb")
    assert vb.seed_debs(src, dst) == ["a_1_amd64.deb", "b_2_all.deb"]
    assert sorted(p.name for p in dst.iterdir()) == ["a_1_amd64.deb", "b_2_all.deb"]
    assert os.stat(dst / "a_1_amd64.deb").st_ino == os.stat(src / "a_1_amd64.deb").st_ino
    assert vb.seed_debs(tmp_path / "none", tmp_path / "d2") == []


def test_deb_stats_tell_reused_from_downloaded(tmp_path):
    listing = tmp_path / "archives.txt"
    listing.write_text("100\ta_1_amd64.deb\n20\tb_1%3a2_all.deb\n7\tc_3_amd64.deb\n5\tstale_0_amd64.deb\n")
    installed = [("a", "1", "amd64"), ("b", "1:2", "all"), ("c", "3", "amd64")]
    stats = vb.deb_stats(listing, ["a_1_amd64.deb", "b_1%3a2_all.deb", "stale_0_amd64.deb", "x_1_all.deb"],
                         installed)
    assert stats == {"seeded_files": 4, "reused_files": 2, "reused_bytes": 120, "downloaded_files": 1,
                     "downloaded_bytes": 7}


# ---------------------------------------------------------------- Vagrant's key, the cache


def test_vagrant_key_of_the_newest_vagrant(tmp_path):
    for v in ("2.3.4", "2.10.0", "2.9.9"):
        keys = tmp_path / f"vagrant-{v}" / "keys"
        keys.mkdir(parents=True)
        (keys / "vagrant.pub").write_text(v)
    (tmp_path / "vagrant-3.0.0" / "keys").mkdir(parents=True)  # no key in it
    assert vb.vagrant_keys_dir(f"{tmp_path}/vagrant-*/keys") == tmp_path / "vagrant-2.10.0" / "keys"


def test_no_vagrant_says_what_to_install(tmp_path):
    with pytest.raises(GuestBuildError) as ei:
        vb.vagrant_keys_dir(f"{tmp_path}/vagrant-*/keys")
    assert str(ei.value).endswith("apt-get install vagrant") and "\n" not in str(ei.value)


def fake_build(d: Path, key: str = "k" * 20) -> Path:
    d.mkdir(parents=True)
    (d / vb.BOX_NAME).write_bytes(b"box")
    (d / vb.IMAGE_NAME).write_bytes(b"image!")
    m = {"key": key, "built_at": "2025-01-01T00:00:00Z", "kernel": {"release": "6.1.0-1-amd64"},
         "packages": {"sudo": "1", "rsync": "2"}, "metadata": vb.METADATA,
         "box": {"name": vb.BOX_NAME, "size": 3, "sha256": "0" * 64},
         "image": {"name": vb.IMAGE_NAME, "size": 6}}
    (d / "manifest.json").write_text(json.dumps(m))
    return d


def test_load_checks_the_build(tmp_path):
    d = fake_build(tmp_path / ("k" * 20))
    box = vb.load(d)
    assert box.facts() | {"manifest": None} == {
        "key": "k" * 20, "box": str(d / vb.BOX_NAME), "image": str(d / vb.IMAGE_NAME), "size_bytes": 3,
        "virtual_size_gib": 16, "image_bytes": 6, "packages": 2, "kernel_release": "6.1.0-1-amd64",
        "sha256": "0" * 64, "built_at": "2025-01-01T00:00:00Z", "manifest": None}
    (d / vb.IMAGE_NAME).write_bytes(b"short")
    with pytest.raises(GuestBuildError, match="box.img missing or of the wrong size"):
        vb.load(d)
    with pytest.raises(GuestBuildError, match="not the directory's name"):
        vb.load(fake_build(tmp_path / "other"))
    (d / "manifest.json").write_text("{")
    with pytest.raises(GuestBuildError, match="unreadable manifest"):
        vb.load(d)


def test_cli_prints_the_box_as_json(monkeypatch, tmp_path):
    box = vb.load(fake_build(tmp_path / ("k" * 20)))
    seen = {}

    def build(*, force, progress):
        seen["force"] = force
        return box
    monkeypatch.setattr(vb, "build_vagrant_box", build)
    res = CliRunner().invoke(main, ["image", "vagrant-box", "--json", "--force"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert {k: out[k] for k in ("key", "box", "size_bytes", "virtual_size_gib", "packages")} == {
        "key": "k" * 20, "box": str(box.box), "size_bytes": 3, "virtual_size_gib": 16, "packages": 2}
    assert seen == {"force": True}
    res = CliRunner().invoke(main, ["image", "vagrant-box"])
    assert res.exit_code == 0 and f"box               {box.box}" in res.stdout


@pytest.mark.parametrize("exc", [GuestBuildError("Vagrant box: mmdebstrap not found (apt-get install mmdebstrap)"),
                                 ImageError("deps/apt-setup.txt line 3: 'X' is not a Debian package name")])
def test_cli_errors_are_one_line(monkeypatch, exc):
    def build(*, force, progress):
        raise exc
    monkeypatch.setattr(vb, "build_vagrant_box", build)
    res = CliRunner().invoke(main, ["image", "vagrant-box"])
    assert res.exit_code == 1 and res.stderr == f"coserver: error: {exc}\n"
    assert "Traceback" not in res.output


def test_inputs_are_a_frozen_dataclass():
    with pytest.raises(dataclasses.FrozenInstanceError):
        inputs().packages = ()  # type: ignore[misc]
