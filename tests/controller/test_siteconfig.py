"""A controller's configuration from the site file and the spec; the daemon's --site/--server path."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

import coserver.hardware
import coserver.site
from coserver.controller.config import ConfigError, ControllerConfig
from coserver.controller.daemon import main, parse_args, prepare_host, site_config
from coserver.controller.siteconfig import IFNAMSIZ, controller_config_for, tap_name
from coserver.site import load_site
from coserver.site.keygen import write_key
from coserver.site.pki import make_throwaway_pki
from coserver.site.ports import server_ports

EXAMPLE_SITE = Path(coserver.site.__file__).parent / "examples" / "site.toml"
EXAMPLE_SPEC = Path(coserver.hardware.__file__).parent / "examples" / "lab-journal.toml"


def _site(tmp_path: Path) -> Path:
    """The example site with servers_dir/key_file in tmp_path and the example spec installed."""
    text = EXAMPLE_SITE.read_text()
    text = text.replace('servers_dir = "/etc/coserver/servers"', f'servers_dir = "{tmp_path / "servers"}"')
    text = text.replace('key_file = "/etc/coserver/pair.key"', f'key_file = "{tmp_path / "pair.key"}"')
    text = text.replace('state_dir = "/var/lib/coserver"', f'state_dir = "{tmp_path / "state"}"')
    text = text.replace('run_dir = "/run/coserver"', f'run_dir = "{tmp_path / "run"}"')
    (tmp_path / "servers").mkdir()
    (tmp_path / "servers" / "journal.toml").write_text(EXAMPLE_SPEC.read_text())
    path = tmp_path / "site.toml"
    path.write_text(text)
    return path


def test_config_for_both_hosts_mirrored() -> None:
    site = load_site(EXAMPLE_SITE)
    c1 = controller_config_for(site, EXAMPLE_SPEC, "cs1")
    c2 = controller_config_for(site, EXAMPLE_SPEC, "cs2")
    assert isinstance(c1, ControllerConfig)
    assert (c1.host, c1.peer, c2.host, c2.peer) == ("cs1", "cs2", "cs2", "cs1")
    for a, b in zip(c1.links, c2.links, strict=True):
        assert a["local_ip"] == b["peer_ip"] and b["local_ip"] == a["peer_ip"]
        assert a["name"] == b["name"] and a["port"] == b["port"] == server_ports(site, "journal").heartbeat
    assert [ln["name"] for ln in c1.links] == ["sync1", "sync2"]
    assert [ln.get("device") for ln in c1.links] == ["eno2", "eno3"]
    assert c1.node["sync_addr"] == "172.31.9.1" and c1.peer_repl_addr == "172.31.9.2" == c2.node["sync_addr"]
    assert c1.sync_ports == c2.sync_ports == server_ports(site, "journal").sync_ports()
    control = server_ports(site, "journal").control
    assert c1.remote_control == {"address": "198.51.100.1", "port": control}
    assert c2.remote_control == {"address": "198.51.100.2", "port": control}
    # the site's keys, each host its own certificate ({host} in the site file)
    assert c1.witness == {"host": "198.51.100.21", "port": 2379, "site": "example", "ttl": 2,
                          "ca": "/etc/coserver/pki/cs1/ca-cert.pem", "cert": "/etc/coserver/pki/cs1/client-cert.pem",
                          "key": "/etc/coserver/pki/cs1/client-key.pem"}
    assert c2.witness["cert"] == "/etc/coserver/pki/cs2/client-cert.pem" and "insecure" not in c2.witness
    assert c1.ftserver == "journal" and c1.qemu_name == "journal"
    assert c1.qemu_workdir == "/var/lib/coserver/servers/journal"
    assert c1.control_socket == "/run/coserver/journal.sock"
    assert c1.journal_file.startswith("/var/lib/coserver/servers/journal/")
    assert c1.log_file.startswith("/var/lib/coserver/servers/journal/")
    assert c1.key_file == "/etc/coserver/pair.key"
    assert c1.node["mac"] == c2.node["mac"] == "52:54:00:c0:5e:01"
    assert c1.node["disk"].endswith("/lab/cs1/journal-data.qcow2")
    assert c2.node["disk"].endswith("/lab/cs2/journal-data.qcow2")
    assert c1.node["tap"] == "ft-journal" and c1.node.get("overlay_dir") == "/run/coserver/journal"
    assert (c1.accel, c1.reprotect, c1.checkpoint_ms, c1.spec) == ("kvm", "auto", 2000, str(EXAMPLE_SPEC))
    assert (c1.preferred, c2.preferred, c1.boot_grace_s, c1.stop_timeout_s) == (True, False, 20.0, 60.0)
    assert c1.colo_node().name == "cs1"
    # TLS between the QEMUs unless the site says insecure: each host's certificates, the peer admitted
    assert (c1.tls_dir, c2.tls_dir) == ("/etc/coserver/pki/cs1", "/etc/coserver/pki/cs2")
    tls = c1.colo_node().tls
    assert tls is not None and tls.directory == Path("/etc/coserver/pki/cs1") and tls.peer_dn == "CN=cs2"


def test_per_host_dirs_can_be_overridden(tmp_path: Path) -> None:
    """What the lab needs while its two hosts share one machine."""
    site = load_site(EXAMPLE_SITE)
    cfg = controller_config_for(site, EXAMPLE_SPEC, "cs2", state_dir=tmp_path / "cs2" / "state",
                                run_dir=tmp_path / "cs2" / "run", overlay_dir=tmp_path / "ov",
                                key_file=tmp_path / "k", accel="tcg")
    assert cfg.qemu_workdir == str(tmp_path / "cs2" / "state" / "servers" / "journal")
    assert cfg.control_socket == str(tmp_path / "cs2" / "run" / "journal.sock")
    assert cfg.node.get("overlay_dir") == str(tmp_path / "ov")
    assert (cfg.key_file, cfg.accel) == (str(tmp_path / "k"), "tcg")


def test_port_clash_with_another_server_stops_the_config() -> None:
    site = load_site(EXAMPLE_SITE)
    from coserver.site.ports import hashed_slot
    other = next(n for n in (f"s{i}" for i in range(10_000)) if hashed_slot(n) == hashed_slot("journal"))
    with pytest.raises(ConfigError, match="both get port slot"):
        controller_config_for(site, EXAMPLE_SPEC, "cs1", servers=[other])


def test_tap_names_fit_and_differ() -> None:
    assert tap_name("journal") == "ft-journal"
    long_a, long_b = "a-very-long-server-name-one", "a-very-long-server-name-two"
    assert len(tap_name(long_a)) <= IFNAMSIZ and len(tap_name(long_b)) <= IFNAMSIZ
    assert tap_name(long_a) != tap_name(long_b)
    assert re.fullmatch(r"[a-z0-9-]{1,15}", tap_name(long_a))


def test_daemon_site_config_builds_and_prepare_host_refuses_a_host_without_the_links(tmp_path: Path) -> None:
    """The example's link devices are not on this machine: one line naming the device and the site
    key (the host's network is the operator's to make), no traceback, and nothing made."""
    cfg = site_config(_site(tmp_path), "journal", "cs1")
    assert cfg.host == "cs1" and cfg.ftserver == "journal"
    device = cfg.links[0].get("device")
    assert device and not Path("/sys/class/net", device).exists()
    with pytest.raises(ConfigError, match=rf"^FT server journal: sync link sync1: no interface {device} on this "
                                          r"host \(site file key coservers.cs1.links\[0\].device\)$"):
        prepare_host(cfg)
    assert not (tmp_path / "state" / "servers" / "journal").exists()     # nothing made for a host that cannot run it


def test_daemon_args() -> None:
    args = parse_args(["--server", "journal", "--site", "/x.toml", "--host", "cs2"])
    assert (args.server, args.site, args.host, args.config) == ("journal", Path("/x.toml"), "cs2", None)
    with pytest.raises(SystemExit):
        parse_args(["--config", "/c.json", "--server", "journal"])
    with pytest.raises(SystemExit):
        parse_args(["--config", "/c.json", "--site", "/x.toml"])
    with pytest.raises(SystemExit):
        parse_args([])


def test_daemon_missing_site_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--server", "journal", "--site", str(tmp_path / "none.toml"), "--host", "cs1"]) == 1
    err = capsys.readouterr().err
    assert err == f"coserver-controller: error: site {tmp_path / 'none.toml'}: no such file\n"


def test_daemon_missing_key_is_one_line_and_not_created(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    site = _site(tmp_path)
    assert main(["--server", "journal", "--site", str(site), "--host", "cs1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"coserver-controller: error: heartbeat key {tmp_path / 'pair.key'}: missing")
    assert err.count("\n") == 1
    assert not (tmp_path / "pair.key").exists()


def test_daemon_unknown_server_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    site = _site(tmp_path)
    write_key(tmp_path / "pair.key")
    assert main(["--server", "web", "--site", str(site), "--host", "cs1"]) == 1
    assert capsys.readouterr().err == (f"coserver-controller: error: site {site}: no FT server 'web' in "
                                       f"{tmp_path / 'servers'} (servers: journal)\n")


def test_daemon_process_with_env_site(tmp_path: Path) -> None:
    """As the systemd unit runs it: --server only, the site from $COSERVER_SITE."""
    env = dict(os.environ, COSERVER_SITE=str(tmp_path / "missing.toml"))
    proc = subprocess.run([sys.executable, "-m", "coserver.controller.daemon", "--server", "journal"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr == f"coserver-controller: error: site {tmp_path / 'missing.toml'}: no such file\n"


def test_systemd_unit_runs_the_site_path() -> None:
    """The unit names the server only: the site file comes from the default path or $COSERVER_SITE."""
    unit = Path(__file__).parents[2] / "contrib" / "systemd" / "coserver-controller@.service"
    text = unit.read_text()
    (exec_start,) = [ln for ln in text.splitlines() if ln.startswith("ExecStart=")]
    assert exec_start.endswith("-m coserver.controller.daemon --server %i")
    assert "coserver site keygen" in text and "site.toml" in text and "--config" not in text


def test_never_two_primaries_numbers_come_from_the_site(tmp_path: Path) -> None:
    """lease_patience_s, fence_after_s, promote_margin_s: the site's, else the controller's defaults;
    a bad one is one line naming the key; a patience shorter than the lease is refused by the config."""
    base = EXAMPLE_SITE.read_text()
    path = tmp_path / "site.toml"
    path.write_text(base.replace('reprotect = "auto"', 'reprotect = "auto"\nlease_patience_s = 5\nfence_after_s = 0.5'))
    cfg = controller_config_for(load_site(path), EXAMPLE_SPEC, "cs1")
    assert (cfg.lease_patience_s, cfg.fence_after_s) == (5.0, 0.5)
    assert cfg.thresholds().fence_after == 0.5
    default = controller_config_for(load_site(EXAMPLE_SITE), EXAMPLE_SPEC, "cs1")
    assert default.promote_margin_s == ControllerConfig.promote_margin_s
    path.write_text(base.replace('reprotect = "auto"', 'reprotect = "auto"\nfence_after_s = "soon"'))
    with pytest.raises(coserver.site.SiteError, match=r'key fence_after_s: must be a number of seconds in \(0, 60\]'):
        load_site(path)
    path.write_text(base.replace('reprotect = "auto"', 'reprotect = "auto"\nlease_patience_s = 1'))
    with pytest.raises(ConfigError, match="lease_patience"):
        controller_config_for(load_site(path), EXAMPLE_SPEC, "cs1")


def test_fault_detection_timing_comes_from_the_site(tmp_path: Path) -> None:
    """A slow site (nested TCG) raises when a peer counts as lost and a QEMU as hung; the promotion's
    wait grows with the heartbeat timeout (never two primaries); relations that would call a healthy
    peer or QEMU dead are one line naming the site file and the key."""
    base = EXAMPLE_SITE.read_text()
    path = tmp_path / "site.toml"
    slow = "heartbeat_interval_s = 1\nheartbeat_timeout_s = 5\nqmp_deadline_s = 4\nkill_hung_after_s = 6"
    path.write_text(base.replace('reprotect = "auto"', f'reprotect = "auto"\n{slow}'))
    cfg = controller_config_for(load_site(path), EXAMPLE_SPEC, "cs1")
    assert (cfg.heartbeat_interval_s, cfg.heartbeat_timeout_s, cfg.qmp_deadline_s, cfg.kill_hung_after_s) == (1, 5, 4, 6)
    assert cfg.probe_deadline_s == 1.0
    th = cfg.thresholds()
    assert th.fence_bound > 5 and th.promote_wait > th.fence_bound   # a silent primary is fenced before
    assert th.replication_stall == 5.0     # a stalled stream is judged no sooner than a silent peer
    default = controller_config_for(load_site(EXAMPLE_SITE), EXAMPLE_SPEC, "cs1")
    assert (default.heartbeat_timeout_s, default.probe_deadline_s) == (1.0, 0.25)
    assert default.thresholds().replication_stall == 1.0
    for extra, key in (("heartbeat_interval_s = 1", "heartbeat_interval_s (1 s) must be shorter than heartbeat_timeout_s"),
                       ("kill_hung_after_s = 0.2", "kill_hung_after_s (0.2 s) must be longer than the health probe")):
        path.write_text(base.replace('reprotect = "auto"', f'reprotect = "auto"\n{extra}'))
        with pytest.raises(ConfigError) as err:
            controller_config_for(load_site(path), EXAMPLE_SPEC, "cs1")
        assert str(err.value).startswith(f"site file {path}: {key}"), err.value
        assert "\n" not in str(err.value)
    path.write_text(base.replace('reprotect = "auto"', 'reprotect = "auto"\nheartbeat_timeout_s = 0'))
    with pytest.raises(coserver.site.SiteError, match=r"key heartbeat_timeout_s: must be a number of seconds"):
        load_site(path)


def test_metrics_port_and_alert_command(tmp_path: Path) -> None:
    """Metrics: each server's slot port on the management address by default, 0 off, a fixed port for a
    site of one server; the alert command goes to the controller as its argv."""
    site = load_site(EXAMPLE_SITE)
    c1 = controller_config_for(site, EXAMPLE_SPEC, "cs1")
    assert c1.metrics == {"address": "198.51.100.1", "port": server_ports(site, "journal").metrics}
    assert server_ports(site, "journal").metrics == server_ports(site, "journal").control + 1
    assert c1.alert_command == []
    text = EXAMPLE_SITE.read_text()
    for line, metrics, command in (
            ("metrics_port = 0\nalert_command = [\"/usr/local/bin/notify\", \"--x\"]\n", {},
             ["/usr/local/bin/notify", "--x"]),
            ("metrics_port = 9188\n", {"address": "198.51.100.2", "port": 9188}, [])):
        path = tmp_path / "site.toml"
        path.write_text(line + text)
        c2 = controller_config_for(load_site(path), EXAMPLE_SPEC, "cs2")
        assert (c2.metrics, c2.alert_command) == (metrics, command)
    with pytest.raises(ConfigError, match=r"key metrics_port: a fixed port \(9188\) serves one FT server, "
                                          r"and the site has 2"):
        controller_config_for(load_site(path), EXAMPLE_SPEC, "cs2", servers=["journal", "web"])


def test_prepare_host_refuses_qemu_certificates_others_can_read_or_that_are_missing(tmp_path: Path) -> None:
    cfg = site_config(_site(tmp_path), "journal", "cs1")
    certs = make_throwaway_pki(tmp_path / "pki", {"cs1": ("172.31.9.1",)})["cs1"]
    here = replace(cfg, links=[{k: v for k, v in ln.items() if k != "device"} for ln in cfg.links],
                   node={k: v for k, v in cfg.node.items() if k != "bridge"}, tls_dir=str(certs))
    (certs / "client-key.pem").chmod(0o644)
    with pytest.raises(ConfigError, match=r"^FT server journal: TLS: .*client-key.pem"):
        prepare_host(here)
    (certs / "client-key.pem").chmod(0o600)
    (certs / "server-cert.pem").unlink()
    with pytest.raises(ConfigError, match=r"^FT server journal: TLS: .* lacks server-cert.pem \(make them with"):
        prepare_host(here)
    assert not (tmp_path / "state" / "servers" / "journal").exists()   # refused before anything was made


def test_only_a_lab_site_may_run_plain_tcp(tmp_path: Path) -> None:
    path = _site(tmp_path)
    path.write_text("insecure = true\n" + path.read_text())
    with pytest.raises(coserver.site.SiteError, match=r"key insecure: plain TCP between the QEMUs is for the "
                                                      r"one-machine lab only"):
        load_site(path)
    path.write_text(re.sub(r'(?m)^name = "[^"]*"', 'name = "lab-x"', path.read_text()))
    cfg = site_config(path, "journal", "cs1")
    assert cfg.tls_dir == "" and cfg.colo_node().tls is None


TLS_LINES = ('ca = "/etc/coserver/pki/{host}/ca-cert.pem"\ncert = "/etc/coserver/pki/{host}/client-cert.pem"\n'
             'key = "/etc/coserver/pki/{host}/client-key.pem"\n')


def test_a_site_without_witness_tls_is_refused_at_start_unless_it_says_insecure(tmp_path: Path) -> None:
    text = EXAMPLE_SITE.read_text()
    assert TLS_LINES in text
    path = tmp_path / "site.toml"
    path.write_text(text.replace(TLS_LINES, ""))
    with pytest.raises(ConfigError) as ei:
        controller_config_for(load_site(path), EXAMPLE_SPEC, "cs1")
    msg = str(ei.value)
    assert "\n" not in msg and msg.startswith(f"site {path}: key witness: no TLS")
    assert "coserver site certs" in msg and 'cert = "/etc/coserver/pki/{host}/client-cert.pem"' in msg
    assert "insecure = true" in msg
    path.write_text(text.replace(TLS_LINES, "insecure = true\n").replace('name = "example"', 'name = "lab-x"', 1))
    cfg = controller_config_for(load_site(path), EXAMPLE_SPEC, "cs1")
    assert cfg.witness == {"host": "198.51.100.21", "port": 2379, "site": "lab-x", "ttl": 2, "insecure": True}


def test_the_controller_config_itself_wants_tls_or_insecure(tmp_path: Path) -> None:
    """The --config JSON path too: a witness without TLS must say insecure, the site is needed."""
    good = controller_config_for(load_site(EXAMPLE_SITE), EXAMPLE_SPEC, "cs1")
    fields = {k: getattr(good, k) for k in good.__dataclass_fields__}
    for witness, why in (({"host": "h", "port": 1, "site": "s"}, "TLS .* or, explicitly, insecure"),
                         ({"host": "h", "port": 1, "insecure": True}, "host, port and site"),
                         ({"host": "h", "port": 1, "site": "s", "cert": "c", "key": "k"}, "go together"),
                         ({"host": "h", "port": 1, "site": "s", "ca": "a", "cert": "c", "key": "k", "insecure": True},
                          "exclude each other")):
        with pytest.raises(ConfigError, match=why):
            ControllerConfig(**(fields | {"witness": witness}))


def test_the_controller_refuses_unusable_witness_files_with_one_line(tmp_path: Path) -> None:
    """The daemon makes the Witness at start, which reads the files: a missing one or a key others can
    read stops it with one line (the files' own checks: tests/controller/test_witness_tls.py)."""
    from coserver.controller.daemon import HostController
    from coserver.controller.errors import WitnessError

    cfg = controller_config_for(load_site(EXAMPLE_SITE), EXAMPLE_SPEC, "cs1", state_dir=tmp_path / "state",
                                run_dir=tmp_path / "run", key_file=tmp_path / "pair.key")
    Path(cfg.qemu_workdir).mkdir(parents=True)
    with pytest.raises(WitnessError) as ei:
        HostController.from_config(cfg, key=b"k" * 32)
    assert str(ei.value) == ("witness 198.51.100.21:2379: TLS key /etc/coserver/pki/cs1/client-key.pem: "
                             "cannot read: No such file or directory")


def test_the_protect_order_comes_from_the_site(tmp_path: Path) -> None:
    """protect: live by default (the RAM copied with the guest running), stopped when the site says so."""
    assert controller_config_for(load_site(EXAMPLE_SITE), EXAMPLE_SPEC, "cs1").protect_order == "live"
    path = tmp_path / "site.toml"
    path.write_text(EXAMPLE_SITE.read_text().replace('protect = "live"', 'protect = "stopped"'))
    assert controller_config_for(load_site(path), EXAMPLE_SPEC, "cs1").protect_order == "stopped"
