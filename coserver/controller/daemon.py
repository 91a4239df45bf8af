"""The per-CoServer controller process: owns the local QEMU's QMP session and reports on it.

One runs on each CoServer (in the lab: inside the host's namespace, started by
`coserver lab up`; on real hosts: by the systemd unit). It is the only client
of the QEMU's QMP socket once the pair is up, so it is where checkpoints are
counted (from QEMU's events, which only a connected client sees), where QMP
responsiveness is measured continuously, and where `status` questions are
answered, over a unix control socket (mode 0600) speaking one JSON object per
line each way.

The process runs in its own session (setsid) so the CLI that started it can
exit; it stops on SIGTERM without touching the guest.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from coserver import log
from coserver.colo.status import CheckpointWatch, read_state
from coserver.errors import CoserverError
from coserver.qmp.errors import QmpError
from coserver.qmp.launcher import QemuProcess
from coserver.qmp.session import QmpSession

_log = log.get("controller")

HEALTH_INTERVAL_S = 0.5
QMP_DEADLINE_S = 2.0


@dataclass(frozen=True)
class ControllerConfig:
    """What one controller manages; written by the lab (or the installer) as JSON."""

    host: str
    ftserver: str
    qemu_workdir: str
    qemu_name: str
    control_socket: str
    log_file: str

    @classmethod
    def load(cls, path: Path) -> ControllerConfig:
        try:
            return cls(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError) as exc:
            raise CoserverError(f"controller config {path}: {exc}") from exc

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")
        path.chmod(0o600)


@dataclass
class Health:
    """QMP responsiveness as seen by the health loop since the controller started."""

    polls: int = 0
    missed: int = 0
    max_latency_ms: float = 0.0
    last_latency_ms: float | None = None
    last_ok_at: float | None = None


class HostController:
    """Watches one local QEMU and answers control requests."""

    def __init__(self, cfg: ControllerConfig) -> None:
        self.cfg = cfg
        self.qemu = QemuProcess.attach(cfg.qemu_workdir, cfg.qemu_name)
        self.qmp: QmpSession | None = None
        self.watch: CheckpointWatch | None = None
        self.health = Health()
        self.started_at = time.time()
        self.role = "unknown"
        self._stop = asyncio.Event()

    async def run(self) -> None:
        self.qmp = await QmpSession.connect(self.qemu.qmp_path, name=f"{self.cfg.host}-controller",
                                            default_deadline=QMP_DEADLINE_S)
        state = await read_state(self.qmp, QMP_DEADLINE_S)
        self.role = state.mode if state.mode != "none" else "simplex"
        if self.role == "primary":
            self.watch = CheckpointWatch(self.qmp)
            self.watch.start()
        server = await asyncio.start_unix_server(self._serve, path=self.cfg.control_socket)
        os.chmod(self.cfg.control_socket, 0o600)
        _log.info("controller.started", host=self.cfg.host, role=self.role, qemu_pid=self.qemu.pid)
        health = asyncio.create_task(self._health_loop(), name="health")
        try:
            await self._stop.wait()
        finally:
            health.cancel()
            server.close()
            if self.watch:
                await self.watch.stop()
            await self.qmp.close()
            try:
                os.unlink(self.cfg.control_socket)
            except FileNotFoundError:
                pass
            _log.info("controller.stopped", host=self.cfg.host)

    def stop(self) -> None:
        self._stop.set()

    async def _health_loop(self) -> None:
        assert self.qmp is not None
        while True:
            t0 = time.monotonic()
            self.health.polls += 1
            try:
                await self.qmp.execute("query-status", deadline=QMP_DEADLINE_S)
                ms = 1000 * (time.monotonic() - t0)
                self.health.last_latency_ms = round(ms, 1)
                self.health.max_latency_ms = round(max(self.health.max_latency_ms, ms), 1)
                self.health.last_ok_at = time.time()
            except QmpError as exc:
                self.health.missed += 1
                _log.warning("controller.qmp_unhealthy", host=self.cfg.host, reason=str(exc))
                if not self.qmp.healthy and self.qemu.alive():
                    await self._reconnect()
            await asyncio.sleep(HEALTH_INTERVAL_S)

    async def _reconnect(self) -> None:
        """After a missed deadline the session is suspect: open a fresh one."""
        try:
            old = self.qmp
            self.qmp = await QmpSession.connect(self.qemu.qmp_path, name=f"{self.cfg.host}-controller",
                                                connect_timeout=QMP_DEADLINE_S, default_deadline=QMP_DEADLINE_S)
            if old is not None:
                await old.close(timeout=0.5)
        except QmpError as exc:
            _log.warning("controller.reconnect_failed", host=self.cfg.host, reason=str(exc))

    async def status(self) -> dict[str, Any]:
        """This host's view: QEMU process, COLO state straight from QEMU, checkpoints, QMP health."""
        out: dict[str, Any] = {
            "host": self.cfg.host, "ftserver": self.cfg.ftserver, "role": self.role,
            "qemu_pid": self.qemu.pid, "qemu_alive": self.qemu.alive(),
            "controller_pid": os.getpid(), "since": self.started_at,
            "checkpoints": self.watch.count if self.watch else None,
            "checkpoint_pause_ms": _median_ms(self.watch.pauses) if self.watch else None,
            "qmp": asdict(self.health),
        }
        try:
            assert self.qmp is not None
            st = await read_state(self.qmp, QMP_DEADLINE_S)
            out["colo"] = {"mode": st.mode, "last_mode": st.last_mode, "reason": st.reason,
                           "migration": st.migration}
            out["guest_running"] = st.running
            out["qmp_ok"] = True
        except QmpError as exc:
            out["qmp_ok"], out["qmp_error"] = False, str(exc)
        return out

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                try:
                    request = json.loads(line)
                    reply = await self.handle(request)
                except (ValueError, CoserverError) as exc:
                    reply = {"ok": False, "error": str(exc)}
                writer.write(json.dumps(reply).encode() + b"\n")
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        cmd = request.get("cmd")
        if cmd == "status":
            return {"ok": True, "status": await self.status()}
        return {"ok": False, "error": f"unknown command {cmd!r}"}


def _median_ms(values: list[float]) -> float | None:
    if not values:
        return None
    return round(1000 * sorted(values)[len(values) // 2], 1)


async def _main(cfg: ControllerConfig) -> None:
    controller = HostController(cfg)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, controller.stop)
    await controller.run()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="coserver-controller", description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        cfg = ControllerConfig.load(args.config)
        log.configure("INFO", Path(cfg.log_file))
        asyncio.run(_main(cfg))
    except CoserverError as exc:
        print(f"coserver-controller: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
