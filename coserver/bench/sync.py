"""Time to protect: the initial sync of a 1 GiB disk, against a raw copy of the same bytes.

The guest's disk here is 1 GiB of real data: the lab guest's ext4 data disk in
its first 256 MiB and random bytes after it (random: nothing for a copy to skip
or compress). Both QEMUs are started as `Lab.up` starts them, the secondary
exports its (blank) disk over NBD on the sync link (colo.Secondary.prepare),
then, in the same run, over the same path to the same export:
  raw copy   `qemu-img convert -n -U -f qcow2 -O raw <cs1 disk> nbd://<cs2>/bench-scratch`
             run in cs1's namespace into a blank qcow2 of the same size that the
             secondary's NBD server exports beside the real one (the ratio uses
             this copy), then once more over the now allocated target;
  sync       colo.Primary.protect(): the mirror of the running guest's disk into
             the secondary's blank disk until it is in step (what the ratio uses),
             then the switch into COLO (reported as protect_s).
The source is read once before, so every copy finds it in the page cache.
ratio = sync / raw copy: what coserver's way of copying costs over plain copying.
Each repeat is a fresh site; the section's figures are the medians.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

from coserver.bench.site import Site, fresh_dir
from coserver.bench.stats import median
from coserver.colo.argv import secondary_args
from coserver.colo.primary import Primary, SyncProgress
from coserver.colo.secondary import Secondary
from coserver.colo.settings import ColoSettings, SyncPorts
from coserver.errors import CoserverError
from coserver.images import qemu_img
from coserver.paths import qemu_install, version_tuple
from coserver.qmp.session import QmpSession
from coserver.sys.netns import exec_argv

DISK_SIZE = 1 << 30
CHUNK = 4 << 20


def make_disk(template: Path, dst: Path, size: int = DISK_SIZE) -> None:
    """A qcow2 of `size` bytes: the ext4 template, then random bytes to the end (all allocated)."""
    raw = dst.with_suffix(".raw")
    qemu_img.convert(template, raw, "raw", src_fmt="qcow2")
    with open(raw, "r+b") as f:
        f.seek(0, os.SEEK_END)
        left = size - f.tell()
        if left < 0:
            raise CoserverError(f"the template is larger than {size} bytes")
        while left > 0:
            n = min(CHUNK, left)
            f.write(os.urandom(n))
            left -= n
    qemu_img.convert(raw, dst, "qcow2", src_fmt="raw")
    raw.unlink()


def raw_copy(site: Site, src: Path, export_addr: str, port: int, export: str) -> dict[str, Any]:
    argv = exec_argv(site.net.ns("cs1"), [str(qemu_install().img), "convert", "-n", "-U",
                                                       "-f", "qcow2", "-O", "raw", str(src),
                                                       f"nbd://{export_addr}:{port}/{export}"])
    t0 = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=900)
    took = time.monotonic() - t0
    if proc.returncode != 0:
        raise CoserverError(f"raw copy failed: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")
    return {"seconds": round(took, 3), "mib_per_s": round(DISK_SIZE / 2**20 / took, 1), "argv": argv[4:]}


SCRATCH = "bench-scratch"


async def _scratch_export(sqmp: QmpSession, path: Path, add: bool) -> None:
    """A blank qcow2 of the same size exported by the secondary's NBD server: the raw copy's target."""
    if add:
        await sqmp.execute("blockdev-add", {"driver": "qcow2", "node-name": SCRATCH,
                                            "file": {"driver": "file", "filename": str(path)}}, deadline=10.0)
        await sqmp.execute("block-export-add", {"type": "nbd", "id": SCRATCH, "node-name": SCRATCH,
                                                "name": SCRATCH, "writable": True}, deadline=10.0)
    else:
        await sqmp.execute("block-export-del", {"id": SCRATCH}, deadline=10.0)
        for _ in range(50):  # the export goes away asynchronously
            try:
                await sqmp.execute("blockdev-del", {"node-name": SCRATCH}, deadline=10.0)
                return
            except Exception:  # still in use by the closing export
                await asyncio.sleep(0.1)


async def _protect(site: Site, pproc, sproc, result: dict[str, Any], say: Callable[[str], None]) -> None:
    ports = SyncPorts()
    settings = ColoSettings(checkpoint_ms=2000)
    p, s = site.node("cs1"), site.node("cs2")
    scratch = site.host_dir("cs2") / "scratch.qcow2"
    async with await QmpSession.connect(pproc.qmp_path, name="bench-sync-p") as pqmp, \
            await QmpSession.connect(sproc.qmp_path, name="bench-sync-s") as sqmp:
        await Secondary(sqmp, s, settings).prepare(ports)
        await asyncio.to_thread(_read_all, p.disk)  # the source in the page cache for every copy alike
        copies = []
        for target in ("blank", "overwrite"):
            if target == "blank":
                qemu_img.create(scratch, DISK_SIZE, overwrite=True)
                await _scratch_export(sqmp, scratch, add=True)
            copies.append({"target": target,
                           **await asyncio.to_thread(raw_copy, site, p.disk, s.sync_addr, ports.nbd, SCRATCH)})
            say(f"sync: raw copy to a {target} target: {copies[-1]['seconds']:.1f} s "
                f"({copies[-1]['mib_per_s']:.0f} MiB/s)")
        await _scratch_export(sqmp, scratch, add=False)
        scratch.unlink()
        result["raw_copies"] = copies
        ready: list[float] = []
        t0 = time.monotonic()

        def progress(pr: SyncProgress) -> None:
            if pr.ready and not ready:
                ready.append(time.monotonic() - t0)

        await Primary(pqmp, p, settings).protect(s.sync_addr, ports, progress)
        result["protect_s"] = round(time.monotonic() - t0, 3)
        await Secondary(sqmp, s, settings).wait_colo()
        result["sync_s"] = round(ready[0], 3) if ready else None


def _read_all(path: Path) -> None:
    with open(path, "rb") as f:
        while f.read(CHUNK):
            pass


def once(base: Path, prefix: str, say: Callable[[str], None]) -> dict[str, Any]:
    """One measurement on a fresh site: the raw copies, then the sync and protection."""
    site = Site(prefix, fresh_dir(base, prefix))
    result: dict[str, Any] = {}
    try:
        site.create()
        assert site.guest is not None
        t0 = time.monotonic()
        make_disk(site.guest.data_template, site.disk("cs1"))
        result["make_disk_s"] = round(time.monotonic() - t0, 1)
        s = site.node("cs2")
        qemu_img.create(s.disk, DISK_SIZE)
        assert s.overlay_dir is not None
        s.overlay_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        s.create_overlays(overwrite=True)
        sproc = site.start_qemu("cs2", secondary_args(s, site.hardware("cs2"), site.accel,
                                                      primary_sync_addr=site.node("cs1").sync_addr,
                                                      ports=SyncPorts(),
                                                      qemu_version=version_tuple(qemu_install().version)))
        pproc = site.start_simplex("cs1")
        site.wait_guest(pproc, sproc)
        asyncio.run(_protect(site, pproc, sproc, result, say))
    finally:
        site.down()
        shutil.rmtree(base / prefix, ignore_errors=True)
    raw = next((c["seconds"] for c in result.get("raw_copies", []) if c["target"] == "blank"), None)
    sync_s = result.get("sync_s")
    result.update(raw_copy_s=raw, sync_mib_per_s=round(DISK_SIZE / 2**20 / sync_s, 1) if sync_s else None,
                  ratio=round(sync_s / raw, 3) if sync_s and raw else None)
    say(f"sync: initial sync {sync_s} s, protected after {result.get('protect_s')} s, raw copy {raw} s: "
        f"ratio {result['ratio']}")
    return result


def run(base: Path, prefix: str, repeats: int, say: Callable[[str], None]) -> dict[str, Any]:
    """`repeats` measurements, each on a fresh site; the medians are the section's figures."""
    rows = [once(base, prefix, say) for _ in range(repeats)]

    def med(key: str) -> float | None:
        v = median(r.get(key) for r in rows if r.get(key) is not None)
        return None if v is None else round(v, 3)

    return {"disk_bytes": DISK_SIZE, "content": "ext4 data disk (256 MiB) + random bytes", "repeats": rows,
            "raw_copy_s": med("raw_copy_s"), "sync_s": med("sync_s"), "protect_s": med("protect_s"),
            "sync_mib_per_s": med("sync_mib_per_s"), "ratio": med("ratio")}
