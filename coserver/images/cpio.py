"""A deterministic newc ("070701") cpio writer for initramfs images, stdlib only.

Written in Python rather than with cpio(1) so the archive can hold device nodes (/dev/console)
without root, and so the same inputs give the same bytes (fixed owner, times and inode order).
"""

from __future__ import annotations

import gzip
import stat
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Entry:
    """One archive member; name without a leading slash ("bin/busybox")."""

    name: str
    mode: int
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)

    @staticmethod
    def dir(name: str, perm: int = 0o755) -> Entry:
        return Entry(name, stat.S_IFDIR | perm)

    @staticmethod
    def file(name: str, data: bytes, perm: int = 0o644) -> Entry:
        return Entry(name, stat.S_IFREG | perm, data)

    @staticmethod
    def symlink(name: str, target: str) -> Entry:
        return Entry(name, stat.S_IFLNK | 0o777, target.encode())

    @staticmethod
    def chardev(name: str, major: int, minor: int, perm: int = 0o600) -> Entry:
        return Entry(name, stat.S_IFCHR | perm, rdev=(major, minor))


def _pad4(n: int) -> bytes:
    return b"\0" * (-n % 4)


def newc(entries: list[Entry]) -> bytes:
    """The uncompressed archive: entries in the given order, then the trailer."""
    out = bytearray()
    seen: set[str] = set()
    for ino, e in enumerate([*entries, Entry("TRAILER!!!", 0)], start=1):
        name = e.name.lstrip("/")
        if name in seen:
            raise ValueError(f"cpio member {name} given twice")
        seen.add(name)
        nameb = name.encode() + b"\0"
        nlink = 2 if stat.S_ISDIR(e.mode) else 1
        fields = (ino if e.name != "TRAILER!!!" else 0, e.mode, 0, 0, nlink, 0, len(e.data),
                  0, 0, e.rdev[0], e.rdev[1], len(nameb), 0)
        hdr = b"070701" + b"".join(b"%08X" % f for f in fields)
        out += hdr + nameb
        out += _pad4(len(hdr) + len(nameb))
        out += e.data + _pad4(len(e.data))
    return bytes(out)


def write_gzip(entries: list[Entry], path: Path) -> None:
    """A gzip'ed newc archive (gzip mtime 0, so the bytes depend on the entries only)."""
    with open(path, "wb") as f, gzip.GzipFile(filename="", mode="wb", fileobj=f, mtime=0,
                                              compresslevel=9) as gz:
        gz.write(newc(entries))


def read_newc(data: bytes) -> list[Entry]:
    """Parse an uncompressed newc archive (up to its trailer) back into entries."""
    out: list[Entry] = []
    pos = 0
    while True:
        hdr = data[pos:pos + 110]
        if len(hdr) < 110 or hdr[:6] != b"070701":
            raise ValueError(f"no newc header at offset {pos}")
        f = [int(hdr[6 + 8 * i:14 + 8 * i], 16) for i in range(13)]
        mode, filesize, rmaj, rmin, namesize = f[1], f[6], f[9], f[10], f[11]
        name = data[pos + 110:pos + 110 + namesize - 1].decode()
        pos += 110 + namesize
        pos += -pos % 4
        body = data[pos:pos + filesize]
        pos += filesize
        pos += -pos % 4
        if name == "TRAILER!!!":
            return out
        out.append(Entry(name, mode, body, (rmaj, rmin)))
