"""One FT server of a real site as the pair client's Site: its two controllers, local and peer.

The operator runs `coserver status|failover|switchover|reprotect ...` on either CoServer. The
controller of this host answers on its unix control socket (run_dir/NAME.sock); the peer's
answers over the management network (controller.remote: the peer's management address, the
server's control port, every message HMAC'd with the pair key from the site's key_file). On a
machine that is neither CoServer, both are asked over the management network.

A controller that does not answer is reported in status()["hosts"][host]["error"], never
raised: the pair is then summarised from the other one (pair.summary). ask() raises PairError,
one line naming the server, the host and why.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from coserver.controller import control, remote
from coserver.controller.errors import ControlError
from coserver.errors import CoserverError
from coserver.pair.client import PairError
from coserver.pair.summary import host_entry, summarize
from coserver.site import keygen
from coserver.site.model import Site
from coserver.site.ports import server_ports

#: Seconds a status request may take: short, since an unreachable peer is a normal case to report.
STATUS_TIMEOUT_S = 3.0


class SitePair:
    """The FT server `name` of `site`, seen from CoServer `me` (None: from neither, e.g. a workstation)."""

    def __init__(self, site: Site, name: str, me: str | None, *, key: bytes | None = None) -> None:
        if me is not None:
            site.coserver(me)
        self.site = site
        self.name = name
        self.me = me
        self.hosts: tuple[str, str] = site.hosts
        self.port = server_ports(site, name).control
        self._key = key

    @property
    def socket_path(self) -> Path:
        """This host's controller's control socket (controller.siteconfig names it alike)."""
        return self.site.run_dir / f"{self.name}.sock"

    def key(self) -> bytes:
        """The pair key (site key_file), read once; a missing or unsafe key is one line."""
        if self._key is None:
            keygen.check_key(self.site.key_file)
            self._key = keygen.read_key(self.site.key_file)
        return self._key

    def via(self, host: str) -> str:
        """How `host`'s controller is reached: its unix socket here, else management address:port."""
        if host == self.me:
            return str(self.socket_path)
        return f"{self.site.coserver(host).management}:{self.port}"

    def ask(self, host: str, request: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        """One request to `host`'s controller of this server; PairError (one line) if not answered ok."""
        cs = self.site.coserver(host)
        try:
            if host == self.me:
                return control.ask(self.socket_path, request, timeout)
            return remote.ask(cs.management, self.port, self.key(), request, timeout)
        except ControlError as exc:
            raise PairError(f"{self.name} on {host}: {exc}") from None
        except CoserverError as exc:   # the key file
            raise PairError(f"{self.name} on {host}: {exc}") from None

    def status(self) -> dict[str, Any]:
        """The pair's summary (as lab.Lab.status: state, primary, secondary, checkpoints, alert, hosts)."""
        hosts: dict[str, dict[str, Any]] = {}
        for host in self.hosts:
            entry: dict[str, Any] = {"role": None, "via": self.via(host)}
            try:
                entry.update(host_entry(self.ask(host, {"cmd": control.Command.STATUS}, STATUS_TIMEOUT_S)["status"]))
            except (PairError, KeyError, TypeError) as exc:
                entry["error"] = str(exc) if isinstance(exc, PairError) else f"{self.name} on {host}: bad status reply"
            hosts[host] = entry
        return {**summarize(hosts), "ftserver": self.name, "site": self.site.name, "here": self.me, "hosts": hosts}
