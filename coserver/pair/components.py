"""The parts of one FT server's pair, each Good / Degraded / Failed / Offline with a reason: a pure function.

Why: an operator asks "what is broken?", not "what does each controller think?". From the pair's
summary (pair.summary / pair.site: state, primary, secondary, hosts[host] = that host's controller
status or {"error"}), this derives one line per part: each CoServer (its controller answers), each
sync link (heard from both ends), the witness (reachable from both), the FT server itself, and on
each host its copy of the guest and that copy's disk. `coserver status` prints them and
`coserver status --check` exits 2 naming the first that is not Good.

What cannot be judged is Offline, not Failed: a host whose controller does not answer cannot say
whether its links or its copy are fine. A server the operator stopped is Good ("stopped, as asked").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Health(StrEnum):
    GOOD = "good"
    DEGRADED = "degraded"
    FAILED = "failed"
    OFFLINE = "offline"


@dataclass(frozen=True)
class Component:
    """One part of the pair: kind (coserver, link, witness, ftserver, copy, disk), its name, health, why."""

    kind: str
    name: str
    health: Health
    reason: str

    def as_json(self) -> dict[str, str]:
        return {"kind": self.kind, "name": self.name, "health": self.health.value, "reason": self.reason}

    def line(self) -> str:
        return f"{self.kind} {self.name}: {self.health.value.upper()}: {self.reason}"


G, D, F, O = Health.GOOD, Health.DEGRADED, Health.FAILED, Health.OFFLINE


def _answering(hosts: Mapping[str, Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    return {h: e for h, e in hosts.items() if "error" not in e}


def _wants_run(hosts: Mapping[str, Mapping[str, Any]]) -> bool:
    """The operator wants the server running (either answering controller's recorded wish)."""
    return any((e.get("desired") or {}).get("run", True) for e in _answering(hosts).values())


def _coserver(host: str, entry: Mapping[str, Any]) -> Component:
    if "error" in entry:
        return Component("coserver", host, O, f"its controller does not answer: {entry['error']}")
    alerts = entry.get("alerts") or []
    if alerts:
        return Component("coserver", host, D, str(alerts[0]))
    return Component("coserver", host, G, "its controller answers")


def _links(hosts: Mapping[str, Mapping[str, Any]]) -> list[Component]:
    up = _answering(hosts)
    names = sorted({n for e in up.values() for n in (e.get("links") or {})})
    silent = sorted(set(hosts) - set(up))
    out = []
    for name in names:
        heard = {h: bool((e.get("links") or {}).get(name)) for h, e in up.items()}
        deaf = sorted(h for h, ok in heard.items() if not ok)
        if silent:
            out.append(Component("link", name, G if heard and not deaf else O,
                                 f"heard by {', '.join(sorted(heard))} ({', '.join(silent)} does not answer)"
                                 if not deaf else f"cannot be judged: {', '.join(silent)} does not answer"))
        elif not deaf:
            out.append(Component("link", name, G, "heartbeats heard at both ends"))
        elif len(deaf) == len(heard):
            out.append(Component("link", name, F, "no heartbeats heard at either end"))
        else:
            out.append(Component("link", name, D, f"heartbeats not heard by {', '.join(deaf)}"))
    return out


def _witness(hosts: Mapping[str, Mapping[str, Any]]) -> Component:
    up = _answering(hosts)
    if not up:
        return Component("witness", "witness", O, "no controller answers to say")
    blind = sorted(h for h, e in up.items() if not (e.get("witness") or {}).get("reachable"))
    if not blind:
        return Component("witness", "witness", G, f"reachable from {', '.join(sorted(up))}")
    if len(blind) == len(up):
        return Component("witness", "witness", F, f"unreachable from {', '.join(blind)}")
    return Component("witness", "witness", D, f"unreachable from {', '.join(blind)}")


def _last_reason(entry: Mapping[str, Any]) -> str:
    history = entry.get("history") or []
    return str(history[-1].get("reason", "")) if history else ""


def _copy(server: str, host: str, entry: Mapping[str, Any], wants_run: bool) -> Component:
    name = f"{server}@{host}"
    if "error" in entry:
        return Component("copy", name, O, "its controller does not answer")
    role, state, qemu = entry.get("role"), entry.get("state"), entry.get("qemu_health")
    if qemu in ("dead", "hung"):
        return Component("copy", name, F, f"QEMU {qemu}")
    if role in (None, "none"):
        if (entry.get("reprotect") or {}).get("maintenance"):
            return Component("copy", name, O, "in maintenance: out of the pair on purpose")
        if state == "fenced":
            return Component("copy", name, F, f"fenced: {_last_reason(entry)}")
        if not wants_run:
            return Component("copy", name, G, "stopped, as asked")
        if state == "starting":
            return Component("copy", name, D, "starting")
        why = (entry.get("reprotect") or {}).get("alert") or _last_reason(entry) or "none runs"
        return Component("copy", name, F, f"no copy runs here: {why}")
    if state == "syncing":
        sync = entry.get("sync") or {}
        done = f" ({sync['percent']:.0f}%)" if sync.get("percent") is not None else ""
        return Component("copy", name, D, f"{role}, syncing{done}")
    if state in ("failing_over", "degraded"):
        return Component("copy", name, D, f"{role}, {state.replace('_', ' ')}")
    return Component("copy", name, G, f"{role}, {state}")


def _disk(server: str, host: str, entry: Mapping[str, Any], copy: Component) -> Component:
    name = f"{server}@{host}"
    if "error" in entry:
        return Component("disk", name, O, "its controller does not answer")
    if entry.get("role") in (None, "none"):
        if copy.health == G:
            return Component("disk", name, G, "not in use (stopped, as asked)")
        return Component("disk", name, O, "no copy uses it")
    io_errors, quorum_bad = entry.get("io_errors") or 0, entry.get("quorum_bad") or 0
    if io_errors:
        return Component("disk", name, F, f"{io_errors} block I/O error(s) since the controller started")
    if quorum_bad:
        return Component("disk", name, D, f"{quorum_bad} replica mismatch report(s) (quorum)")
    if entry.get("role") == "secondary" and entry.get("state") == "syncing":
        return Component("disk", name, D, "receiving its first full copy")
    return Component("disk", name, G, "no I/O errors")


def _ftserver(server: str, summary: Mapping[str, Any], parts: list[Component], wants_run: bool) -> Component:
    hosts: Mapping[str, Mapping[str, Any]] = summary.get("hosts") or {}
    if not _answering(hosts):
        return Component("ftserver", server, O, "no controller answers")
    state = summary.get("state")
    if state == "protected":
        bad = [p for p in parts if p.health != G]
        if bad:
            return Component("ftserver", server, D, f"protected, but {bad[0].line()}")
        return Component("ftserver", server, G, f"protected: {summary.get('primary')} primary, "
                                                f"{summary.get('secondary')} secondary")
    if state == "syncing":
        return Component("ftserver", server, D, "not yet protected: a replica is being synced")
    if state == "failing-over":
        return Component("ftserver", server, D, "failing over")
    if state == "simplex":
        return Component("ftserver", server, D, f"runs on {summary.get('primary')} alone: no replica"
                         + (f" ({summary['alert']})" if summary.get("alert") else ""))
    if not wants_run:
        return Component("ftserver", server, G, "stopped, as asked")
    return Component("ftserver", server, F, "not running, though asked to run"
                     + (f": {summary['alert']}" if summary.get("alert") else ""))


def components(summary: Mapping[str, Any]) -> list[Component]:
    """Every part of the pair in `summary` (a pair's status: ftserver, state, primary, secondary, hosts),
    in a fixed order: CoServers, links, witness, the FT server, then each host's copy and disk."""
    hosts: Mapping[str, Mapping[str, Any]] = summary.get("hosts") or {}
    if not hosts:
        return []
    server = str(summary.get("ftserver") or "ftserver")
    wants = _wants_run(hosts)
    infra = [_coserver(h, hosts[h]) for h in sorted(hosts)] + _links(hosts) + [_witness(hosts)]
    copies: list[Component] = []
    for h in sorted(hosts):
        copy = _copy(server, h, hosts[h], wants)
        copies += [copy, _disk(server, h, hosts[h], copy)]
    return [*infra, _ftserver(server, summary, infra, wants), *copies]


def first_problem(parts: list[Component]) -> Component | None:
    """The first part that is not Good (the order of components(): the infrastructure first)."""
    return next((p for p in parts if p.health != G), None)
