"""The operator's client of one FT server's pair, over the controllers' control sockets.

It asks the controllers (controller.control) and polls until the pair is where
the operator wanted it: failed over, switched over, protected again, or with one
CoServer out for maintenance. It works for any site that can reach each host's
controller and summarise the pair (Site): the one-machine lab is one such site
(lab.Lab); a real pair of CoServers is another.

Errors are PairError, one line each, meant for the operator as they are.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

from coserver.controller.control import Command
from coserver.errors import CoserverError

Say = Callable[[str], None]


class PairError(CoserverError):
    """The pair did not do what was asked, or refused it."""


class Site(Protocol):
    """Where a pair runs: one request to a host's controller, and the pair's summary.

    status() returns at least {"state", "primary", "secondary", "hosts": {host: controller status}}.
    """

    def ask(self, host: str, request: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]: ...

    def status(self) -> dict[str, Any]: ...


def _quiet(_: str) -> None:
    pass


class PairClient:
    """One FT server's pair of CoServers `hosts` at `site`; `say` hears progress lines."""

    def __init__(self, site: Site, hosts: tuple[str, ...], say: Say = _quiet, *, poll_s: float = 0.05) -> None:
        self.site = site
        self.hosts = hosts
        self.say = say
        self.poll_s = poll_s

    def status(self) -> dict[str, Any]:
        return self.site.status()

    def wait_protected(self, timeout: float) -> dict[str, Any]:
        """Poll until protected; show re-sync progress; PairError after timeout."""
        t0, last = time.monotonic(), ""
        while time.monotonic() - t0 < timeout:
            st = self.site.status()
            if st["state"] == "protected" and all(e.get("state") == "protected" for e in st["hosts"].values()):
                return st
            for e in st["hosts"].values():
                sync = e.get("sync")
                if sync and not sync.get("finished"):
                    line = (f"sync {sync['percent']:5.1f}%  " + (f"{sync['rate_mib_s']} MiB/s  ETA {sync['eta_s']} s"
                                                                 if sync["rate_mib_s"] else "starting"))
                    if line != last:
                        self.say(line)
                        last = line
            time.sleep(0.2)
        raise PairError(f"the pair is not protected again after {timeout:.0f} s "
                        f"(state {self.site.status()['state']})")

    def failover(self, target: str | None, timeout: float) -> dict[str, Any]:
        """Manual failover: the primary stops its side, the secondary takes over; refused unless protected."""
        st = self.site.status()
        if st["state"] != "protected":
            raise PairError(f"failover: the FT server is {st['state']}, not protected; nothing to fail over to")
        primary, secondary = st["primary"], st["secondary"]
        if target == primary:
            raise PairError(f"failover --to {target}: {target} already runs the guest as primary")
        t0 = time.monotonic()
        self.site.ask(primary, {"cmd": Command.RELINQUISH, "reason": f"coserver failover --to {secondary}"})
        while time.monotonic() - t0 < timeout:
            now = self.site.status()
            if now["state"] == "simplex" and now["primary"] == secondary:
                return {"ok": True, "from": primary, "to": secondary, "seconds": round(time.monotonic() - t0, 2),
                        "state": now["state"]}
            time.sleep(2 * self.poll_s)
        raise PairError(f"failover {primary} -> {secondary}: {secondary} did not take over within {timeout:.0f} s")

    def reprotect(self, timeout: float) -> dict[str, Any]:
        """Bring the failed CoServer back as the secondary and re-enter COLO."""
        st = self.site.status()
        if st["state"] == "protected":
            raise PairError("pair reprotect: the FT server is already protected")
        lost = [h for h in self.hosts if st["hosts"].get(h, {}).get("role") in (None, "none")]
        if st["state"] != "simplex" or not lost:
            raise PairError(f"pair reprotect: needs one CoServer running the guest alone (state is {st['state']})")
        t0 = time.monotonic()
        self.site.ask(lost[0], {"cmd": Command.REJOIN})
        done = self.wait_protected(timeout)
        return {"ok": True, "primary": done["primary"], "secondary": done["secondary"],
                "seconds": round(time.monotonic() - t0, 2)}

    def switchover(self, timeout: float) -> dict[str, Any]:
        """Move the primary role to the other CoServer on purpose, then protect again."""
        st = self.site.status()
        if st["state"] != "protected":
            raise PairError(f"pair switchover: the FT server is {st['state']}, not protected")
        old_primary, new_primary = st["primary"], st["secondary"]
        t0 = time.monotonic()
        self.site.ask(old_primary, {"cmd": Command.RELINQUISH, "reason": "pair switchover"})
        while (self.site.status()["primary"] != new_primary
               or self.site.status()["state"] not in ("simplex", "syncing", "protected")):
            if time.monotonic() - t0 > timeout:
                raise PairError(f"pair switchover: {new_primary} did not take over within {timeout:.0f} s")
            time.sleep(self.poll_s)
        took_over = time.monotonic() - t0
        self.site.ask(old_primary, {"cmd": Command.REJOIN})  # also under --reprotect manual: "keep both"
        done = self.wait_protected(timeout)
        return {"ok": True, "from": old_primary, "to": new_primary, "takeover_s": round(took_over, 2),
                "protected_s": round(time.monotonic() - t0, 2), "secondary": done["secondary"]}

    def maintenance(self, host: str, on: bool, timeout: float) -> dict[str, Any]:
        """Take `host` out of the pair on purpose (on), or bring it back and re-protect (off).

        An FT server that runs nowhere (stopped) only records it: nothing to hand over, nothing to protect."""
        t0 = time.monotonic()
        idle = self.site.status()["primary"] is None
        self.site.ask(host, {"cmd": Command.MAINTENANCE, "on": on})
        if idle:
            st = self.site.status()
            return {"ok": True, "host": host, "maintenance": on, "primary": st["primary"], "state": st["state"],
                    "secondary": st["secondary"], "seconds": round(time.monotonic() - t0, 2)}
        if on:
            other = [h for h in self.hosts if h != host][0]
            while True:
                st = self.site.status()
                if st["hosts"][host].get("role") == "none" and st["primary"] == other:
                    break
                if time.monotonic() - t0 > timeout:
                    raise PairError(f"maintenance on {host}: not out of the pair after {timeout:.0f} s")
                time.sleep(self.poll_s)
            return {"ok": True, "host": host, "maintenance": True, "primary": st["primary"], "state": st["state"],
                    "seconds": round(time.monotonic() - t0, 2)}
        done = self.wait_protected(timeout)
        return {"ok": True, "host": host, "maintenance": False, "primary": done["primary"],
                "secondary": done["secondary"], "seconds": round(time.monotonic() - t0, 2)}

    def start(self, timeout: float) -> dict[str, Any]:
        """server start: both controllers want the FT server running; the right one starts the guest
        alone, the other joins as its secondary, and the pair protects itself. Returns once protected."""
        t0 = time.monotonic()
        for host in self.hosts:
            self.site.ask(host, {"cmd": Command.START, "reason": "server start"})
        done = self.wait_protected(timeout)
        return {"ok": True, "primary": done["primary"], "secondary": done["secondary"], "state": done["state"],
                "seconds": round(time.monotonic() - t0, 2)}

    def stop(self, timeout: float) -> dict[str, Any]:
        """server stop: the guest is shut down (ACPI power button, then a timeout), both sides stop and
        nobody fails over. Returns once neither CoServer runs a QEMU for it."""
        t0 = time.monotonic()
        for host in self.hosts:
            self.site.ask(host, {"cmd": Command.STOP, "reason": "server stop"})
        while True:
            st = self.site.status()
            hosts = st["hosts"].values()
            if all(e.get("state") == "stopped" and not e.get("qemu_alive") for e in hosts):
                return {"ok": True, "state": "stopped", "seconds": round(time.monotonic() - t0, 2),
                        "how": {h: (e.get("history") or [{}])[-1].get("reason") for h, e in st["hosts"].items()}}
            if time.monotonic() - t0 > timeout:
                raise PairError(f"server stop: not stopped after {timeout:.0f} s: " + ", ".join(
                    f"{h} {e.get('role')}/{e.get('state')}" for h, e in st["hosts"].items()))
            time.sleep(0.3)

    def enable(self, on: bool) -> dict[str, Any]:
        """server enable/disable: start the FT server when its hosts boot, or not."""
        replies = {host: self.site.ask(host, {"cmd": Command.ENABLE, "on": on}) for host in self.hosts}
        return {"ok": True, "enabled": on, "hosts": {h: r.get("enabled") for h, r in replies.items()}}

