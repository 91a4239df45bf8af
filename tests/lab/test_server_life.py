"""The controllers own the FT server's life (issue: two real hosts): `lab up` is `server start`
through the controllers, `server stop` shuts the guest down cleanly on both hosts with nothing
lost and no failover, and `server start` brings it back protected on the host that ran it last."""

from __future__ import annotations

import os
import time

import pytest

from coserver.images.guestclient import Writer, connect_journal, missing_acks
from coserver.lab.lab import Lab, LabOptions

from .labutil import coserver, status

pytestmark = [pytest.mark.qemu, pytest.mark.netns, pytest.mark.slow]

PREFIX = f"s{os.getpid() % 10000}"


def test_server_stop_then_start_keeps_every_write_and_comes_back_protected(tmp_path):
    lab = Lab(PREFIX, tmp_path / "lab")
    try:
        up = lab.up(LabOptions(prefix=PREFIX, workdir=tmp_path / "lab", checkpoint_ms=1000))
        assert up["state"] == "protected" and up["primary"] == "cs1"
        histories = {h: [t["to"] for t in e["history"]] for h, e in up["hosts"].items()}
        assert "simplex" in histories["cs1"], histories     # cs1's controller started the guest alone
        assert histories["cs2"][-1] == "protected"           # cs2's joined as its secondary
        g = up["guest"]
        writer = Writer(g["client_netns"], g["address"], g["port"], interval=0.02, tag="life").start()
        time.sleep(4)
        acked = writer.stop().acked
        # served (at 20-35 ms a reply here; 12/s in a loaded CI run): how fast is the bench's business
        assert len(acked) > 10

        t0 = time.monotonic()
        out = coserver("server", "stop", "journal", "--prefix", PREFIX, "--json", timeout=120)
        print(f"\nserver stop: {out.stdout.strip()} ({time.monotonic() - t0:.1f} s)")
        st = status(PREFIX)
        assert st["state"] == "stopped", st["state"]
        for host, e in st["hosts"].items():
            assert e["state"] == "stopped" and not e["qemu_alive"], (host, e["state"])
            tos = [t["to"] for t in e["history"]]
            assert "failing_over" not in tos[tos.index("stopping"):], (host, tos)  # nobody failed over
        assert "guest powered off" in st["hosts"]["cs1"]["history"][-1]["reason"]   # ACPI, not the timeout
        serial = (lab.server_dir("cs1") / "serial.log").read_text()
        assert "data disk unmounted cleanly" in serial

        out = coserver("server", "start", "journal", "--prefix", PREFIX, "--json", timeout=300)
        print(f"server start: {out.stdout.strip()}")
        st = status(PREFIX)
        assert st["state"] == "protected" and st["primary"] == "cs1"   # the host that ran it last
        with connect_journal(g["client_netns"], g["address"], g["port"]) as client:
            assert missing_acks(client, acked) == []
        bad = coserver("server", "stop", "nosuch", "--prefix", PREFIX, check=False)
        assert bad.returncode == 1 and "nosuch" in bad.stderr and bad.stderr.count("\n") == 1
    finally:
        lab.down()
