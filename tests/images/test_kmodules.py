"""Module dependency order without depmod: synthetic modules, then the real initramfs."""

from __future__ import annotations

import gzip
import lzma
import shutil
import subprocess
from pathlib import Path

import pytest

from coserver.images import cpio, kmodules
from coserver.images.errors import GuestBuildError
from coserver.images.labguest import ROOT_MODULES, LabGuest


def fake_module(moddir: Path, name: str, depends: str = "", softdep: str | None = None,
                aliases: tuple[str, ...] = (), compress: str | None = None) -> Path:
    """A real ELF object with a .modinfo section, as the kernel's modpost writes it."""
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler")
    info = [f"name={name}", f"depends={depends}", "vermagic=6.1.0-test SMP mod_unload"]
    if softdep:
        info.append(f"softdep={softdep}")
    info += [f"alias={a}" for a in aliases]
    body = "".join(s + "\\0" for s in info)
    src = moddir / f"{name}.c"
    src.write_text(f'__attribute__((section(".modinfo"), used)) '
                   f'static const char modinfo[] = "{body}";\n'
                   f'int {name}_code(void) {{ return 1; }}\n')
    obj = moddir / "kernel" / f"{name}.ko"
    obj.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([cc, "-c", "-o", str(obj), str(src)], check=True)
    src.unlink()
    if compress == "xz":
        out = obj.with_name(obj.name + ".xz")
        out.write_bytes(lzma.compress(obj.read_bytes(), format=lzma.FORMAT_XZ))
        obj.unlink()
        return out
    if compress == "gz":
        out = obj.with_name(obj.name + ".gz")
        out.write_bytes(gzip.compress(obj.read_bytes()))
        obj.unlink()
        return out
    return obj


@pytest.fixture
def moddir(tmp_path: Path) -> Path:
    d = tmp_path / "lib" / "modules" / "6.1.0-test"
    d.mkdir(parents=True)
    return d


def names(mods) -> list[str]:
    return [m.name for m in mods]


def test_modinfo_parsed_from_elf(moddir: Path):
    p = fake_module(moddir, "ext4", "jbd2,mbcache", softdep="pre: crypto-crc32c post: foo",
                    aliases=("fs-ext4", "ext3"))
    m = kmodules.parse_module(p)
    assert m.name == "ext4" and m.depends == ("jbd2", "mbcache")
    assert m.softdeps_pre == ("crypto-crc32c",) and m.aliases == ("fs-ext4", "ext3")
    assert m.vermagic.startswith("6.1.0-test ")


def test_order_puts_dependencies_first_and_keeps_root_order(moddir: Path):
    fake_module(moddir, "ring")
    fake_module(moddir, "virtio", "ring")
    fake_module(moddir, "pci_modern")
    fake_module(moddir, "virtio_pci", "ring,pci_modern,virtio")
    fake_module(moddir, "failover")
    fake_module(moddir, "net_failover", "failover")
    fake_module(moddir, "virtio_net", "ring,virtio,net_failover")
    fake_module(moddir, "virtio_blk", "virtio,ring")
    order = names(kmodules.load_order(["virtio_pci", "virtio_blk", "virtio_net"], moddir))
    assert order == ["ring", "pci_modern", "virtio", "virtio_pci", "virtio_blk", "failover",
                     "net_failover", "virtio_net"]


def test_compressed_modules_are_read(moddir: Path):
    fake_module(moddir, "a", compress="xz")
    fake_module(moddir, "b", "a", compress="gz")
    mods = kmodules.load_order(["b"], moddir)
    assert names(mods) == ["a", "b"]
    assert kmodules.read_module(mods[0].path)[:4] == b"\x7fELF"


def test_builtin_modules_are_skipped(moddir: Path):
    fake_module(moddir, "crc16")
    fake_module(moddir, "ext4", "jbd2,crc16")
    (moddir / "modules.builtin").write_text("kernel/fs/jbd2/jbd2.ko\n")
    assert names(kmodules.load_order(["ext4"], moddir)) == ["crc16", "ext4"]


def test_softdep_provider_loaded_before_and_checked(moddir: Path):
    fake_module(moddir, "crc32c_generic", aliases=("crypto-crc32c", "crc32c"))
    fake_module(moddir, "ext4", "", softdep="pre: crypto-crc32c")
    order = kmodules.load_order(["ext4"], moddir, {"crypto-crc32c": "crc32c_generic"})
    assert names(order) == ["crc32c_generic", "ext4"]
    # without a provider the softdep is ignored (the guest could not resolve it either)
    assert names(kmodules.load_order(["ext4"], moddir)) == ["ext4"]
    fake_module(moddir, "impostor")
    with pytest.raises(GuestBuildError, match="impostor: does not provide crypto-crc32c"):
        kmodules.load_order(["ext4"], moddir, {"crypto-crc32c": "impostor"})


def test_missing_and_cyclic_dependencies_refused(moddir: Path):
    fake_module(moddir, "a", "b")
    with pytest.raises(GuestBuildError) as ei:
        kmodules.load_order(["a"], moddir)
    assert str(ei.value).startswith("module b (needed by a): not in ")
    fake_module(moddir, "b", "c")
    fake_module(moddir, "c", "a")
    with pytest.raises(GuestBuildError, match=r"dependency cycle a -> b -> c -> a"):
        kmodules.load_order(["a"], moddir)


def test_not_an_elf_refused(tmp_path: Path):
    p = tmp_path / "x.ko"
    p.write_bytes(b"not an elf")
    with pytest.raises(GuestBuildError, match="not an ELF file"):
        kmodules.parse_module(p)


def test_real_initramfs_loads_modules_in_dependency_order(lab_guest: LabGuest):
    """Read the built initrd back: every module's depends= come earlier in /etc/cs/modules."""
    entries = {e.name: e for e in cpio.read_newc(gzip.decompress(lab_guest.initrd.read_bytes()))}
    order = entries["etc/cs/modules"].data.decode().split()
    assert order == list(lab_guest.modules) and order
    for root in ROOT_MODULES:
        assert root in order or root in lab_guest.manifest["modules_builtin"]
    seen: set[str] = set()
    for name in order:
        elf = entries[f"lib/modules/{name}.ko"].data
        info = kmodules.modinfo_section(elf, name)
        # the kernel treats - and _ in module names alike (crc-t10dif is crc_t10dif.ko)
        deps = [d.replace("-", "_") for v in info.get("depends", []) for d in v.split(",") if d]
        assert set(deps) <= seen, f"{name} loaded before its dependencies {set(deps) - seen}"
        assert info["vermagic"][0].startswith(lab_guest.kernel_release + " ")
        seen.add(name)
    # ext4/jbd2 need crc32c at mount time (softdep) and nothing would load it on demand
    assert "crc32c_generic" in order and order.index("crc32c_generic") < order.index("jbd2")
    assert entries["init"].mode & 0o111 and entries["bin/journal"].mode & 0o111
    assert entries["dev/console"].rdev == (5, 1)
    assert entries["bin/sh"].data == b"busybox"
