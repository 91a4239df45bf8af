"""The site file: the example loads; every kind of bad input is one line naming the file and the key."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

import coserver.site
from coserver.site import SiteError, load_site, site_path
from coserver.site.local import find_host

EXAMPLE_SITE = Path(coserver.site.__file__).parent / "examples" / "site.toml"

SiteFile = Callable[..., Path]
TLS_CA = 'ca = "/etc/coserver/pki/{host}/ca-cert.pem"'


def test_the_example_site_loads() -> None:
    site = load_site(EXAMPLE_SITE)
    assert site.name == "example" and site.preferred == "cs1"
    assert list(site.coservers) == ["cs1", "cs2"]
    assert len(site.witness.endpoints) == 3
    cs1, cs2 = site.coserver("cs1"), site.coserver("cs2")
    for i in range(2):
        assert cs1.links[i].local == cs2.links[i].peer and cs2.links[i].local == cs1.links[i].peer
    assert site.peer_of("cs1") is cs2 and site.peer_of("cs2") is cs1
    assert site.servers_dir == Path("/etc/coserver/servers") and site.state_dir == Path("/var/lib/coserver")
    assert site.run_dir == Path("/run/coserver") and site.key_file == Path("/etc/coserver/pair.key")
    assert site.base_port == 7400 and site.checkpoint_ms == 2000 and site.reprotect == "auto"
    assert cs1.bridge == "br-lan"
    assert site.witness.hosts()[0] == ("198.51.100.21", 2379)
    # each host its own TLS files: {host} is replaced by the CoServer's name (checked where it is known)
    assert site.witness.tls_files("cs2") == (Path("/etc/coserver/pki/cs2/ca-cert.pem"),
                                             Path("/etc/coserver/pki/cs2/client-cert.pem"),
                                             Path("/etc/coserver/pki/cs2/client-key.pem"))
    assert site.witness_tls("cs1") == site.witness.tls_files("cs1") and not site.witness.insecure


def test_witness_tls_or_insecure(site_file: SiteFile, tmp_path: Path) -> None:
    """Without TLS the file loads (`site show`, `site certs` work), but the files a host uses are
    refused with the fix unless the file says insecure = true; literal paths are checked to exist."""
    tls = site_file().read_text().split("[witness]")[1].split("\n[")[0]
    lines = [ln for ln in tls.splitlines() if ln.startswith(("ca =", "cert =", "key ="))]
    assert len(lines) == 3
    plain = site_file(*((ln, "") for ln in lines))
    site = load_site(plain)
    assert site.witness.tls_files("cs1") is None and not site.witness.insecure
    with pytest.raises(SiteError, match=r"key witness: no TLS: .*coserver site certs.* only a lab site "
                                        r"\(lab-\*\) may say insecure = true") as ei:
        site.witness_tls("cs1")
    assert "\n" not in str(ei.value)
    insecure = site_file(*((ln, "") for ln in lines[1:]), (lines[0], "insecure = true"))
    with pytest.raises(SiteError, match=r"key witness.insecure: plain http to the witness is for the "
                                        r"one-machine lab only"):
        load_site(insecure)   # a real site never runs its witness without TLS
    insecure = site_file(*((ln, "") for ln in lines[1:]), (lines[0], "insecure = true"),
                         ('name = "example"', 'name = "lab-x"'))
    assert load_site(insecure).witness_tls("cs1") is None and load_site(insecure).witness.insecure
    for name in ("ca.pem", "cs.pem", "cs.key"):
        (tmp_path / name).write_text("x")
    literal = site_file(*((ln, f'{ln.split(" ")[0]} = "{tmp_path / f}"')
                          for ln, f in zip(lines, ("ca.pem", "cs.pem", "cs.key"), strict=True)))
    assert load_site(literal).witness_tls("cs2") == (tmp_path / "ca.pem", tmp_path / "cs.pem", tmp_path / "cs.key")


def test_site_path_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("COSERVER_SITE", raising=False)
    assert site_path(None) == Path("/etc/coserver/site.toml")
    monkeypatch.setenv("COSERVER_SITE", str(tmp_path / "env.toml"))
    assert site_path(None) == tmp_path / "env.toml"
    assert site_path(tmp_path / "x.toml") == tmp_path / "x.toml"


def test_unknown_host_is_one_line() -> None:
    site = load_site(EXAMPLE_SITE)
    with pytest.raises(SiteError, match="'cs9' is not one of its CoServers"):
        site.peer_of("cs9")


def test_find_host_by_address() -> None:
    site = load_site(EXAMPLE_SITE)
    assert find_host(site, {"127.0.0.1", "172.31.2.2"}) == "cs2"
    assert find_host(site, {"127.0.0.1"}) is None
    with pytest.raises(SiteError, match="both cs1 and cs2"):
        find_host(site, {"198.51.100.1", "198.51.100.2"})


BAD = {
    "unknown key": ((('reprotect = "auto"', 'reprotect = "auto"\ncheckpoint_msec = 100'),),
                    "key checkpoint_msec: unknown key"),
    "unknown key in a link": ((('device = "eno2"', 'device = "eno2"\nmtu = 9000'),),
                              "key coservers.cs1.links[0].mtu: unknown key"),
    "wrong type": ((("base_port = 7400", 'base_port = "7400"'),), 'key base_port: must be an integer'),
    "wrong type reprotect": ((('reprotect = "auto"', 'reprotect = "sometimes"'),),
                             "key reprotect: must be one of auto, manual"),
    "unknown protect order": ((('protect = "live"', 'protect = "fast"'),),
                              "key protect: must be one of live, stopped"),
    "missing key": ((('preferred = "cs1"', ""),), "key preferred: required key is missing"),
    "bad IP": ((('management = "198.51.100.1"', 'management = "198.51.100.300"'),),
               'key coservers.cs1.management: must be an IP address like 10.0.1.1, got "198.51.100.300"'),
    "bad link address": ((('local = "172.31.1.1/24"', 'local = "172.31.1.x/24"'),),
                         "key coservers.cs1.links[0].local: must be an IP address"),
    "bad device name": ((('device = "eno2"', 'device = "eno2/../eth0"'),),
                        "key coservers.cs1.links[0].device: must be a Linux interface name"),
    "too long device name": ((('device = "eno2"', 'device = "abcdefghijklmnopq"'),),
                             "key coservers.cs1.links[0].device: must be a Linux interface name"),
    "missing link": ((("[[coservers.cs2.links]]\ndevice = \"eno3\"", "[coservers.cs2.nolink]\ndevice = \"eno3\""),),
                     "key coservers.cs2.links: must be exactly two sync links ([[coservers.cs2.links]]), got 1"),
    "peer outside the link's subnet": ((('peer = "172.31.1.2"', 'peer = "172.31.7.2"'),),
                                       "key coservers.cs1.links[0].peer: 172.31.7.2 is not in the link's subnet"),
    "mismatched link peer": ((('local = "172.31.1.2/24"', 'local = "172.31.1.3/24"'),),
                             "key coservers.cs1.links[0].peer: 172.31.1.2 is not cs2's local address of link 1"),
    "both links one subnet": ((('local = "172.31.2.1/24"\npeer = "172.31.2.2"', 'local = "172.31.1.5/24"\n'
                                'peer = "172.31.1.6"'),), "key coservers.cs1.links[1].local: subnet 172.31.1.0/24 "
                                                           "overlaps link 1's"),
    "both links one device": ((('device = "eno3"', 'device = "eno2"'),),
                              "key coservers.cs1.links[1].device: both links use device eno2"),
    "duplicate address": ((('management = "198.51.100.2"', 'management = "198.51.100.1"'),),
                          "198.51.100.1 is used by both cs1 and cs2"),
    "management on a link": ((('management = "198.51.100.1"', 'management = "172.31.1.1"'),),
                             "key coservers.cs1.management: 172.31.1.1 is a sync link's address"),
    "preferred unknown": ((('preferred = "cs1"', 'preferred = "cs3"'),),
                          'key preferred: must be one of the two CoServers (cs1, cs2), got "cs3"'),
    "bad witness endpoint": ((('"198.51.100.21:2379"', '"198.51.100.21"'),),
                             "key witness.endpoints: element 0 must be \"host:port\""),
    "missing TLS file": (((TLS_CA, 'ca = "/nonexistent/ca.pem"'),),
                         'key witness.ca: no such file "/nonexistent/ca.pem"'),
    "TLS files not all three": (((TLS_CA, ""),), "key witness.ca: ca, cert and key go together"),
    "TLS and insecure": ((("[witness]", "[witness]\ninsecure = true"),),
                         "key witness.insecure: insecure = true and TLS files (ca, cert, key) exclude each other"),
    "insecure not a boolean": (((TLS_CA + "\ncert", 'insecure = "yes"\n#cert'), ("key = ", "#key = ")),
                               "key witness.insecure: must be true or false"),
    "other placeholder": (((TLS_CA, 'ca = "/etc/coserver/pki/{site}/ca-cert.pem"'),),
                          "key witness.ca: only {host} (this CoServer's name) may be substituted"),
    "relative TLS path": (((TLS_CA, 'ca = "pki/{host}/ca-cert.pem"'),), "key witness.ca: must be an absolute path"),
    "relative path": ((('state_dir = "/var/lib/coserver"', 'state_dir = "var/lib"'),),
                      "key state_dir: must be an absolute path"),
    "slot out of range": ((("# journal = 0", "journal = 99999"),), "key slots.journal: must be an integer from 0"),
    "privileged metrics port": ((("# metrics_port = 0 ", "metrics_port = 80 "),),
                                "key metrics_port: must be 0 (off) or a port from 1024 to 65535, got 80"),
    "metrics port a string": ((("# metrics_port = 0 ", 'metrics_port = "9100" '),),
                              "key metrics_port: must be an integer from 0 to 65535"),
    "alert command a shell string": ((("# alert_command = [", 'alert_command = "notify --x" # ['),),
                                     "key alert_command: must be a non-empty array of non-empty strings"),
    "alert command relative": ((("# alert_command = [", 'alert_command = ["notify"] # ['),),
                               'key alert_command: its program must be an absolute path, got "notify"'),
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_bad_site_is_one_line_naming_file_and_key(kind: str, site_file: SiteFile) -> None:
    edits, expected = BAD[kind]
    path = site_file(*edits)
    with pytest.raises(SiteError) as err:
        load_site(path)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"site {path}: ")
    assert expected in message, message
    assert "key " in message


def test_three_coservers(site_file: SiteFile) -> None:
    path = site_file(append='\n[coservers.cs3]\nmanagement = "198.51.100.3"\nreplication = "172.31.9.3"\n')
    with pytest.raises(SiteError, match=r"key coservers: must define exactly two CoServers .* got 3: cs1, cs2, cs3"):
        load_site(path)


def test_one_link_only(site_file: SiteFile, tmp_path: Path) -> None:
    text = site_file().read_text()
    head, _, rest = text.partition("[[coservers.cs2.links]]")
    second = rest.index("[[coservers.cs2.links]]")
    path = tmp_path / "one-link.toml"
    path.write_text(head + "[[coservers.cs2.links]]" + rest[:second])
    with pytest.raises(SiteError, match=r"key coservers.cs2.links: must be exactly two sync links .* got 1"):
        load_site(path)


def test_missing_file_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(SiteError, match=f"^site {tmp_path}/none.toml: no such file$"):
        load_site(tmp_path / "none.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("name = \n")
    with pytest.raises(SiteError, match=f"^site {bad}: not valid TOML"):
        load_site(bad)


def test_long_values_are_truncated(site_file: SiteFile) -> None:
    path = site_file(('name = "example"', f'name = "{"x" * 500}"'))
    with pytest.raises(SiteError) as err:
        load_site(path)
    assert "(500 characters)" in str(err.value) and len(str(err.value)) < 400
