"""The witness against a real etcd (Debian's /usr/bin/etcd) that the tests start on loopback.

Each test uses its own FT server name, so one etcd serves the module; the
test that freezes etcd (SIGSTOP) lets it go again in a finally.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aetcd
import pytest

from coserver.controller.witness import DEFAULT_TTL, Owner, Witness, WitnessError, WitnessUnreachable

ETCD = shutil.which("etcd") or "/usr/bin/etcd"
SITE = "test-site"


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Etcd:
    proc: subprocess.Popen
    port: int

    def witness(self, ft: str, **kw) -> Witness:
        return Witness(ft, site=SITE, host="127.0.0.1", port=self.port, **kw)


@pytest.fixture(scope="module")
def etcd(tmp_path_factory) -> Iterator[Etcd]:
    if not os.path.exists(ETCD):
        pytest.skip("etcd is not installed (apt-get install etcd-server)")
    d: Path = tmp_path_factory.mktemp("etcd")
    client, peer = free_tcp_port(), free_tcp_port()
    argv = [ETCD, "--name", "default", "--data-dir", str(d / "data"),
            "--listen-client-urls", f"http://127.0.0.1:{client}",
            "--advertise-client-urls", f"http://127.0.0.1:{client}",
            "--listen-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-cluster", f"default=http://127.0.0.1:{peer}"]
    with open(d / "etcd.log", "wb") as logf:
        proc = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT)
    try:
        end = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{client}/health", timeout=1) as r:
                    if json.loads(r.read()).get("health") == "true":
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > end:
                pytest.fail(f"etcd did not come up: {(d / 'etcd.log').read_text()[-2000:]}")
            time.sleep(0.1)
        yield Etcd(proc, client)
    finally:
        os.kill(proc.pid, signal.SIGCONT)
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def test_first_claim_wins_and_current_shows_a_live_owner(arun, etcd):
    async def main():
        async with etcd.witness("ft-first") as w:
            assert await w.current() is None
            r = await w.claim("cs1", 1)
            assert r.granted and r.owner == Owner("cs1", 1, True)
            assert await w.current() == Owner("cs1", 1, True)
            assert w.held == Owner("cs1", 1, True) and 0 < w.lease_left() <= DEFAULT_TTL
            assert w.reachable is True
        # the keys are the site's: /coserver/<site>/<ft>/... (one etcd role per site may touch them)
        assert (w.owner_key, w.epoch_key) == (f"/coserver/{SITE}/ft-first/owner", f"/coserver/{SITE}/ft-first/epoch")
        async with aetcd.Client(host="127.0.0.1", port=etcd.port) as raw:
            got = await raw.get(f"/coserver/{SITE}/ft-first/epoch".encode())
            assert got is not None and json.loads(got.value) == {"node": "cs1", "epoch": 1}
            assert await raw.get(b"/coserver/ft-first/epoch") is None     # nothing at the old, site-less place
    arun(main())


def test_site_and_server_names_cannot_escape_the_prefix():
    for site, ft in (("", "ft"), ("a/b", "ft"), ("s", ""), ("s", "x/owner")):
        with pytest.raises(WitnessError, match="without '/'"):
            Witness(ft, site=site)


def test_concurrent_claimants_exactly_one_wins(arun, etcd):
    async def main():
        reasons = []
        for i in range(10):
            ft = f"ft-race-{i}"
            async with etcd.witness(ft) as w1, etcd.witness(ft) as w2:
                r1, r2 = await asyncio.gather(w1.claim("cs1", 1), w2.claim("cs2", 1))
                assert r1.granted != r2.granted, (r1, r2)
                winner = "cs1" if r1.granted else "cs2"
                assert (await w1.current()) == Owner(winner, 1, True)
                loser = r2 if r1.granted else r1
                assert loser.owner is not None and loser.owner.node == winner
                reasons.append(loser.reason)
        # both read "free" before either wrote: etcd's compare-and-swap decided, not the read
        assert any("lost the race" in r for r in reasons), reasons
    arun(main())


def test_never_while_the_others_lease_lives_even_with_a_higher_epoch(arun, etcd):
    async def main():
        async with etcd.witness("ft-held") as p, etcd.witness("ft-held") as s:
            assert (await p.claim("cs1", 1)).granted
            r = await s.claim("cs2", 100)
            assert not r.granted and "cs1 holds epoch 1" in r.reason
            await asyncio.sleep(DEFAULT_TTL * 1.5)  # past one TTL: the keep-alive holds it
            assert not (await s.claim("cs2", 2)).granted
            assert await s.current() == Owner("cs1", 1, True)
    arun(main())


def test_lease_expiry_lets_the_other_win_only_after_ttl(arun, etcd):
    async def main():
        p = etcd.witness("ft-expiry")
        assert (await p.claim("cs1", 1)).granted
        await asyncio.sleep(0.9)  # let a keep-alive or two happen
        left = p.lease_left()
        assert left > 0
        t_crash = time.monotonic()
        await p.close()  # the controller dies: no release, no more keep-alives
        async with etcd.witness("ft-expiry") as s:
            while True:
                r = await s.claim("cs2", 2)
                if r.granted:
                    break
                assert time.monotonic() - t_crash < DEFAULT_TTL + 2.0, "lease never expired"
                await asyncio.sleep(0.05)
            waited = time.monotonic() - t_crash
        # granted no sooner than our own safe estimate of the lease, and not much later
        assert left - 0.05 <= waited <= DEFAULT_TTL + 1.0, (left, waited)
        return waited
    waited = arun(main())
    print(f"secondary won {waited:.2f} s after the primary's controller died (TTL {DEFAULT_TTL} s)")


def test_release_lets_the_other_win_at_once(arun, etcd):
    async def main():
        async with etcd.witness("ft-release") as p, etcd.witness("ft-release") as s:
            assert (await p.claim("cs1", 3)).granted
            assert not (await s.claim("cs2", 4)).granted
            t0 = time.monotonic()
            await p.release()
            assert p.held is None
            assert await s.current() == Owner("cs1", 3, False)
            r = await s.claim("cs2", 4)
            assert r.granted and time.monotonic() - t0 < 0.5
            assert await p.current() == Owner("cs2", 4, True)
    arun(main())


def test_epoch_never_goes_backwards(arun, etcd):
    async def main():
        async with etcd.witness("ft-epoch") as a, etcd.witness("ft-epoch") as b:
            assert (await a.claim("cs1", 5)).granted
            await a.release()
            r = await b.claim("cs2", 4)
            assert not r.granted and "not newer than 5" in r.reason
            assert not (await b.claim("cs2", 5)).granted  # same epoch, other node
            assert (await b.claim("cs2", 6)).granted
            await b.release()
            assert not (await a.claim("cs1", 5)).granted  # a stale side stays out
            assert not (await a.claim("cs1", 6)).granted
            assert await a.current() == Owner("cs2", 6, False)
            assert (await a.claim("cs1", 7)).granted
    arun(main())


def test_owner_may_reclaim_its_epoch_and_bump_it(arun, etcd):
    """A restarted controller re-attaches (same node, same epoch); a primary going simplex bumps."""
    async def main():
        first = etcd.witness("ft-reattach")
        assert (await first.claim("cs1", 3)).granted
        await first.close()  # controller restart
        async with etcd.witness("ft-reattach") as again, etcd.witness("ft-reattach") as other:
            assert (await again.claim("cs1", 3)).granted
            assert (await again.claim("cs1", 4)).granted  # simplex: the stale secondary's epoch+1 = 4 ...
            assert not (await other.claim("cs2", 4)).granted  # ... can never win
            await again.release()
            assert not (await other.claim("cs2", 4)).granted
            assert await other.current() == Owner("cs1", 4, False)
    arun(main())


def test_closed_port_is_unreachable_within_the_deadline(arun):
    async def main():
        port = free_tcp_port()  # nothing listens there
        async with Witness("ft-nowhere", site=SITE, port=port, deadline=0.5) as w:
            for call in (w.current, lambda: w.claim("cs1", 1)):
                t0 = time.monotonic()
                with pytest.raises(WitnessUnreachable) as ei:
                    await call()
                assert time.monotonic() - t0 < 0.5 + 0.3
                assert str(port) in str(ei.value) and "\n" not in str(ei.value)
            assert w.reachable is False and w.held is None
    arun(main())


def stopped(pid: int, timeout: float = 5.0) -> None:
    """Wait until the kernel shows pid stopped: kill(SIGSTOP) returns before the process is."""
    deadline = time.monotonic() + timeout
    while open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "T":
        assert time.monotonic() < deadline, f"pid {pid} not stopped after {timeout} s"
        time.sleep(0.01)


def test_frozen_witness_is_unreachable_in_bounded_time_and_a_held_lease_is_declared_lost(arun, etcd):
    lost: list[tuple[float, str]] = []

    async def main():
        async with etcd.witness("ft-frozen", on_lost=lambda why: lost.append((time.monotonic(), why))) as p, \
                etcd.witness("ft-frozen") as q:
            assert (await p.claim("cs1", 1)).granted
            await q.current()  # q's connection is up before the freeze
            os.kill(etcd.proc.pid, signal.SIGSTOP)
            stopped(etcd.proc.pid)
            try:
                t0 = time.monotonic()
                expires = t0 + p.lease_left()
                with pytest.raises(WitnessUnreachable, match="no answer within"):
                    await q.current()
                took = time.monotonic() - t0
                assert 0.9 <= took <= 1.0 + 0.5, took
                while not lost and time.monotonic() < expires + 2:
                    await asyncio.sleep(0.02)
                assert lost, "the keep-alive never noticed"
                # declared lost by our clock, no later than the lease could expire at the witness
                assert lost[0][0] <= expires + 0.1, (lost[0][0] - expires)
                print(f"frozen witness: call failed after {took:.2f} s; lease declared lost "
                      f"{lost[0][0] - t0:.2f} s after the freeze ({expires - lost[0][0]:+.2f} s before expiry)")
                assert p.held is None and p.lease_left() == 0 and p.reachable is False
            finally:
                os.kill(etcd.proc.pid, signal.SIGCONT)
            end = time.monotonic() + 5
            while True:  # the witness answers again once it runs
                try:
                    cur = await q.current()
                    break
                except WitnessUnreachable:
                    assert time.monotonic() < end
            assert cur is not None and cur.node == "cs1"
    arun(main())
