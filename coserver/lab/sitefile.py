"""The lab as a site: the site file, the pair's key and the FT server specs each lab host gets.

`lab up` writes into each host's private /etc/coserver (lab.hostexec) what an operator puts on
two real CoServers by hand: the same site.toml (the hosts' addresses and sync links from the
lab network, the witness, the preferred host), the same pair key (made like `coserver site
keygen` does, copied to the peer), each FT server's spec in servers/, and (lab.witness) the
host's own certificates in pki/<host>/. The controllers then read only these, through the site
path a real host runs.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import replace
from pathlib import Path

from coserver.errors import CoserverError
from coserver.hardware.spec import load_spec
from coserver.lab.net import HOSTS, WITNESS_ADDRESS, LabNet
from coserver.site.keygen import write_key
from coserver.site.model import DEFAULT_WITNESS_TLS, LAB_SITE_PREFIX

SITE_FILE = "site.toml"
KEY_FILE = "pair.key"
SERVERS_DIR = "servers"
LAN_BRIDGE = "lanbr"
WITNESS_PORT = 2379


class LabSiteError(CoserverError):
    """The lab's site could not be written (a spec that cannot be installed as it is)."""


def site_name(prefix: str) -> str:
    """The site's name for a lab prefix ([a-z0-9-] as site names must be)."""
    return LAB_SITE_PREFIX + re.sub(r"[^a-z0-9-]", "-", prefix.lower())


def site_text(net: LabNet, *, checkpoint_ms: int, reprotect: str, accel: str, boot_grace_s: float,
              stop_timeout_s: float, sync_speed_mib_s: int, alert_command: tuple[str, ...] = (),
              insecure: bool = False, protect: str = "live", backend: str = "qemu") -> str:
    """The lab's site.toml (the same on both hosts): the QEMUs and the witness over TLS with each
    host's own certificates (/etc/coserver/pki/<host>/, as on a real site), or (insecure) plain TCP
    between the QEMUs and plain http to the witness."""
    witness = (["insecure = true   # `lab up --insecure`: plain http, no authentication"] if insecure
               else [f'{k} = "{v}"' for k, v in DEFAULT_WITNESS_TLS.items()])
    lines = [
        "# Written by `coserver lab up`: the lab's two CoServers as a site (the same file on both).",
        f'name = "{site_name(net.prefix)}"',
        f'preferred = "{HOSTS[0]}"',
        f"checkpoint_ms = {checkpoint_ms}",
        f'reprotect = "{reprotect}"',
        f'accel = "{accel}"',
        f"boot_grace_s = {max(0, round(boot_grace_s))}",
        f"stop_timeout_s = {max(1, round(stop_timeout_s))}",
        f"sync_speed_mib_s = {sync_speed_mib_s}",
        f'protect = "{protect}"',
        f'backend = "{backend}"',
        *([f"alert_command = {json.dumps(list(alert_command))}"] if alert_command else []),
        *(["insecure = true   # `lab up --insecure`: plain TCP between the QEMUs"] if insecure else []),
        "",
        "[witness]",
        f'endpoints = ["{WITNESS_ADDRESS}:{WITNESS_PORT}"]',
        *witness,
    ]
    for host in HOSTS:
        peer = HOSTS[1 - HOSTS.index(host)]
        lines += ["", f"[coservers.{host}]", f'management = "{net.mgmt_address(host)}"',
                  f'replication = "{net.repl_address(host)}"', f'bridge = "{LAN_BRIDGE}"']
        for link in (1, 2):
            lines += [f"[[coservers.{host}.links]]", f'device = "{net.sync_ifname(link)}"',
                      f'local = "{net.sync_address(host, link)}/24"', f'peer = "{net.sync_address(peer, link)}"']
    return "\n".join(lines) + "\n"


def install_site(etc_dirs: dict[str, Path], text: str) -> None:
    """The same site file and one new pair key on every host (the key made once, copied: 0600)."""
    first = etc_dirs[HOSTS[0]] / KEY_FILE
    first.unlink(missing_ok=True)   # a new pair: a new key
    write_key(first)
    for host, etc in etc_dirs.items():
        (etc / SERVERS_DIR).mkdir(mode=0o755, exist_ok=True)
        (etc / SITE_FILE).write_text(text)
        if host != HOSTS[0]:
            key = etc / KEY_FILE
            key.unlink(missing_ok=True)
            shutil.copyfile(first, key)
            key.chmod(0o600)


def install_spec(etc_dirs: dict[str, Path], spec_path: Path) -> Path:
    """Copy an FT server spec into every host's servers dir as <name>.toml; return cs1's copy.

    A spec with relative paths means something else once copied: refused, with the fix."""
    original = load_spec(spec_path)
    copy = etc_dirs[HOSTS[0]] / SERVERS_DIR / f"{original.name}.toml"
    text = spec_path.read_text()
    for etc in etc_dirs.values():
        (etc / SERVERS_DIR / f"{original.name}.toml").write_text(text)
    if replace(load_spec(copy), file=original.file) != original:
        raise LabSiteError(f"spec {spec_path}: uses paths relative to its directory; the lab installs a copy "
                           "in each host's /etc/coserver/servers: give absolute paths")
    return copy
