"""`coserver site keygen|show|check`: JSON shapes, one-line errors, exit status. No peer, no QEMU run."""

from __future__ import annotations

import json
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

import coserver.site
from coserver.cli.main import main
from coserver.doctor.sitecheck import run_checks
from coserver.site import load_site
from coserver.site.keygen import write_key

EXAMPLE_SITE = Path(coserver.site.__file__).parent / "examples" / "site.toml"
SiteFile = Callable[..., Path]
Servers = Callable[..., Path]


def _run(*args: str) -> tuple[int, str, str]:
    res = CliRunner().invoke(main, list(args))
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    return res.exit_code, res.stdout, res.stderr


def test_check_example_site_as_cs1_fails_here_with_every_check() -> None:
    code, out, err = _run("site", "check", "--site", str(EXAMPLE_SITE), "--host", "cs1", "--json")
    assert code == 1, err
    assert "Traceback" not in out + err
    report = json.loads(out)
    assert report["result"] == "FAIL" and report["host"] == "cs1"
    names = [c["name"] for c in report["checks"]]
    assert names == ["site", "host", "link1 eno2", "link2 eno3", "replication", "management", "peer", "qemu", "key", "timing",
                     "witness 198.51.100.21:2379", "witness 198.51.100.22:2379", "witness 198.51.100.23:2379",
                     "witness tls", "servers"]
    by_name = {c["name"]: c for c in report["checks"]}
    assert by_name["site"]["ok"] and by_name["host"]["ok"]
    assert not by_name["link1 eno2"]["ok"] and "no interface eno2" in by_name["link1 eno2"]["detail"]
    assert not by_name["key"]["ok"]
    assert by_name["timing"]["ok"] and by_name["timing"]["detail"] == (
        "peer lost after 1 s unheard (a heartbeat every 0.2 s), a QEMU hung after 1.5 s without a QMP answer; "
        "a promotion waits 2 s (defaults)")
    # cs1's own certificate files are not on this machine (the {host} path, checked once the host is known)
    assert not by_name["witness tls"]["ok"]
    assert by_name["witness tls"]["detail"] == ("witness 198.51.100.21:2379: TLS key "
                                                "/etc/coserver/pki/cs1/client-key.pem: cannot read: No such file or "
                                                "directory")
    assert all(set(c) == {"name", "ok", "detail", "skipped"} and "\n" not in c["detail"] for c in report["checks"])
    # no controller runs here: the peer is not checked, and says so (never a silent pass)
    assert by_name["peer"]["skipped"] and by_name["peer"]["detail"].startswith("not checked: no controller runs")


def test_check_text_lines(site_file: SiteFile) -> None:
    code, out, _ = _run("site", "check", "--site", str(site_file()), "--host", "cs2")
    assert code == 1
    lines = out.splitlines()
    assert lines[0].startswith("ok   site ")
    assert all(ln.startswith(("ok   ", "FAIL ", "skip ")) for ln in lines[:-1])
    assert lines[-1] == "FAIL: site example on cs2 (peer not checked yet)"


def test_checks_pass_where_devices_addresses_key_and_servers_are_right(
        site_file: SiteFile, servers: Servers, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    servers("journal.toml")
    site = load_site(site_file())
    write_key(site.key_file)
    sys_net = tmp_path / "sys-class-net"
    for dev in ("eno2", "eno3"):
        (sys_net / dev).mkdir(parents=True)
    addrs = {"eno2": {"172.31.1.1"}, "eno3": {"172.31.2.1"}, "lo": {"172.31.9.1"}, "eth0": {"198.51.100.1"}}
    me, checks = run_checks(site, None, sys_net=sys_net, addresses=lambda: addrs, timeout=0.2)
    assert me == "cs1"
    by_name = {c.name: c for c in checks}
    for name in ("site", "host", "link1 eno2", "link2 eno3", "replication", "management", "key", "servers"):
        assert by_name[name].ok, by_name[name]
    assert "journal (slot 94: ports 8152-8157, metrics 8158)" in by_name["servers"].detail
    addrs["eno3"] = {"172.31.2.9"}
    _, checks = run_checks(site, "cs1", sys_net=sys_net, addresses=lambda: addrs, timeout=0.2)
    bad = {c.name: c for c in checks}["link2 eno3"]
    assert not bad.ok and bad.detail == "eno3 does not carry 172.31.2.1/24 (it has 172.31.2.9)"


def test_check_reports_the_sites_timing_and_refuses_a_conflict(site_file: SiteFile, tmp_path: Path) -> None:
    path = site_file()
    text = path.read_text()
    path.write_text(text.replace('name = ', 'heartbeat_timeout_s = 5\nqmp_deadline_s = 4\nkill_hung_after_s = 6\nname = ', 1))
    code, out, _ = _run("site", "check", "--site", str(path), "--host", "cs1", "--json")
    timing = {c["name"]: c for c in json.loads(out)["checks"]}["timing"]
    assert timing["ok"] and timing["detail"].startswith("peer lost after 5 s unheard"), timing
    assert "a promotion waits 6 s (site keys heartbeat_timeout_s, qmp_deadline_s, kill_hung_after_s)" in timing["detail"]
    path.write_text(text.replace('name = ', 'heartbeat_interval_s = 2\nname = ', 1))
    code, out, _ = _run("site", "check", "--site", str(path), "--host", "cs1")
    (line,) = [ln for ln in out.splitlines() if " timing " in ln]
    assert code == 1 and line.startswith("FAIL timing ") and "heartbeat_interval_s (2 s) must be shorter" in line


TLS_LINES = ('ca = "/etc/coserver/pki/{host}/ca-cert.pem"\ncert = "/etc/coserver/pki/{host}/client-cert.pem"\n'
             'key = "/etc/coserver/pki/{host}/client-key.pem"\n')


def test_check_refuses_a_witness_without_tls_unless_insecure(site_file: SiteFile) -> None:
    code, out, _ = _run("site", "check", "--site", str(site_file((TLS_LINES, ""))), "--host", "cs1")
    (line,) = [ln for ln in out.splitlines() if "witness tls" in ln]
    assert code == 1 and line.startswith("FAIL witness tls ") and "key witness: no TLS" in line
    assert "coserver site certs" in line and "insecure = true" in line
    _, out, _ = _run("site", "check", "--site", str(site_file((TLS_LINES, "insecure = true\n"),
                                                                   ('name = "example"', 'name = "lab-x"'))),
                     "--host", "cs1")
    (line,) = [ln for ln in out.splitlines() if "witness tls" in ln]
    assert line.startswith("ok   witness tls ") and "no authentication" in line


def test_unknown_host_when_no_address_matches(site_file: SiteFile) -> None:
    site = load_site(site_file())
    me, checks = run_checks(site, None, addresses=lambda: {"lo": {"127.0.0.1"}}, timeout=0.2)
    assert me is None
    host = {c.name: c for c in checks}["host"]
    assert not host.ok and "pass --host NAME" in host.detail


def test_keygen_and_show(site_file: SiteFile, servers: Servers, tmp_path: Path) -> None:
    servers("journal.toml")
    path = site_file()
    code, out, err = _run("site", "keygen", "--site", str(path))
    assert code == 0, err
    key = tmp_path / "keys" / "pair.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and f"wrote {key}" in out
    code, _, err = _run("site", "keygen", "--site", str(path))
    assert code == 1 and err.startswith(f"coserver: error: key {key}: already exists") and err.count("\n") == 1
    assert _run("site", "keygen", "--site", str(path), "--force")[0] == 0
    before = key.read_text()
    code, out, err = _run("site", "keygen", "--site", str(path), "--rotate")
    assert code == 0 and f"added a new current key to {key}" in out, err
    assert key.read_text().startswith(before) and len(key.read_text().splitlines()) == 2
    code, _, err = _run("site", "keygen", "--site", str(path), "--rotate", "--force")
    assert code == 1 and "exclude each other" in err and err.count("\n") == 1
    code, out, _ = _run("site", "show", "--site", str(path), "--json")
    assert code == 0
    shown = json.loads(out)
    assert shown["site"]["name"] == "example" and shown["site"]["preferred"] == "cs1"
    assert shown["site"]["coservers"]["cs2"]["links"][0]["local"] == "172.31.1.2"
    assert shown["servers"]["journal"]["ports"]["heartbeat"] == 8156 and shown["servers_error"] is None
    code, out, _ = _run("site", "show", "--site", str(path))
    assert code == 0 and "server journal" in out and "link1: eno2 172.31.1.1/24 -> peer 172.31.1.2" in out
    assert "(TLS, certificate /etc/coserver/pki/{host}/client-cert.pem)" in out
    assert shown["site"]["witness"]["insecure"] is False


def test_site_from_env(site_file: SiteFile, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COSERVER_SITE", str(site_file()))
    code, out, _ = _run("site", "show", "--json")
    assert code == 0 and json.loads(out)["site"]["name"] == "example"


@pytest.mark.parametrize("command", [["show"], ["check", "--host", "cs1"], ["keygen"]])
def test_bad_input_is_one_line(command: list[str], site_file: SiteFile, tmp_path: Path) -> None:
    missing = tmp_path / "none.toml"
    code, out, err = _run("site", *command, "--site", str(missing))
    assert (code, out, err) == (1, "", f"coserver: error: site {missing}: no such file\n")
    bad = tmp_path / "bad.toml"
    bad.write_text("[coservers\n")
    code, _, err = _run("site", *command, "--site", str(bad))
    assert code == 1 and err.startswith(f"coserver: error: site {bad}: not valid TOML") and err.count("\n") == 1
    unknown = site_file(("[witness]", "[witness]\ntimeout = 3"))
    code, _, err = _run("site", *command, "--site", str(unknown))
    assert code == 1 and err.startswith(f"coserver: error: site {unknown}: key witness.timeout: unknown key")


def test_check_unknown_host_is_bad_input() -> None:
    code, out, err = _run("site", "check", "--site", str(EXAMPLE_SITE), "--host", "cs9", "--json")
    assert (code, out) == (1, "")
    assert err == f"coserver: error: site {EXAMPLE_SITE}: 'cs9' is not one of its CoServers (cs1, cs2)\n"
