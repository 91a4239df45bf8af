"""Servers in servers_dir, their port slots and the pair key."""

from __future__ import annotations

import os
import random
import stat
import string
from collections.abc import Callable
from pathlib import Path

import pytest

import coserver.site
from coserver.colo.settings import SyncPorts
from coserver.site import SiteError, load_site
from coserver.site.errors import KeyFileError
from coserver.site.keygen import check_key, read_key, write_key
from coserver.site.ports import HASH_SLOTS, STRIDE, allocate, hashed_slot, server_ports
from coserver.site.servers import find_server, load_server_ports, load_servers, spec_names

EXAMPLE_SITE = Path(coserver.site.__file__).parent / "examples" / "site.toml"
SiteFile = Callable[..., Path]
Servers = Callable[..., Path]


# ---- servers ------------------------------------------------------------------------------

def test_two_servers_load_with_their_ports(site_file: SiteFile, servers: Servers) -> None:
    servers("journal.toml")
    servers("web.toml", name="web", mac="52:54:00:c0:5e:02")
    site = load_site(site_file())
    specs, ports = load_server_ports(site)
    assert sorted(specs) == ["journal", "web"]
    assert ports["journal"].slot != ports["web"].slot
    assert find_server(site, "web").name == "web.toml"
    assert spec_names(site) == {"journal": specs["journal"].file, "web": specs["web"].file}


def test_two_servers_one_mac(site_file: SiteFile, servers: Servers) -> None:
    a = servers("a.toml", name="journal")
    b = servers("b.toml", name="web")
    site = load_site(site_file())
    with pytest.raises(SiteError) as err:
        load_servers(site)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(f"spec {b}: key nics[0].mac: 52:54:00:c0:5e:01 is also a NIC of 'journal' in {a}")


def test_two_servers_one_name(site_file: SiteFile, servers: Servers) -> None:
    a = servers("a.toml", name="journal")
    b = servers("b.toml", name="journal", mac="52:54:00:c0:5e:02")
    site = load_site(site_file())
    with pytest.raises(SiteError) as err:
        load_servers(site)
    assert str(err.value) == (f"spec {b}: key name: FT server 'journal' is also defined in {a}: "
                              "each server needs its own name")


def test_server_of_other_coservers(site_file: SiteFile, servers: Servers) -> None:
    path = servers("journal.toml")
    path.write_text(path.read_text().replace("cs2", "cs9"))
    with pytest.raises(SiteError, match=f"^spec {path}: key coservers: cs1, cs9 are not this site's CoServers"):
        load_servers(load_site(site_file()))


def test_bad_spec_is_its_one_line(site_file: SiteFile, servers: Servers) -> None:
    path = servers("journal.toml")
    path.write_text("colour = \"red\"\n" + path.read_text())
    with pytest.raises(SiteError, match=f"^spec {path}: key colour: unknown key"):
        load_servers(load_site(site_file()))


def test_missing_servers_dir(tmp_path: Path) -> None:
    site = load_site(EXAMPLE_SITE)
    with pytest.raises(SiteError, match="key servers_dir: no such directory /etc/coserver/servers"):
        load_servers(site)


# ---- ports --------------------------------------------------------------------------------

def _names(n: int, seed: int) -> list[str]:
    rnd = random.Random(seed)
    return sorted({rnd.choice(string.ascii_lowercase) + "".join(rnd.choices(string.ascii_lowercase + string.digits + "-",
                                                                            k=rnd.randint(0, 20))).rstrip("-")
                   for _ in range(n)})


def test_ports_deterministic_and_clash_free_or_refused() -> None:
    site = load_site(EXAMPLE_SITE)
    names = _names(50, seed=12)
    again = load_site(EXAMPLE_SITE)
    try:
        ports = allocate(site, names)
    except SiteError as exc:   # 50 names in 200 slots do collide sometimes: then it says who and how to fix
        assert "both get port slot" in str(exc) and "set [slots]" in str(exc)
        return
    assert ports == allocate(again, list(reversed(names)))
    used: set[int] = set()
    for p in ports.values():
        own = {p.mirror, p.compare, p.migration, p.nbd, p.heartbeat, p.control}
        assert len(own) == 6 and not own & used
        assert all(site.base_port <= x < site.base_port + HASH_SLOTS * STRIDE for x in own)
        used |= own
        assert isinstance(p.sync_ports(), SyncPorts)


def test_clash_free_50_names_with_slots_pinned(site_file: SiteFile) -> None:
    """Whatever the hash does, pinning resolves it: 50 names on 50 distinct slots never clash."""
    names = _names(60, seed=7)[:50]
    pins = "\n".join(f"{n} = {i}" for i, n in enumerate(names))
    site = load_site(site_file(("# journal = 0", pins)))
    ports = allocate(site, names)
    assert len({p.slot for p in ports.values()}) == 50
    assert all(p.pinned for p in ports.values())


def test_adding_a_server_moves_no_ports() -> None:
    site = load_site(EXAMPLE_SITE)
    before = allocate(site, ["journal"])
    after = allocate(site, ["journal", "web"])
    assert before["journal"] == after["journal"] == server_ports(site, "journal")
    assert hashed_slot("journal") == 94   # stable across runs, hosts and Pythons (sha256)


def test_slot_clash_names_both_and_says_set_slots(site_file: SiteFile) -> None:
    site = load_site(site_file(("# journal = 0", f"journal = {hashed_slot('web')}")))
    with pytest.raises(SiteError) as err:
        allocate(site, ["journal", "web"])
    msg = str(err.value)
    assert msg.startswith(f"site {site.file}: key slots: FT servers 'journal' (pinned in [slots]) and 'web' "
                          f"(by name hash) both get port slot {hashed_slot('web')}: set [slots] web =")
    assert "\n" not in msg


def test_two_hashed_names_on_one_slot() -> None:
    site = load_site(EXAMPLE_SITE)
    target = hashed_slot("a0")
    other = next(n for n in (f"s{i}" for i in range(10_000)) if hashed_slot(n) == target)
    with pytest.raises(SiteError, match=f"FT servers 'a0' \\(by name hash\\) and '{other}' \\(by name hash\\) "
                                        f"both get port slot {target}"):
        allocate(site, ["a0", other])


# ---- the pair key -------------------------------------------------------------------------

def test_keygen_writes_0600_exclusively(tmp_path: Path) -> None:
    path = tmp_path / "etc" / "pair.key"
    old = os.umask(0)
    try:
        write_key(path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    text = path.read_text()
    assert len(text) == 65 and text.endswith("\n")
    assert len(read_key(path)) == 32
    check_key(path)


def test_keygen_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "pair.key"
    write_key(path)
    first = path.read_bytes()
    with pytest.raises(KeyFileError, match=f"^key {path}: already exists; refusing to overwrite"):
        write_key(path)
    assert path.read_bytes() == first
    write_key(path, force=True)
    assert path.read_bytes() != first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    check_key(path)


def test_check_key_failures(tmp_path: Path) -> None:
    missing = tmp_path / "missing.key"
    with pytest.raises(KeyFileError, match=f"^key {missing}: missing; make it with `coserver site keygen`"):
        check_key(missing)
    wide = tmp_path / "wide.key"
    write_key(wide)
    wide.chmod(0o644)
    with pytest.raises(KeyFileError, match=f"^key {wide}: mode 0644, must be 0600"):
        check_key(wide)
    short = tmp_path / "short.key"
    fd = os.open(short, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"abcd\n")
    os.close(fd)
    with pytest.raises(KeyFileError, match=f"^key {short}: 5 bytes, not one or two lines of 64 lowercase hex digits"):
        check_key(short)
    folder = tmp_path / "dir.key"
    folder.mkdir(mode=0o600)
    with pytest.raises(KeyFileError, match="not a regular file"):
        check_key(folder)


def test_load_key_never_creates(tmp_path: Path) -> None:
    from coserver.controller.errors import HeartbeatError
    from coserver.controller.heartbeat import load_key

    path = tmp_path / "pair.key"
    with pytest.raises(HeartbeatError, match=f"^heartbeat key {path}: missing"):
        load_key(path)
    assert not path.exists()
    write_key(path)
    assert load_key(path) == read_key(path)


def test_a_controller_refuses_a_server_whose_mac_another_has(site_file: SiteFile, servers: Servers) -> None:
    """What one server's controller checks at start (controller_config_for): the clash is one line
    naming both files; a spec that does not load at all does not stop it (its own controller says why)."""
    from coserver.controller.errors import ConfigError
    from coserver.controller.siteconfig import controller_config_for

    a = servers("a.toml", name="journal")
    b = servers("b.toml", name="web")
    (a.parent / "broken.toml").write_text("name = \"broken\"\nthis is not toml\n")
    site = load_site(site_file())
    with pytest.raises(ConfigError) as err:
        controller_config_for(site, b, "cs1")
    assert str(err.value) == (f"spec {b}: key nics[0].mac: 52:54:00:c0:5e:01 is also a NIC of 'journal' in {a}: "
                              "each guest NIC needs its own MAC")
    b.write_text(b.read_text().replace("52:54:00:c0:5e:01", "52:54:00:c0:5e:02"))
    assert controller_config_for(site, b, "cs1").ftserver == "web"
