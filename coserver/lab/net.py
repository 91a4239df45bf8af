"""The one-machine lab's network: hosts as namespaces, two sync links, a client LAN, a witness.

```
   ns client ── veth ── br0 (ns lan) ── veth ── lanbr (ns cs1) ── tap0 ── QEMU cs1
                                    └── veth ── lanbr (ns cs2) ── tap0 ── QEMU cs2
   ns cs1 ══ sync1 (veth) ══ ns cs2     link 1: migration, NBD, colo-compare chardevs, heartbeats
   ns cs1 ══ sync2 (veth) ══ ns cs2     link 2: heartbeats (replication may move here)
   ns cs1 ── mgmt ── mgmtbr (ns witness) ── mgmt ── ns cs2       etcd for arbitration
```
Replication (the COLO migration stream, NBD, the proxy's chardevs) runs
between per-host *replication addresses* (a /32 on the host's loopback), routed over
link 1 (metric 10) with link 2 as the backup route (metric 20), as bonded
private links would be on real CoServers: when link 1 goes down its route
goes with it and the same TCP connections carry on over link 2, so one cut
link costs a retransmission, not a failover. Heartbeats are bound to each
link's device, so each link is watched on its own.
Each CoServer bridges its guest's tap to its own uplink into the LAN switch,
as a real host bridges the guest NIC to its LAN port. Every namespace name
carries the lab prefix, so two labs (or a test and a user's lab) never
collide; inside a namespace interface names can be short and fixed.
Addresses repeat between labs: namespaces keep them apart.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass

from coserver.errors import CoserverError
from coserver.sys import netns
from coserver.sys.run import run

HOSTS = ("cs1", "cs2")
LAN_SUBNET = "10.201.0"
SYNC_SUBNETS = {1: "10.201.1", 2: "10.201.2"}
MGMT_SUBNET = "10.201.3"
REPL_SUBNET = "10.201.9"
HOST_INDEX = {"cs1": 1, "cs2": 2}
GUEST_ADDRESS = f"{LAN_SUBNET}.10"
CLIENT_ADDRESS = f"{LAN_SUBNET}.100"
WITNESS_ADDRESS = f"{MGMT_SUBNET}.254"
TAP = "tap0"


class LabNetError(CoserverError):
    """The lab network could not be made or named."""


def valid_prefix(prefix: str) -> str:
    """Namespace names are <prefix>-<role>: keep them short, plain and ours."""
    if not prefix or len(prefix) > 12 or not prefix.replace("_", "").isalnum() or not prefix[0].isalpha():
        raise LabNetError(f"lab prefix {prefix!r}: 1-12 letters, digits or '_', starting with a letter")
    return prefix


@dataclass(frozen=True)
class LabNet:
    """Names and addresses of one lab's network."""

    prefix: str

    def ns(self, role: str) -> str:
        return f"{self.prefix}-{role}"

    @property
    def namespaces(self) -> list[str]:
        return [self.ns(r) for r in ("lan", "client", "witness", *HOSTS)]

    def sync_address(self, host: str, link: int) -> str:
        return f"{SYNC_SUBNETS[link]}.{HOST_INDEX[host]}"

    def repl_address(self, host: str) -> str:
        return f"{REPL_SUBNET}.{HOST_INDEX[host]}"

    def mgmt_address(self, host: str) -> str:
        return f"{MGMT_SUBNET}.{HOST_INDEX[host]}"

    @staticmethod
    def sync_ifname(link: int) -> str:
        return f"sync{link}"

    def existing(self) -> list[str]:
        return [n for n in netns.list_namespaces(f"{self.prefix}-") if n in self.namespaces]

    def create(self) -> None:
        """Make every namespace and link; on failure remove what was made."""
        busy = self.existing()
        if busy:
            raise LabNetError(f"lab prefix {self.prefix!r} is in use (namespaces {', '.join(busy)}); "
                              f"run `coserver lab down --prefix {self.prefix}` first")
        try:
            self._create()
        except BaseException:
            self.destroy()
            raise

    def _create(self) -> None:
        lan, client, witness = self.ns("lan"), self.ns("client"), self.ns("witness")
        for name in self.namespaces:
            netns.create(name)
            # IPv4 only: no IPv6 link-local chatter (router solicitations, MLD) from the hosts' bridges,
            # so a frame on a CoServer's LAN uplink is the guest's (uplink_frames)
            run(netns.exec_argv(name, ["sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1",
                                       "net.ipv6.conf.default.disable_ipv6=1"]),
                f"disabling IPv6 in {name}", timeout=10, error=LabNetError)
        # client LAN: a switch (bridge) in ns lan
        netns.add_bridge(lan, "br0")
        netns.add_veth(client, "eth0", lan, "client")
        netns.set_address(client, "eth0", f"{CLIENT_ADDRESS}/24")
        netns.set_master(lan, "client", "br0")
        # management network with the witness
        netns.add_bridge(witness, "mgmtbr", f"{WITNESS_ADDRESS}/24")
        for host in HOSTS:
            h = self.ns(host)
            # the guest NIC: tap0 on the host's own bridge, uplinked to the LAN switch
            netns.add_bridge(h, "lanbr")
            netns.add_tap(h, TAP, "lanbr")
            netns.add_veth(h, "lan", lan, host)
            netns.set_master(h, "lan", "lanbr")
            netns.set_master(lan, host, "br0")
            netns.add_veth(h, "mgmt", witness, host)
            netns.set_address(h, "mgmt", f"{self.mgmt_address(host)}/24")
            netns.set_master(witness, host, "mgmtbr")
        # the two sync links, point to point
        for link in SYNC_SUBNETS:
            ifname = self.sync_ifname(link)
            netns.add_veth(self.ns("cs1"), ifname, self.ns("cs2"), ifname)
            for host in HOSTS:
                netns.set_address(self.ns(host), ifname, f"{self.sync_address(host, link)}/24")
        for host in HOSTS:
            netns.ip("addr", "add", f"{self.repl_address(host)}/32", "dev", "lo", ns=self.ns(host))
            self.add_repl_routes(host)

    def add_repl_routes(self, host: str) -> None:
        """Routes to the peer's replication address: link 1 preferred, link 2 as backup.

        A route through a link that is down is refused by the kernel (and one
        that was there is flushed when the link goes down): skip those; they
        come back with heal."""
        peer = HOSTS[1 - HOSTS.index(host)]
        for link, metric in ((1, "10"), (2, "20")):
            if netns.link_is_up(self.ns(host), self.sync_ifname(link)):
                # src: connections to the peer start from our replication address too, so both
                # ends of every replication connection outlive the link they were opened on
                netns.ip("route", "replace", f"{self.repl_address(peer)}/32", "via",
                         self.sync_address(peer, link), "dev", self.sync_ifname(link), "metric", metric,
                         "src", self.repl_address(host), ns=self.ns(host))

    def destroy(self) -> None:
        """Remove every namespace of this lab (their links go with them). Idempotent."""
        for name in self.namespaces:
            netns.delete(name)

    def set_host_links(self, host: str, up: bool) -> None:
        """Every link of one CoServer at once, on its own end: both sync links, management and its LAN
        uplink (a power cut: its peer sees carrier loss, and nothing the dying host sends gets out)."""
        h = self.ns(host)
        for ifname in (*(self.sync_ifname(n) for n in SYNC_SUBNETS), "mgmt", "lan"):
            netns.link_up(h, ifname, up)
        if up:
            for each in HOSTS:
                self.add_repl_routes(each)

    def uplink_frames(self) -> dict[str, int]:
        """Frames the LAN switch has received from each CoServer's uplink so far. Only the guest that
        serves clients sends onto the LAN (a COLO secondary's output goes to the primary's compare,
        never to its tap), so from outside: two uplinks sending in one window = two guests serving."""
        out = {}
        for host in HOSTS:
            res = netns.ip("-s", "-j", "link", "show", "dev", host, ns=self.ns("lan"), check=False)
            try:
                out[host] = int(json.loads(res.stdout)[0]["stats64"]["rx"]["packets"])
            except (ValueError, LookupError, TypeError):
                out[host] = -1
        return out

    def switch_port(self, mac: str) -> str | None:
        """The LAN switch port (a CoServer's name, or "client") the switch sends frames for `mac` to
        now, None if it has not learnt it (it floods them then)."""
        res = subprocess.run(netns.exec_argv(self.ns("lan"), ["bridge", "-j", "fdb", "show", "br", "br0"]),
                             capture_output=True, text=True, timeout=10, check=False)
        try:
            entries = json.loads(res.stdout or "[]")
        except ValueError:
            return None
        return next((e.get("ifname") for e in entries if str(e.get("mac", "")).lower() == mac.lower()
                     and e.get("master") == "br0"), None)

    def set_sync_link(self, link: int, up: bool) -> None:
        """Cut or heal sync link N, on both ends (a pulled cable)."""
        if link not in SYNC_SUBNETS:
            raise LabNetError(f"sync link {link}: the lab has links {', '.join(map(str, SYNC_SUBNETS))}")
        for host in HOSTS:
            netns.link_up(self.ns(host), self.sync_ifname(link), up)
        if up:
            for host in HOSTS:
                self.add_repl_routes(host)
