"""The kernel's TCP byte counters per named port, as `ss -tinH` prints them (pure parsing)."""

from __future__ import annotations

from coserver.sys.tcpstats import StreamBytes, parse_ss

SS = """ESTAB 0      0      10.201.9.1:45678 10.201.9.2:9998
\t cubic wscale:7,7 rto:204 rtt:0.05/0.025 mss:32768 bytes_sent:1200 bytes_acked:1100 bytes_received:456 segs_out:3
ESTAB 0      1448   [::ffff:10.201.9.1]:9003 [::ffff:10.201.9.2]:51000
\t cubic bytes_acked:7 bytes_received:99
ESTAB 0      0      10.201.9.1:45679 10.9.9.9:9998
\t cubic bytes_acked:5 bytes_received:5
ESTAB 0      0      10.201.9.1:22 10.201.9.2:40000
\t cubic bytes_acked:1000000 bytes_received:1000000
"""
PORTS = {"migration": 9998, "mirror": 9003, "nbd": 9999}


def test_each_stream_sums_its_connections_at_either_end_and_other_ports_do_not_count() -> None:
    assert parse_ss(SS, PORTS) == {"migration": StreamBytes(1105, 461), "mirror": StreamBytes(7, 99),
                                   "nbd": StreamBytes(0, 0)}


def test_send_q_is_what_the_peer_has_not_acknowledged_and_is_not_movement() -> None:
    """A peer that stopped acknowledging leaves the client's mirrored packets in Send-Q: the stall watch
    reads them there; bytes merely queued are not bytes moved (equality ignores them)."""
    streams = parse_ss(SS, PORTS)
    assert streams["mirror"].queued == 1448 and streams["migration"].queued == 0
    assert streams["mirror"] == StreamBytes(7, 99, queued=0)


def test_a_peer_filter_keeps_that_peers_connections_only() -> None:
    assert parse_ss(SS, PORTS, peer="10.201.9.2")["migration"] == StreamBytes(1100, 456)
    assert parse_ss("", PORTS) == {name: StreamBytes() for name in PORTS}


def test_an_ss_that_ends_as_it_times_out_is_no_error(tmp_path, monkeypatch):
    """Found in the Vagrant lab: `ss` outlived its deadline, then exited before the kill; asyncio's kill
    of a finished process raised ProcessLookupError and stopped the controller's health task."""
    import asyncio
    import os

    from coserver.sys import tcpstats

    fake = tmp_path / "ss"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")

    async def late(aw, _timeout):      # the deadline passes while ss exits and its pipes close
        aw.close()
        await asyncio.sleep(0.5)
        raise TimeoutError

    monkeypatch.setattr(tcpstats.asyncio, "wait_for", late)
    assert asyncio.run(tcpstats.stream_bytes_async({"colo": 8155})) is None
