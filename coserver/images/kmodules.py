"""Kernel modules for an initramfs without depmod/kmod.

Debian's linux-image .deb ships no modules.dep, and the guest has no modprobe worth trusting,
so we read each module's `.modinfo` ELF section here (stdlib only), follow `depends=` (hard
dependencies) and the `softdep=pre:` entries we know providers for, and emit a load order in
which every module comes after everything it needs. Compressed modules (.ko.xz, .ko.gz) are
decompressed on the host.
"""

from __future__ import annotations

import gzip
import lzma
import struct
from dataclasses import dataclass
from pathlib import Path

from coserver.images.errors import GuestBuildError

_SUFFIXES = (".ko", ".ko.xz", ".ko.gz", ".ko.zst")


@dataclass(frozen=True)
class KernelModule:
    """One module file and what its .modinfo says."""

    name: str
    path: Path
    depends: tuple[str, ...]
    softdeps_pre: tuple[str, ...]
    aliases: tuple[str, ...]
    vermagic: str


def module_name(path: Path) -> str:
    """virtio_pci from .../virtio_pci.ko(.xz); dashes become underscores as the kernel does."""
    n = path.name
    for suf in _SUFFIXES:
        if n.endswith(suf):
            n = n[: -len(suf)]
            break
    return n.replace("-", "_")


def read_module(path: Path) -> bytes:
    """The plain ELF bytes of a module, decompressing .xz/.gz; .zst is refused (no stdlib codec)."""
    data = path.read_bytes()
    name = path.name
    try:
        if name.endswith(".xz"):
            return lzma.decompress(data)
        if name.endswith(".gz"):
            return gzip.decompress(data)
    except (lzma.LZMAError, OSError, EOFError) as exc:
        raise GuestBuildError(f"module {path}: cannot decompress: {exc}") from exc
    if name.endswith(".zst"):
        raise GuestBuildError(f"module {path}: zstd-compressed modules are not supported")
    return data


def modinfo_section(elf: bytes, where: Path | str = "module") -> dict[str, list[str]]:
    """key -> values from an ELF64 little-endian object's .modinfo section (NUL-separated k=v)."""
    if elf[:4] != b"\x7fELF":
        raise GuestBuildError(f"module {where}: not an ELF file")
    if elf[4] != 2 or elf[5] != 1:
        raise GuestBuildError(f"module {where}: not a 64-bit little-endian ELF file")
    try:
        e_shoff, = struct.unpack_from("<Q", elf, 0x28)
        e_shentsize, e_shnum, e_shstrndx = struct.unpack_from("<HHH", elf, 0x3A)

        def section(i: int) -> tuple[int, int, int]:
            off = e_shoff + i * e_shentsize
            sh_name, = struct.unpack_from("<I", elf, off)
            sh_offset, sh_size = struct.unpack_from("<QQ", elf, off + 0x18)
            return sh_name, sh_offset, sh_size

        _, str_off, str_size = section(e_shstrndx)
        names = elf[str_off:str_off + str_size]
        for i in range(e_shnum):
            sh_name, off, size = section(i)
            end = names.index(b"\0", sh_name)
            if names[sh_name:end] == b".modinfo":
                raw = elf[off:off + size]
                break
        else:
            raise GuestBuildError(f"module {where}: no .modinfo section")
    except (struct.error, ValueError, IndexError) as exc:
        raise GuestBuildError(f"module {where}: malformed ELF ({exc})") from exc
    out: dict[str, list[str]] = {}
    for entry in raw.split(b"\0"):
        if b"=" in entry:
            k, _, v = entry.decode("utf-8", "replace").partition("=")
            out.setdefault(k, []).append(v)
    return out


def parse_module(path: Path) -> KernelModule:
    """Read a module file's name, dependencies, pre-softdeps, aliases and vermagic."""
    info = modinfo_section(read_module(path), path)
    deps = tuple(d.replace("-", "_") for v in info.get("depends", []) for d in v.split(",") if d)
    pre: list[str] = []
    for v in info.get("softdep", []):
        # "pre: a b post: c"
        mode = None
        for tok in v.split():
            if tok.endswith(":"):
                mode = tok[:-1]
            elif mode == "pre":
                pre.append(tok)
    name = info.get("name", [module_name(path)])[0].replace("-", "_")
    return KernelModule(name=name, path=path, depends=deps, softdeps_pre=tuple(pre),
                        aliases=tuple(info.get("alias", [])), vermagic=info.get("vermagic", [""])[0])


def index_modules(moddir: Path) -> dict[str, Path]:
    """Module name -> file, for every module under lib/modules/<release>/."""
    out: dict[str, Path] = {}
    for p in sorted(moddir.rglob("*.ko*")):
        if p.name.endswith(_SUFFIXES):
            out.setdefault(module_name(p), p)
    return out


def builtin_modules(moddir: Path) -> set[str]:
    """Names the kernel has built in (modules.builtin), which need no loading."""
    f = moddir / "modules.builtin"
    if not f.is_file():
        return set()
    return {module_name(Path(line.strip())) for line in f.read_text().splitlines() if line.strip()}


def load_order(roots: list[str], moddir: Path,
               softdep_providers: dict[str, str] | None = None) -> list[KernelModule]:
    """Every module `roots` need (depends=, and known softdep pre providers), dependencies first.

    Built-in modules are skipped. Ties keep the order of `roots` so the result is stable.
    softdep_providers maps a softdep/alias name (e.g. "crypto-crc32c") to the module that
    provides it; the provider must really declare that alias, and unknown softdeps are ignored
    (the guest's insmod cannot resolve them either).
    """
    files = index_modules(moddir)
    builtin = builtin_modules(moddir)
    providers = softdep_providers or {}
    parsed: dict[str, KernelModule] = {}

    def get(name: str, needed_by: str) -> KernelModule | None:
        if name in builtin:
            return None
        if name not in parsed:
            if name not in files:
                raise GuestBuildError(f"module {name} (needed by {needed_by}): not in {moddir} "
                                      f"and not built in")
            parsed[name] = parse_module(files[name])
        return parsed[name]

    order: list[KernelModule] = []
    state: dict[str, str] = {}  # name -> "visiting" | "done"

    def visit(name: str, needed_by: str, path: tuple[str, ...]) -> None:
        if state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            raise GuestBuildError(f"module {name}: dependency cycle {' -> '.join(path + (name,))}")
        mod = get(name, needed_by)
        if mod is None:
            state[name] = "done"
            return
        state[name] = "visiting"
        pre: list[str] = []
        for sd in mod.softdeps_pre:
            prov = providers.get(sd)
            if prov is None:
                continue
            pm = get(prov, f"{name} softdep {sd}")
            if pm is not None and sd not in pm.aliases and sd != pm.name:
                raise GuestBuildError(f"module {prov}: does not provide {sd} (needed by {name})")
            pre.append(prov)
        for dep in (*pre, *mod.depends):
            visit(dep, name, path + (name,))
        state[name] = "done"
        order.append(mod)

    for r in roots:
        visit(r.replace("-", "_"), "the lab guest", ())
    return order
