"""One FT server's pair, summarised from its two controllers' statuses: a pure function.

Both sites use it: the lab (lab.Lab.status) and a real pair of CoServers (pair.site.SitePair),
so `coserver status` means the same on both. A host whose controller did not answer has no
role: the pair is then whatever the other one says (simplex when it runs the guest alone).
"""

from __future__ import annotations

from typing import Any

#: What a controller's status contributes to the pair's per-host entry.
HOST_KEYS = ("ftserver", "role", "state", "epoch", "qemu_pid", "qemu_alive", "qemu_health", "qmp_ok", "colo", "qmp",
             "checkpoints", "last_checkpoint_age_s", "checkpoint_pause_ms", "controller_pid", "links",
             "peer", "witness", "decisions", "history", "colo_exit", "reprotect", "sync", "desired",
             "start_note", "alerts", "log", "journal", "identity", "io_errors", "quorum_bad", "pause_refused",
             "qemu_released")


def host_entry(status: dict[str, Any]) -> dict[str, Any]:
    """The per-host entry of a pair's summary, from that host's controller status."""
    return {k: status.get(k) for k in HOST_KEYS}


def alert(hosts: dict[str, Any]) -> str | None:
    """An alert-level condition a controller reports (e.g. "cannot protect: <reason>"), or None.

    The side without a guest speaks first: it started the failing secondaries and has their QEMU's
    own last words; the survivor only saw its replica go. Then a controller's own alerts (status
    "alerts": a journal or log it cannot write), named by host."""
    for entry in sorted(hosts.values(), key=lambda e: e.get("role") not in (None, "none")):
        text = (entry.get("reprotect") or {}).get("alert")
        if text:
            return str(text)
    for host, entry in hosts.items():   # a controller's own trouble: its journal or log cannot be written
        own = entry.get("alerts") or []
        if own:
            return f"{host}: {own[0]}"
    return None


def summarize(hosts: dict[str, dict[str, Any]], *, syncing: bool = False) -> dict[str, Any]:
    """{"state", "primary", "secondary", "checkpoints", "alert"} of a pair from its hosts' entries.

    state: syncing (also when `syncing`: the site knows a first sync runs), failing-over,
    protected (a primary and a secondary), simplex (the guest runs on one side alone) or stopped."""
    roles = {h: e.get("role") for h, e in hosts.items()}
    states = {h: e.get("state") for h, e in hosts.items()}
    primary = next((h for h, r in roles.items() if r in ("primary", "simplex")), None)
    secondary = next((h for h, r in roles.items() if r == "secondary"), None)
    if syncing or "syncing" in states.values():
        state = "syncing"
    elif "failing_over" in states.values():
        state = "failing-over"
    elif primary and secondary and roles[primary] == "primary":
        state = "protected"
    elif primary:
        state = "simplex"
    else:
        state = "stopped"
    checkpoints = hosts.get(primary or "", {}).get("checkpoints") or 0
    return {"state": state, "primary": primary, "secondary": secondary, "checkpoints": checkpoints,
            "alert": alert(hosts)}
