"""The secondary's COLO sequences: get ready for the primary, fail over, report.

Order matters (docs/COLO-FT.txt): x-colo and the writable NBD export of
parent0 must exist before the primary migrates, and `migrate-incoming` comes
last. At failover the NBD server goes first (no more primary writes), then
QEMU takes over, then the redirectors and their chardevs go (the rewriter
stays: it still fixes TCP sequence numbers of connections made under COLO),
and the guest announces itself so the client LAN's bridge learns the new port.
"""

from __future__ import annotations

from coserver import log
from coserver.colo.argv import EXPORT_ID, NBD_EXPORT, PARENT_NODE, Node
from coserver.colo.proxy import SECONDARY_PROXY_CHARDEVS, SECONDARY_PROXY_OBJECTS
from coserver.colo.settings import ColoSettings, SyncPorts
from coserver.colo.steps import StepRunner
from coserver.qmp.session import QmpSession

_log = log.get("colo.secondary")



class Secondary:
    """COLO operations on the secondary QEMU of one node."""

    def __init__(self, qmp: QmpSession, node: Node, settings: ColoSettings) -> None:
        self.qmp, self.node, self.settings = qmp, node, settings
        self.steps = StepRunner(qmp, "secondary", node.name, settings.qmp_deadline_s)

    async def prepare(self, ports: SyncPorts) -> None:
        """Export parent0 over NBD and wait for the primary's migration on the sync link."""
        s, addr = self.steps, self.node.sync_addr
        await s.run("migrate-set-capabilities", {"capabilities": [{"capability": "x-colo", "state": True}]},
                    step="enable x-colo")
        tls = self.node.tls.listener() if self.node.tls else {}
        if tls:
            await s.run("migrate-set-parameters", tls, step="require TLS and the primary's certificate on the migration")
        await s.run("nbd-server-start", {"addr": {"type": "inet", "data": {"host": addr, "port": str(ports.nbd)}},
                                         **tls},
                    step="start the NBD server")
        await s.run("block-export-add", {"type": "nbd", "id": EXPORT_ID, "node-name": PARENT_NODE,
                                         "name": NBD_EXPORT, "writable": True},
                    step="export the disk over NBD")
        await s.run("migrate-incoming", {"uri": f"tcp:{addr}:{ports.migration}"},
                    step="listen for the COLO migration")

    async def wait_colo(self) -> None:
        async def in_colo() -> bool:
            st = await self.steps.run("query-colo-status", step="wait for COLO")
            return bool(st.get("mode") == "secondary")

        await self.steps.poll("wait for COLO", in_colo, timeout=self.settings.migrate_timeout_s)
        _log.info("colo.secondary.colo.entered", node=self.node.name)

    async def failover(self) -> None:
        """The primary is lost: take over as the only copy, on the same MAC and IP."""
        s = self.steps
        await s.best_effort("yank", {"instances": [{"type": "migration"}]})
        await s.best_effort("nbd-server-stop")
        await s.best_effort("x-colo-lost-heartbeat")
        for obj in SECONDARY_PROXY_OBJECTS:
            await s.best_effort("object-del", {"id": obj})
        for chardev in SECONDARY_PROXY_CHARDEVS:
            await s.best_effort("chardev-remove", {"id": chardev})

        async def running() -> bool:
            st = await s.run("query-status", step="check the guest runs")
            return bool(st.get("running"))

        await s.poll("check the guest runs", running, timeout=10.0, interval=0.05)
        await s.best_effort("announce-self", {"initial": 50, "max": 550, "rounds": 5, "step": 100})
