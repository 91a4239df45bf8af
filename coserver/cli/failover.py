"""`coserver failover [--to HOST]`: an operator's manual failover of a protected FT server.

The primary's controller stops its side (as if its QEMU had died) and releases
the witness; the secondary's controller then promotes itself through the same
path as an automatic failover. Refused unless the pair is protected: a manual
failover must never stop the only copy.
"""

from __future__ import annotations

import json
import time

import click

from coserver.lab.lab import DEFAULT_PREFIX, Lab, LabError


@click.command()
@click.option("--to", "target", type=click.Choice(["cs1", "cs2"]), default=None,
              help="The CoServer that should run the guest afterwards (default: the secondary).")
@click.option("--prefix", default=DEFAULT_PREFIX, show_default=True, help="The lab whose FT server to fail over.")
@click.option("--timeout", type=float, default=30.0, show_default=True, help="Seconds to wait for the takeover.")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
def failover(target: str | None, prefix: str, timeout: float, as_json: bool) -> None:
    """Move the FT server to the other CoServer now (manual failover)."""
    lab = Lab(prefix)
    st = lab.status()
    if st["state"] != "protected":
        raise LabError(f"failover: the FT server is {st['state']}, not protected; nothing to fail over to")
    primary, secondary = st["primary"], st["secondary"]
    if target == primary:
        raise LabError(f"failover --to {target}: {target} already runs the guest as primary")
    t0 = time.monotonic()
    lab.ask(primary, {"cmd": "relinquish", "reason": f"coserver failover --to {secondary}"})
    while time.monotonic() - t0 < timeout:
        now = lab.status()
        if now["state"] == "simplex" and now["primary"] == secondary:
            took = time.monotonic() - t0
            out = {"ok": True, "from": primary, "to": secondary, "seconds": round(took, 2), "state": now["state"]}
            click.echo(json.dumps(out) if as_json else f"failover {primary} -> {secondary} done in {took:.2f} s "
                                                       f"(now {now['state']})")
            return
        time.sleep(0.1)
    raise LabError(f"failover {primary} -> {secondary}: {secondary} did not take over within {timeout:.0f} s")
