"""Thin, typed wrappers over qemu-img (argv lists, never a shell).

The binary is always coserver.paths.qemu_install().img. Every refusal or qemu-img failure is
an ImageError whose one-line message names the image and the reason, e.g.
"image /x/a.qcow2: backing file /x/base.qcow2 does not exist".

Checks made here before qemu-img runs, because qemu-img itself accepts or silently "fixes" them:
- sizes: zero, negative, fractional, garbage and non-multiples of 512 bytes are refused;
- overlays: the backing file must exist and the overlay must have its backing file's virtual
  size (COLO's active/hidden overlays and the secondary's disk must all agree);
- an existing target is never overwritten unless asked.
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coserver import log
from coserver.images.errors import ImageError
from coserver.paths import qemu_install
from coserver.sys.run import run

_log = log.get("images.qemu_img")

FORMATS = ("qcow2", "raw")
SECTOR = 512
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}
_SIZE_RE = re.compile(r"^\s*(\d+)\s*([KMGTP]?)(?:I?B)?\s*$", re.IGNORECASE)
DEFAULT_TIMEOUT = 300.0


def parse_size(size: int | str, what: str = "size") -> int:
    """Bytes from an int or a string like "1G", "512M", "64KiB", "1048576" (binary units).

    Refuses bools, zero, negatives, fractions, garbage and sizes not a multiple of 512 bytes.
    """
    if isinstance(size, bool) or not isinstance(size, (int, str)):
        raise ImageError(f"{what} {size!r}: not a size (use bytes or e.g. 512M, 1G)")
    if isinstance(size, int):
        n = size
    else:
        m = _SIZE_RE.match(size)
        if not m:
            raise ImageError(f"{what} {size!r}: not a size (use bytes or e.g. 512M, 1G)")
        n = int(m.group(1)) * _UNITS[m.group(2).upper()]
    if n <= 0:
        raise ImageError(f"{what} {size!r}: must be more than 0 bytes")
    if n % SECTOR:
        raise ImageError(f"{what} {size!r}: {n} bytes is not a multiple of {SECTOR}")
    return n


@dataclass(frozen=True)
class ImageInfo:
    """What `qemu-img info --output=json` says about one image (and, optionally, its chain)."""

    path: Path
    format: str
    virtual_size: int
    actual_size: int | None
    backing_file: Path | None
    backing_format: str | None
    dirty: bool
    #: the image this one is backed by, when info(..., backing_chain=True)
    backing: ImageInfo | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def chain(self) -> list[ImageInfo]:
        """This image, then its backing file, then that one's backing file, ..."""
        out: list[ImageInfo] = []
        node: ImageInfo | None = self
        while node is not None:
            out.append(node)
            node = node.backing
        return out


@dataclass(frozen=True)
class ColoOverlays:
    """The secondary's empty active and hidden qcow2 overlays for one disk."""

    disk: Path
    active: Path
    hidden: Path
    size: int


def _first_error_line(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    for ln in lines:
        if ln.startswith("qemu-img:"):
            return ln[len("qemu-img:"):].strip()
    return lines[-1] if lines else "no error message"


def _run(argv: list[str], image: Path, timeout: float = DEFAULT_TIMEOUT) -> str:
    cmd = [str(qemu_install().img), *argv]
    _log.debug("qemuimg.run", argv=cmd)
    return run(cmd, f"image {image}", timeout=timeout, error=ImageError, program=f"qemu-img {argv[0]}",
               reason=lambda res: _first_error_line(res.stderr)).stdout


def _check_fmt(fmt: str | None, image: Path) -> None:
    if fmt is not None and fmt not in FORMATS:
        raise ImageError(f"image {image}: format {fmt!r} not supported (one of {', '.join(FORMATS)})")


def _check_target(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise ImageError(f"image {path}: already exists (refusing to overwrite)")
    if not path.parent.is_dir():
        raise ImageError(f"image {path}: directory {path.parent} does not exist")


def _check_source(path: Path) -> None:
    if not path.exists():
        raise ImageError(f"image {path}: does not exist")
    if not path.is_file():
        raise ImageError(f"image {path}: not a regular file")


def _info_from_json(d: dict[str, Any], backing: ImageInfo | None = None) -> ImageInfo:
    bf = d.get("full-backing-filename") or d.get("backing-filename")
    return ImageInfo(
        path=Path(d["filename"]),
        format=d["format"],
        virtual_size=int(d["virtual-size"]),
        actual_size=d.get("actual-size"),
        backing_file=Path(bf) if bf else None,
        backing_format=d.get("backing-filename-format"),
        dirty=bool(d.get("dirty-flag", False)),
        backing=backing,
        raw=d,
    )


def info(path: str | Path, *, backing_chain: bool = False, force_share: bool = False) -> ImageInfo:
    """Parsed `qemu-img info --output=json` (with --backing-chain: .backing holds the chain).

    force_share (-U) reads an image a running QEMU holds locked; its answer may be stale.
    """
    p = Path(path)
    _check_source(p)
    argv = ["info", "--output=json"]
    if backing_chain:
        argv.append("--backing-chain")
    if force_share:
        argv.append("-U")
    out = _run([*argv, str(p)], p)
    try:
        data = json.loads(out)
    except ValueError as exc:
        raise ImageError(f"image {p}: qemu-img info gave unreadable JSON ({exc})") from exc
    try:
        if not backing_chain:
            return _info_from_json(data)
        node: ImageInfo | None = None
        for d in reversed(data):  # the list starts at the top image
            node = _info_from_json(d, node)
        if node is None:
            raise ImageError(f"image {p}: qemu-img info returned an empty backing chain")
        return node
    except (KeyError, TypeError, ValueError) as exc:
        raise ImageError(f"image {p}: qemu-img info lacks {exc}") from exc


def create(path: str | Path, size: int | str | None = None, fmt: str = "qcow2", *,
           backing: str | Path | None = None, backing_fmt: str | None = None,
           overwrite: bool = False) -> ImageInfo:
    """Create an image; with `backing`, a qcow2 overlay of the same virtual size.

    An overlay's size may be omitted (it is the backing file's); given, it must equal it.
    The backing file is recorded by absolute path, and its format is detected when not given.
    """
    p = Path(path)
    _check_fmt(fmt, p)
    _check_fmt(backing_fmt, p)
    _check_target(p, overwrite)
    argv = ["create", "-q", "-f", fmt]
    want = parse_size(size, f"image {p}: size") if size is not None else None
    if backing is None:
        if want is None:
            raise ImageError(f"image {p}: a size is needed for an image without a backing file")
        if backing_fmt is not None:
            raise ImageError(f"image {p}: backing format given without a backing file")
    else:
        b = Path(backing).absolute()
        if fmt != "qcow2":
            raise ImageError(f"image {p}: only qcow2 can have a backing file, not {fmt}")
        if not b.exists():
            raise ImageError(f"image {p}: backing file {b} does not exist")
        if b == p.absolute():
            raise ImageError(f"image {p}: cannot be its own backing file")
        binfo = info(b)
        if backing_fmt is not None and backing_fmt != binfo.format:
            raise ImageError(f"image {p}: backing file {b} is {binfo.format}, not {backing_fmt}")
        if want is not None and want != binfo.virtual_size:
            raise ImageError(f"image {p}: size {want} differs from backing file {b} "
                             f"({binfo.virtual_size} bytes)")
        want = binfo.virtual_size
        argv += ["-b", str(b), "-F", binfo.format]
    if overwrite and p.exists():
        p.unlink()
    _run([*argv, str(p), str(want)], p)
    made = info(p)
    if made.virtual_size != want:
        raise ImageError(f"image {p}: created with {made.virtual_size} bytes, wanted {want}")
    _log.info("qemuimg.created", path=str(p), fmt=fmt, size=want,
              backing=str(made.backing_file) if made.backing_file else None)
    return made


def convert(src: str | Path, dst: str | Path, fmt: str = "qcow2", *, src_fmt: str | None = None,
            overwrite: bool = False, compress: bool = False, timeout: float = DEFAULT_TIMEOUT) -> ImageInfo:
    """Copy src into a new standalone image dst (backing chain flattened, zeros left sparse).

    compress: qcow2 clusters compressed (-c; read as any other, rewritten uncompressed).
    """
    s, d = Path(src), Path(dst)
    _check_source(s)
    _check_fmt(fmt, d)
    _check_fmt(src_fmt, s)
    _check_target(d, overwrite)
    if s.absolute() == d.absolute():
        raise ImageError(f"image {d}: convert source and target are the same file")
    if compress and fmt != "qcow2":
        raise ImageError(f"image {d}: only qcow2 can be compressed, not {fmt}")
    argv = ["convert", "-q", "-O", fmt, *(["-c"] if compress else [])]
    if src_fmt:
        argv += ["-f", src_fmt]
    _run([*argv, str(s), str(d)], d, timeout=timeout)
    return info(d)


def resize(path: str | Path, size: int | str, *, shrink: bool = False) -> ImageInfo:
    """Grow (or, with shrink=True, shrink) an image without a backing file.

    Overlays are refused: an overlay must keep its backing file's size (resize the base, then
    recreate the overlays).
    """
    p = Path(path)
    want = parse_size(size, f"image {p}: size")
    cur = info(p)
    if cur.backing_file is not None:
        raise ImageError(f"image {p}: is an overlay of {cur.backing_file}; an overlay keeps its "
                         f"backing file's size")
    if want < cur.virtual_size and not shrink:
        raise ImageError(f"image {p}: new size {want} is smaller than {cur.virtual_size} "
                         f"(shrinking loses data; pass shrink=True)")
    if want == cur.virtual_size:
        return cur
    argv = ["resize", "-q", "-f", cur.format]
    if want < cur.virtual_size:
        argv.append("--shrink")
    _run([*argv, str(p), str(want)], p)
    return info(p)


def check_chain(path: str | Path) -> ImageInfo:
    """Refuse a backing chain with a missing file or an overlay whose size differs from its base."""
    p = Path(path)
    top = info(p)
    node: ImageInfo | None = top
    while node is not None and node.backing_file is not None:
        if not node.backing_file.exists():
            raise ImageError(f"image {node.path}: backing file {node.backing_file} does not exist")
        base = info(node.backing_file)
        if base.virtual_size != node.virtual_size:
            raise ImageError(f"image {node.path}: size {node.virtual_size} differs from backing "
                             f"file {base.path} ({base.virtual_size} bytes)")
        node = base
    return info(p, backing_chain=True)


def same_content(a: str | Path, b: str | Path, *, timeout: float = DEFAULT_TIMEOUT,
                 force_share: bool = False) -> bool:
    """True if the two images show the guest the same bytes (`qemu-img compare`, formats may differ).

    This is how a replicated disk is proved equal to its source, block by block. force_share (-U)
    reads images a running QEMU holds: only meaningful while the guest writes nothing.
    """
    pa, pb = Path(a), Path(b)
    for p in (pa, pb):
        _check_source(p)
    cmd = [str(qemu_install().img), "compare", "-q", *(["-U"] if force_share else []), str(pa), str(pb)]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise ImageError(f"image {pa}: qemu-img compare timed out after {timeout:.0f} s") from exc
    if res.returncode in (0, 1):
        return res.returncode == 0
    raise ImageError(f"image {pa}: qemu-img compare with {pb} failed: {_first_error_line(res.stderr)}")


def colo_overlay_paths(directory: str | Path, prefix: str = "") -> tuple[Path, Path]:
    """Where the secondary's (active, hidden) overlays live: the one definition of their names,
    shared by create_colo_overlays and the secondary's argv (colo.argv.Node)."""
    dirp = Path(directory)
    return dirp / f"{prefix}active.qcow2", dirp / f"{prefix}hidden.qcow2"


def create_colo_overlays(disk: str | Path, directory: str | Path, *, prefix: str = "",
                         overwrite: bool = False) -> ColoOverlays:
    """The secondary's empty active and hidden qcow2 overlays, each of the disk's virtual size.

    They carry no backing file in their headers: the secondary's block graph chains them
    (active -> hidden -> disk) when QEMU starts, as QEMU's block-replication docs do.
    """
    d = Path(disk)
    dirp = Path(directory)
    if not dirp.is_dir():
        raise ImageError(f"image {d}: overlay directory {dirp} does not exist")
    size = info(d).virtual_size
    active, hidden = colo_overlay_paths(dirp, prefix)
    for o in (active, hidden):
        create(o, size, "qcow2", overwrite=overwrite)
    return ColoOverlays(disk=d, active=active, hidden=hidden, size=size)
