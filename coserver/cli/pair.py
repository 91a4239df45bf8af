"""`coserver pair reprotect|switchover` and `coserver host maintenance on|off`: the pair heals itself.

    coserver pair reprotect [--prefix P]        re-protect now (needed with --reprotect manual)
    coserver pair switchover [--prefix P]       move the primary role to the other CoServer, planned
    coserver host maintenance on|off --host H   take H out of the pair on purpose / bring it back

Each waits until the pair is protected again (or H is out) and prints how long
each phase took; progress of a disk re-sync is shown while it runs.
"""

from __future__ import annotations

import json
import time

import click

from coserver.lab.lab import DEFAULT_PREFIX, HOSTS, Lab, LabError

prefix_option = click.option("--prefix", default=DEFAULT_PREFIX, show_default=True, help="The lab's prefix.")
timeout_option = click.option("--timeout", type=float, default=300.0, show_default=True,
                              help="Seconds to wait for the pair to be protected again.")


def wait_protected(lab: Lab, timeout: float, say) -> dict:
    """Poll until protected; show re-sync progress; LabError after timeout."""
    t0, last = time.monotonic(), ""
    while time.monotonic() - t0 < timeout:
        st = lab.status()
        if st["state"] == "protected" and all(e.get("state") == "protected" for e in st["hosts"].values()):
            return st
        for e in st["hosts"].values():
            sync = e.get("sync")
            if sync and not sync.get("finished"):
                line = (f"sync {sync['percent']:5.1f}%  " + (f"{sync['rate_mib_s']} MiB/s  ETA {sync['eta_s']} s"
                                                             if sync["rate_mib_s"] else "starting"))
                if line != last:
                    say(line)
                    last = line
        time.sleep(0.2)
    raise LabError(f"the pair is not protected again after {timeout:.0f} s (state {lab.status()['state']})")


def _say(as_json: bool):
    return (lambda m: None) if as_json else (lambda m: click.echo(f"  .. {m}", err=True))


@click.group()
def pair() -> None:
    """The pair as a whole: re-protection and planned switchover."""


@pair.command("reprotect")
@prefix_option
@timeout_option
@click.option("--json", "as_json", is_flag=True)
def pair_reprotect(prefix: str, timeout: float, as_json: bool) -> None:
    """Bring the failed CoServer back as the secondary and re-enter COLO."""
    lab = Lab(prefix)
    st = lab.status()
    if st["state"] == "protected":
        raise LabError("pair reprotect: the FT server is already protected")
    lost = [h for h in HOSTS if st["hosts"].get(h, {}).get("role") in (None, "none")]
    if st["state"] != "simplex" or not lost:
        raise LabError(f"pair reprotect: needs one CoServer running the guest alone (state is {st['state']})")
    t0 = time.monotonic()
    lab.ask(lost[0], {"cmd": "rejoin"})
    done = wait_protected(lab, timeout, _say(as_json))
    out = {"ok": True, "primary": done["primary"], "secondary": done["secondary"],
           "seconds": round(time.monotonic() - t0, 2)}
    click.echo(json.dumps(out) if as_json else f"protected again in {out['seconds']} s: primary {out['primary']}, "
                                               f"secondary {out['secondary']}")


@pair.command("switchover")
@prefix_option
@timeout_option
@click.option("--json", "as_json", is_flag=True)
def pair_switchover(prefix: str, timeout: float, as_json: bool) -> None:
    """Move the primary role to the other CoServer on purpose (planned maintenance)."""
    lab = Lab(prefix)
    st = lab.status()
    if st["state"] != "protected":
        raise LabError(f"pair switchover: the FT server is {st['state']}, not protected")
    old_primary, new_primary = st["primary"], st["secondary"]
    t0 = time.monotonic()
    lab.ask(old_primary, {"cmd": "relinquish", "reason": "pair switchover"})
    while lab.status()["primary"] != new_primary or lab.status()["state"] not in ("simplex", "syncing", "protected"):
        if time.monotonic() - t0 > timeout:
            raise LabError(f"pair switchover: {new_primary} did not take over within {timeout:.0f} s")
        time.sleep(0.05)
    took_over = time.monotonic() - t0
    lab.ask(old_primary, {"cmd": "rejoin"})  # also under --reprotect manual: a switchover means "keep both"
    done = wait_protected(lab, timeout, _say(as_json))
    out = {"ok": True, "from": old_primary, "to": new_primary, "takeover_s": round(took_over, 2),
           "protected_s": round(time.monotonic() - t0, 2), "secondary": done["secondary"]}
    click.echo(json.dumps(out) if as_json else
               f"switchover {old_primary} -> {new_primary}: took over in {out['takeover_s']} s, protected again "
               f"(secondary {done['secondary']}) after {out['protected_s']} s")


@click.group()
def host() -> None:
    """One CoServer: maintenance mode."""


@host.command("maintenance")
@click.argument("mode", type=click.Choice(["on", "off"]))
@click.option("--host", "name", type=click.Choice(list(HOSTS)), required=True, help="The CoServer.")
@prefix_option
@timeout_option
@click.option("--json", "as_json", is_flag=True)
def host_maintenance(mode: str, name: str, prefix: str, timeout: float, as_json: bool) -> None:
    """Take a CoServer out of the pair on purpose (on), or bring it back and re-protect (off)."""
    lab = Lab(prefix)
    t0 = time.monotonic()
    lab.ask(name, {"cmd": "maintenance", "on": mode == "on"})
    if mode == "on":
        while True:
            st = lab.status()
            other = [h for h in HOSTS if h != name][0]
            if st["hosts"][name].get("role") == "none" and st["primary"] == other:
                break
            if time.monotonic() - t0 > timeout:
                raise LabError(f"maintenance on {name}: not out of the pair after {timeout:.0f} s")
            time.sleep(0.05)
        out = {"ok": True, "host": name, "maintenance": True, "primary": st["primary"], "state": st["state"],
               "seconds": round(time.monotonic() - t0, 2)}
        click.echo(json.dumps(out) if as_json else f"{name} is in maintenance; {st['primary']} runs the guest "
                                                   f"({st['state']}) after {out['seconds']} s")
        return
    done = wait_protected(lab, timeout, _say(as_json))
    out = {"ok": True, "host": name, "maintenance": False, "primary": done["primary"],
           "secondary": done["secondary"], "seconds": round(time.monotonic() - t0, 2)}
    click.echo(json.dumps(out) if as_json else f"{name} is back: protected again after {out['seconds']} s "
                                               f"(primary {done['primary']}, secondary {done['secondary']})")
