"""SitePair and the site's operator commands against two real controllers' control servers.

Two HostControllers (their configs from the site file, as on a real CoServer) answer with their
real request handler: cs1's on its unix socket (this host) and on TCP 127.0.0.1, cs2's on TCP
127.0.0.2 (the peer's management address), HMAC'd with the site's pair key. Their QEMU, witness
and heartbeats are stand-ins: nothing here starts a QEMU or needs a network namespace.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import coserver.hardware
import coserver.site
from coserver.cli.main import main
from coserver.cli.target import answering
from coserver.controller import control, remote
from coserver.controller.daemon import HostController
from coserver.controller.heartbeat import LocalStatus
from coserver.controller.journal import Journal, JournalEntry
from coserver.controller.roles import Role
from coserver.controller.siteconfig import controller_config_for
from coserver.controller.statemachine import FtState
from coserver.controller.witness import Owner
from coserver.pair.client import PairClient, PairError
from coserver.pair.site import SitePair
from coserver.site import load_site
from coserver.site.keygen import read_key, write_key
from coserver.site.model import Site

EXAMPLE_SITE = Path(coserver.site.__file__).parent / "examples" / "site.toml"
EXAMPLE_SPEC = Path(coserver.hardware.__file__).parent / "examples" / "lab-journal.toml"


class StandInHeartbeats:
    """The peer heard on every link."""

    def links_alive(self) -> dict[str, bool]:
        return {"sync1": True, "sync2": True}

    def rtts(self) -> dict[str, float | None]:
        return dict.fromkeys(self.links_alive())

    def peer_state(self) -> None:
        return None

    def update_local(self, **changes: Any) -> None: ...

    @property
    def local(self) -> LocalStatus:
        return LocalStatus(site="", qemu_version="10.2.2")

    def auth_failing(self) -> list[str]:
        return []

    def link_names(self) -> list[str]:
        return ["sync1", "sync2"]

    def peer_alive(self) -> bool:
        return True


class StandInWitness:
    def __init__(self, held_by: str | None) -> None:
        self.held = Owner(held_by, 1, True) if held_by else None


class StandInQemu:
    pid = 4242

    def alive(self) -> bool:
        return True


class Loop:
    """An asyncio loop in a thread: the controllers' servers run there while a test asks them."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@dataclass
class RunningPair:
    site: Site
    site_file: Path
    key: bytes
    controllers: dict[str, HostController]
    servers: dict[str, list[asyncio.Server]]
    loop: Loop


def _free_port() -> int:
    """A port free on both 127.0.0.1 and 127.0.0.2 (the two CoServers' management addresses)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.2", port))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port")


def _site_file(tmp_path: Path, control_port: int) -> Path:
    text = EXAMPLE_SITE.read_text()
    for old, new in (
            ('servers_dir = "/etc/coserver/servers"', f'servers_dir = "{tmp_path / "servers"}"'),
            ('state_dir = "/var/lib/coserver"', f'state_dir = "{tmp_path / "state"}"'),
            ('run_dir = "/run/coserver"', f'run_dir = "{tmp_path / "run"}"'),
            ('key_file = "/etc/coserver/pair.key"', f'key_file = "{tmp_path / "pair.key"}"'),
            ("base_port = 7400", f"base_port = {control_port - 5}"),
            ("# journal = 0", "journal = 0"),
            ('management = "198.51.100.1"', 'management = "127.0.0.1"'),
            ('management = "198.51.100.2"', 'management = "127.0.0.2"'),
            ("172.31.", "10.254.")):
        assert old in text, old
        text = text.replace(old, new)
    (tmp_path / "servers").mkdir()
    (tmp_path / "servers" / "journal.toml").write_text(EXAMPLE_SPEC.read_text())
    (tmp_path / "run").mkdir()
    path = tmp_path / "site.toml"
    path.write_text(text)
    return path


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[RunningPair]:
    """cs1 the protected primary, cs2 its secondary, each controller serving as its daemon would."""
    site_file = _site_file(tmp_path, _free_port())
    site = load_site(site_file)
    write_key(site.key_file)
    key = read_key(site.key_file)
    loop = Loop()
    controllers: dict[str, HostController] = {}
    servers: dict[str, list[asyncio.Server]] = {}
    for host, role in (("cs1", Role.PRIMARY), ("cs2", Role.SECONDARY)):
        cfg = controller_config_for(site, site.servers_dir / "journal.toml", host,
                                    state_dir=tmp_path / host / "state",
                                    run_dir=site.run_dir if host == "cs1" else tmp_path / host / "run")
        Path(cfg.qemu_workdir).mkdir(parents=True)
        Path(cfg.control_socket).parent.mkdir(parents=True, exist_ok=True)
        journal = Journal(Path(cfg.journal_file))
        journal.save(JournalEntry(ftserver="journal", node=host, role=role, epoch=1, state=FtState.PROTECTED))

        async def start(cfg: Any = cfg, journal: Journal = journal, host: str = host) -> None:
            c = HostController(cfg, journal=journal, witness=StandInWitness("cs1" if host == "cs1" else None),  # type: ignore[arg-type]
                               heartbeats=StandInHeartbeats(), key=key)  # type: ignore[arg-type]
            c.qemu = StandInQemu()  # type: ignore[assignment]
            controllers[host] = c
            tcp = await remote.serve_configured(cfg.remote_control, key, c.handle)
            assert tcp is not None
            servers[host] = [await control.serve(cfg.control_socket, c.handle), tcp]

        loop.run(start())
    try:
        yield RunningPair(site, site_file, key, controllers, servers, loop)
    finally:
        async def stop() -> None:
            for group in servers.values():
                for s in group:
                    s.close()
        loop.run(stop())
        loop.close()


def test_status_asks_this_hosts_socket_and_the_peer_over_the_management_network(pair: RunningPair) -> None:
    sp = SitePair(pair.site, "journal", "cs1")
    st = sp.status()
    assert (st["state"], st["primary"], st["secondary"]) == ("protected", "cs1", "cs2")
    assert st["ftserver"] == "journal" and st["site"] == "example" and st["here"] == "cs1" and st["alert"] is None
    assert st["hosts"]["cs1"]["via"] == str(pair.site.run_dir / "journal.sock")
    assert st["hosts"]["cs2"]["via"] == f"127.0.0.2:{sp.port}"
    assert {h: e["role"] for h, e in st["hosts"].items()} == {"cs1": "primary", "cs2": "secondary"}
    assert all("error" not in e and e["ftserver"] == "journal" for e in st["hosts"].values())
    # from neither CoServer (a workstation): both over the management network, same answer
    both_remote = SitePair(pair.site, "journal", None).status()
    assert both_remote["hosts"]["cs1"]["via"] == f"127.0.0.1:{sp.port}"
    assert (both_remote["state"], both_remote["primary"]) == ("protected", "cs1")


def test_a_command_reaches_the_peers_controller(pair: RunningPair) -> None:
    sp = SitePair(pair.site, "journal", "cs1")
    assert not pair.controllers["cs2"].rejoin_requested
    reply = sp.ask("cs2", {"cmd": control.Command.REJOIN})
    assert reply == {"ok": True, "host": "cs2", "role": "secondary"}
    assert pair.controllers["cs2"].rejoin_requested and not pair.controllers["cs1"].rejoin_requested
    with pytest.raises(PairError, match=r"^journal on cs2: 127\.0\.0\.2:\d+: unknown command 'nosuch'$"):
        sp.ask("cs2", {"cmd": "nosuch"})
    # the pair client's own refusals read the real status
    with pytest.raises(PairError, match="already protected"):
        PairClient(sp, sp.hosts).reprotect(timeout=1.0)


def test_a_silent_peer_is_reported_not_raised(pair: RunningPair) -> None:
    async def stop_cs2() -> None:
        for s in pair.servers["cs2"]:
            s.close()
            await s.wait_closed()

    pair.loop.run(stop_cs2())
    sp = SitePair(pair.site, "journal", "cs1")
    t0 = time.monotonic()
    st = sp.status()
    assert time.monotonic() - t0 < 5
    assert st["hosts"]["cs1"]["role"] == "primary"
    error = st["hosts"]["cs2"]["error"]
    assert error.startswith("journal on cs2: 127.0.0.2:") and "\n" not in error
    assert st["state"] == "simplex"   # summarised from the controller that answered
    with pytest.raises(PairError, match="^cannot reach the controller of journal on cs2: "):
        answering(sp)


def test_another_pairs_key_is_refused(pair: RunningPair) -> None:
    sp = SitePair(pair.site, "journal", "cs1", key=bytes(32))
    st = sp.status()
    assert "error" not in st["hosts"]["cs1"]   # the unix socket needs no key
    assert "pair's key" in st["hosts"]["cs2"]["error"]
    assert pair.controllers["cs2"].rejoin_requested is False
    with pytest.raises(PairError, match="pair's key"):
        sp.ask("cs2", {"cmd": control.Command.REJOIN})
    assert pair.controllers["cs2"].rejoin_requested is False


def _cli(*args: str) -> tuple[int, str, str]:
    res = CliRunner().invoke(main, list(args))
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    assert "Traceback" not in res.stdout + res.stderr
    return res.exit_code, res.stdout, res.stderr


def test_cli_status_of_one_server_and_of_all(pair: RunningPair) -> None:
    code, out, err = _cli("status", "journal", "--json", "--site", str(pair.site_file))
    assert code == 0, err
    st = json.loads(out)
    assert (st["state"], st["primary"], st["secondary"], st["ftserver"]) == ("protected", "cs1", "cs2", "journal")
    code, out, err = _cli("status", "--json", "--site", str(pair.site_file))
    assert code == 0, err
    assert list(json.loads(out)) == ["journal"] and json.loads(out)["journal"]["state"] == "protected"
    code, out, err = _cli("status", "--site", str(pair.site_file))
    assert code == 0, err
    assert out.splitlines()[0].startswith("journal: PROTECTED   primary=cs1 secondary=cs2")


def test_cli_actions_on_the_site(pair: RunningPair) -> None:
    site = str(pair.site_file)
    code, _, err = _cli("reprotect", "journal", "--site", site)
    assert code == 1 and err == "coserver: error: pair reprotect: the FT server is already protected\n"
    code, out, err = _cli("host", "maintenance", "off", "cs2", "--site", site, "--json")
    assert code == 0, err
    done = json.loads(out)
    assert done["ok"] and done["host"] == "cs2" and done["servers"]["journal"]["ok"]
    assert pair.controllers["cs2"].rejoin_requested   # maintenance off reached cs2's controller


def test_cli_refusals_are_one_line(pair: RunningPair, tmp_path: Path) -> None:
    site = str(pair.site_file)
    cases = [
        (("failover", "nosuch", "--site", site), "no FT server 'nosuch'"),
        (("status", "nosuch", "--site", site), "no FT server 'nosuch'"),
        (("failover", "--site", site), "failover: name the FT server: coserver failover NAME (servers of site "
                                       "example: journal)"),
        (("failover", "journal", "--to", "cs9", "--site", site), "failover --to cs9: not a CoServer"),
        (("host", "maintenance", "on", "cs9", "--site", site), "host maintenance cs9: not a CoServer"),
        (("host", "maintenance", "on", "cs1", "--host", "cs2", "--site", site), "differ"),
        (("switchover", "journal", "--site", str(tmp_path / "none.toml")), "no such file"),
        (("status", "journal", "--prefix", "x", "--site", site), "do not go together"),
    ]
    for args, want in cases:
        code, out, err = _cli(*args)
        assert code == 1, (args, out, err)
        assert err.startswith("coserver: error: ") and err.count("\n") == 1 and want in err, (args, err)


def test_cli_with_an_unsafe_key_says_so(pair: RunningPair) -> None:
    pair.site.key_file.chmod(0o644)
    code, out, err = _cli("failover", "journal", "--site", str(pair.site_file))
    assert code == 1 and err.count("\n") == 1
    assert err.startswith("coserver: error: cannot reach the controller of journal on cs2: key ") and "0644" in err
    code, out, err = _cli("status", "journal", "--json", "--site", str(pair.site_file))
    assert code == 1 and json.loads(out)["hosts"]["cs2"]["error"] and "0644" in err and err.count("\n") == 1


def test_cli_status_components_and_check(pair: RunningPair) -> None:
    site = str(pair.site_file)
    code, out, err = _cli("status", "journal", "--json", "--site", site)
    assert code == 0, err
    st = json.loads(out)
    kinds = [(c["kind"], c["name"]) for c in st["components"]]
    assert ("coserver", "cs1") in kinds and ("copy", "journal@cs2") in kinds and ("witness", "witness") in kinds
    assert all(set(c) == {"kind", "name", "health", "reason"} for c in st["components"])
    code, out, err = _cli("status", "--site", site)
    assert code == 0, err
    assert any(line.split()[:2] == ["coserver", "cs1"] for line in out.splitlines())
    code, out, err = _cli("status", "journal", "--check", "--site", site)
    bad = [c for c in st["components"] if c["health"] != "good"]
    assert (code == 0) == (not bad), (out, err)

    async def stop_cs2() -> None:
        for s in pair.servers["cs2"]:
            s.close()
            await s.wait_closed()

    pair.loop.run(stop_cs2())
    code, out, err = _cli("status", "--check", "--site", site)
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert "components not good; first: coserver cs2: OFFLINE: its controller does not answer" in err
