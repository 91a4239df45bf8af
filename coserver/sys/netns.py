"""Network namespaces, veths, bridges and taps for the lab and the self-test (iproute2).

Every change goes through `ip` with an argv list; names come from the caller,
which prefixes them so two labs never collide. Linux caps interface names at
15 bytes: check_ifname() refuses longer ones with a clear error instead of
letting `ip` fail obscurely.

socket_in() opens a TCP connection from inside a namespace: the network
namespace is per thread, so a short-lived thread enters it (setns), makes the
socket and leaves; the socket stays bound to that namespace's stack and can
be used from any thread afterwards.
"""

from __future__ import annotations

import ctypes
import os
import socket
import subprocess
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from coserver.errors import CoserverError

T = TypeVar("T")

NETNS_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000
IFNAMSIZ = 15


class NetnsError(CoserverError):
    """A namespace or link operation failed."""


def check_ifname(name: str) -> str:
    if not name or len(name.encode()) > IFNAMSIZ or "/" in name or " " in name:
        raise NetnsError(f"interface name {name!r}: must be 1-{IFNAMSIZ} bytes without '/' or spaces")
    return name


def ip(*args: str, ns: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run `ip [-n ns] args...`; NetnsError with ip's own message on failure."""
    argv = ["ip"] + (["-n", ns] if ns else []) + list(args)
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        msg = (proc.stderr or proc.stdout).strip().splitlines()
        raise NetnsError(f"`{' '.join(argv)}` failed: {msg[-1] if msg else f'exit {proc.returncode}'}")
    return proc


def exec_argv(ns: str | None, argv: Sequence[str]) -> list[str]:
    """argv run inside namespace ns (`ip netns exec ns ...`), or argv itself when ns is None."""
    return ["ip", "netns", "exec", ns, *argv] if ns else list(argv)


def exists(ns: str) -> bool:
    return (NETNS_DIR / ns).exists()


def list_namespaces(prefix: str = "") -> list[str]:
    if not NETNS_DIR.is_dir():
        return []
    return sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(prefix))


def create(ns: str) -> None:
    """Make a namespace with loopback up."""
    ip("netns", "add", ns)
    ip("link", "set", "lo", "up", ns=ns)


def delete(ns: str) -> None:
    """Remove a namespace if it exists (its veths and taps go with it)."""
    if exists(ns):
        ip("netns", "delete", ns, check=False)


def add_bridge(ns: str, bridge: str, address: str | None = None) -> None:
    ip("link", "add", check_ifname(bridge), "type", "bridge", ns=ns)
    # No STP, no forwarding delay: a port forwards as soon as it is up.
    ip("link", "set", bridge, "type", "bridge", "stp_state", "0", "forward_delay", "0", ns=ns)
    if address:
        ip("addr", "add", address, "dev", bridge, ns=ns)
    ip("link", "set", bridge, "up", ns=ns)
    bridge_frames_skip_netfilter(ns)


#: Once br_netfilter is loaded on the machine (a libvirtd, docker, ...), every new namespace starts with
#: these at 1: frames a bridge forwards go through that namespace's iptables/arptables (and conntrack)
#: as if routed. A lab namespace's bridge is a switch; the per-bridge setting can only add to these.
BRIDGE_NF_SYSCTLS = ("net.bridge.bridge-nf-call-iptables", "net.bridge.bridge-nf-call-ip6tables",
                     "net.bridge.bridge-nf-call-arptables")


def bridge_frames_skip_netfilter(ns: str) -> None:
    """In namespace `ns` (one the lab made), bridged frames skip netfilter; nothing to do without br_netfilter."""
    if not Path("/proc/sys/net/bridge").is_dir():
        return
    for key in BRIDGE_NF_SYSCTLS:
        subprocess.run(exec_argv(ns, ["sysctl", "-q", "-w", f"{key}=0"]), capture_output=True, timeout=10,
                       check=False)


def add_tap(ns: str, tap: str, bridge: str | None = None) -> None:
    """A persistent tap for a QEMU NIC (QEMU opens it by name with script=no)."""
    ip("tuntap", "add", "dev", check_ifname(tap), "mode", "tap", "vnet_hdr", ns=ns)
    if bridge:
        ip("link", "set", tap, "master", bridge, ns=ns)
    ip("link", "set", tap, "up", ns=ns)


def ensure_tap(tap: str, bridge: str, ns: str | None = None) -> None:
    """The guest NIC's persistent tap, enslaved to `bridge` and up: made if missing, re-attached if it
    exists (a host reboot loses taps; a controller restart must not fail on one it made before).
    A missing bridge is one line naming it: the host's network is the operator's to make."""
    if ip("link", "show", "dev", check_ifname(bridge), ns=ns, check=False).returncode != 0:
        raise NetnsError(f"bridge {bridge}: no such interface on this host (the guest NIC's tap goes on it)")
    if ip("link", "show", "dev", check_ifname(tap), ns=ns, check=False).returncode != 0:
        ip("tuntap", "add", "dev", tap, "mode", "tap", "vnet_hdr", ns=ns)
    ip("link", "set", tap, "master", bridge, ns=ns)
    ip("link", "set", tap, "up", ns=ns)


def add_veth(ns_a: str, if_a: str, ns_b: str, if_b: str) -> None:
    """A veth pair with one end in each namespace (the peer is created straight in ns_b,
    so both ends may carry the same name)."""
    ip("link", "add", check_ifname(if_a), "type", "veth", "peer", "name", check_ifname(if_b), "netns", ns_b,
       ns=ns_a)


def set_address(ns: str, ifname: str, address: str) -> None:
    ip("addr", "add", address, "dev", ifname, ns=ns)
    ip("link", "set", ifname, "up", ns=ns)


def set_master(ns: str, ifname: str, bridge: str) -> None:
    ip("link", "set", ifname, "master", bridge, ns=ns)
    ip("link", "set", ifname, "up", ns=ns)


def link_up(ns: str, ifname: str, up: bool = True) -> None:
    ip("link", "set", ifname, "up" if up else "down", ns=ns)


def link_is_up(ns: str, ifname: str) -> bool:
    proc = ip("-o", "link", "show", ifname, ns=ns, check=False)
    return proc.returncode == 0 and ",UP" in proc.stdout.split(">")[0]


_libc = ctypes.CDLL(None, use_errno=True)


def run_in(ns: str, fn: Callable[..., T], *args: Any) -> T:
    """Run fn(*args) in a fresh thread that has entered namespace ns; return its result.

    A thread of its own because setns changes the calling thread for good: the
    caller's thread (an event loop, say) stays in its namespace."""
    result: dict[str, Any] = {}

    def body() -> None:
        try:
            with open(NETNS_DIR / ns) as f:
                if _libc.setns(f.fileno(), CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise NetnsError(f"setns into {ns}: {os.strerror(err)}")
            result["value"] = fn(*args)
        except BaseException as exc:  # re-raised in the caller's thread
            result["error"] = exc

    t = threading.Thread(target=body, name=f"netns-{ns}", daemon=True)
    t.start()
    t.join()
    if "error" in result:
        raise result["error"]
    value: T = result["value"]
    return value


def socket_in(ns: str | None, host: str, port: int, timeout: float = 5.0) -> socket.socket:
    """A TCP connection to host:port made from inside namespace ns (or here if ns is None)."""
    if ns is None:
        return socket.create_connection((host, port), timeout=timeout)
    return run_in(ns, socket.create_connection, (host, port), timeout)
