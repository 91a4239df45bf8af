"""Is the peer the same kind of host as us? Same site file, same QEMU, same pair key.

Both controllers of a pair must run from the same site file (the same addresses, ports,
witness, policy) and the same QEMU (COLO's migration stream and its checkpoints are only
tested between identical builds), and must share the pair key. Each heartbeat carries its
sender's site digest and QEMU version (coserver.controller.heartbeat); a wrong key shows as
datagrams from the peer's address that all fail the MAC.

What the controller does with a difference:

* site file or QEMU differs: new protection is refused. Neither side starts a secondary for
  the other nor protects one (rejoin.next_move returns the refusal), and the status's
  `reprotect.alert` names both values. A pair that is already protected is NOT torn down:
  it keeps running as it runs; only the next (re-)protection waits until the hosts agree.
* the pair key differs: the peer is never heard (every heartbeat fails authentication),
  so it gets nothing from us: no protection with it (rejoin needs its authenticated
  state), no handover to it (relinquish and maintenance refuse without a heard, protected
  secondary). The failover policy does not change: unauthenticated datagrams are no
  evidence either way (anyone on the sync network can send them), so the local side keeps
  running what it runs (a running COLO pair stays up while its checkpoints flow; a
  simplex guest stays simplex), and anything more is arbitrated by the witness as for a
  lost peer. The status's `reprotect.alert` says the key differs, not "peer lost".
"""

from __future__ import annotations

import hashlib

from coserver import log
from coserver.controller.heartbeat import Heartbeat, Heartbeats
from coserver.paths import QemuNotFound, qemu_install

_log = log.get("peercheck")


def site_digest(data: bytes) -> str:
    """The short digest of a site file's bytes that heartbeats carry (16 hex digits of SHA-256)."""
    return hashlib.sha256(data).hexdigest()[:16]


def local_qemu_version() -> str:
    """This host's QEMU version, for the heartbeats (asked once, at start: qemu_install() is cached);
    "" if no QEMU is found (the controller then cannot start one either, and the peer check names it)."""
    try:
        return qemu_install().version
    except QemuNotFound as exc:
        _log.warning("peercheck.qemu.unknown", reason=str(exc))
        return ""


def _site_label(digest: str) -> str:
    return f"site {digest}" if digest else "no site file"


def identity_refusal(host: str, site: str, qemu_version: str,
                     peer: str, peer_site: str, peer_qemu_version: str) -> str | None:
    """Why this pair must not be protected, naming both hosts' values; None when they agree."""
    parts = []
    if site != peer_site:
        parts.append(f"site file differs between {host} ({_site_label(site)}) and {peer} "
                     f"({_site_label(peer_site)}): copy one site.toml to both hosts")
    if qemu_version != peer_qemu_version:
        parts.append(f"QEMU differs: {host} {qemu_version or 'unknown'}, {peer} {peer_qemu_version or 'unknown'}: "
                     "run the same QEMU on both hosts")
    if not parts:
        return None
    return "cannot protect: " + "; ".join(parts)


def key_refusal(failing: list[str], links: list[str], key_file: str) -> str | None:
    """The operator's line for heartbeats that fail authentication (Heartbeats.auth_failing()), or None."""
    if not failing:
        return None
    where = "on all links" if set(failing) >= set(links) else \
        f"on {', '.join(failing)} (nothing from it on {', '.join(sorted(set(links) - set(failing)))})"
    return (f"the peer's heartbeats fail authentication {where}: the pair key differs between the hosts "
            f"(copy {key_file} from one host to the other, mode 0600, then restart that host's controllers)")


def refusal(hb: Heartbeats, *, host: str, peer: str, key_file: str) -> str | None:
    """Why this controller must not protect with its peer now (key, site file or QEMU), or None.

    Looks only at the peer's authenticated state while it is heard: a stale view of a peer
    that went away refuses nothing (a restarted peer with the right files is judged anew)."""
    key = key_refusal(hb.auth_failing(), hb.link_names(), key_file)
    if key is not None:
        return key
    p: Heartbeat | None = hb.peer_state() if hb.peer_alive() else None
    if p is None:
        return None
    me = hb.local
    return identity_refusal(host, me.site, me.qemu_version, peer, p.site, p.qemu_version)
