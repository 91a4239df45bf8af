"""The lab's `disk-error` fault: one CoServer's copy of the guest disk starts failing writes.

Done on the running QEMU over its second QMP monitor (the launcher's ctl socket; the controller holds
the first), so nothing in the product's QEMU configuration exists only for a test:

* a primary (or a simplex survivor): its own quorum child (children.0, the local copy) is taken out
  of the quorum and put back wrapped in a `blkdebug` node whose rule fails every write with EIO
  from the moment it is opened (event "none"). The quorum's other child (the replica) still takes
  the writes, so the guest sees success and QEMU reports QUORUM_REPORT_BAD for the wrapped child,
  which is what a dying local disk looks like to the controller.
* a secondary: its disk's NBD export is withdrawn (the replica can take no more writes): the
  primary's replication writes fail with EIO and its quorum reports the replication child bad.
  (Re-exporting it read-only instead crashed the primary's QEMU 10.2: its NBD client reconnected
  to the read-only export and hit `assert(!(flags & NBD_FLAG_READ_ONLY))` in nbd_client_co_pwritev
  on the next write, where an error was due: an upstream bug, noted, not worked around here.)

The fault lives in that QEMU only: the copy of the disk file is untouched, so the QEMU started when
that side rejoins has a healthy disk again (a real failed disk would be replaced first).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from coserver.colo.argv import EXPORT_ID, NBD_EXPORT, PARENT_NODE, QUORUM_NODE
from coserver.errors import CoserverError
from coserver.qmp.session import QmpSession

#: The blkdebug node the fault inserts on a primary.
FAULTY_NODE = "lab-faulty-disk"
_DEADLINE = 5.0


class DiskFaultError(CoserverError):
    """The disk fault could not be injected; the message names the step."""


def fail_disk(ctl_socket: Path, host: str) -> dict[str, Any]:
    """Make `host`'s QEMU (reached on ctl_socket) fail its disk writes; return what was done."""
    try:
        return asyncio.run(_fail_disk(ctl_socket, host))
    except CoserverError as exc:
        raise DiskFaultError(f"fault disk-error on {host}: {exc}") from exc


async def _fail_disk(ctl_socket: Path, host: str) -> dict[str, Any]:
    async with await QmpSession.connect(ctl_socket, name=f"lab-disk-fault-{host}", connect_timeout=5.0) as qmp:
        mode = (await qmp.execute("query-colo-status", deadline=_DEADLINE)).get("mode")
        if mode == "secondary":
            return await _withdraw_export(qmp)
        return await _wrap_local_child(qmp, mode)


async def _wrap_local_child(qmp: QmpSession, mode: str) -> dict[str, Any]:
    graph = await qmp.execute("x-debug-query-block-graph", deadline=_DEADLINE)
    names = {n["id"]: n.get("name") for n in graph["nodes"]}
    quorum_ids = [i for i, name in names.items() if name == QUORUM_NODE]
    edges = [e for e in graph["edges"] if e["parent"] in quorum_ids and e["name"] == "children.0"]
    if not edges:
        raise DiskFaultError(f"no children.0 under {QUORUM_NODE}: is a guest disk attached?")
    local = names[edges[0]["child"]]
    if local == FAULTY_NODE:
        raise DiskFaultError("the local disk is already failing")
    await qmp.execute("x-blockdev-change", {"parent": QUORUM_NODE, "child": "children.0"}, deadline=_DEADLINE)
    await qmp.execute("blockdev-add", {
        "driver": "blkdebug", "node-name": FAULTY_NODE, "image": local,
        "inject-error": [{"event": "none", "iotype": "write", "errno": 5},
                         {"event": "none", "iotype": "flush", "errno": 5}]}, deadline=_DEADLINE)
    await qmp.execute("x-blockdev-change", {"parent": QUORUM_NODE, "node": FAULTY_NODE}, deadline=_DEADLINE)
    return {"side": mode or "none", "failing": local, "how": f"{local} wrapped in blkdebug (EIO on write)"}


async def _withdraw_export(qmp: QmpSession) -> dict[str, Any]:
    with qmp.listen("BLOCK_EXPORT_DELETED") as deleted:
        await qmp.execute("block-export-del", {"id": EXPORT_ID, "mode": "hard"}, deadline=_DEADLINE)
        await deleted.wait(deadline=_DEADLINE)
    return {"side": "secondary", "failing": PARENT_NODE, "how": f"NBD export {NBD_EXPORT!r} withdrawn"}
