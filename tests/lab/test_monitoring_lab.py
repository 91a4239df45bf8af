"""Operators see it (issue 18), on the lab: a real Prometheus (Debian's package, in the witness's
namespace on the management network) scrapes both controllers; the site's alert hook hears every
state change within a second; `coserver status --check` fails while a sync link is cut; the status
page, drawn by a real headless Chromium, shows the new primary after the failover and the cut link."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import pytest

from coserver.lab import net as labnet
from coserver.lab.lab import Lab, LabOptions
from coserver.pair.webcheck import BrowserError, find_browser, render_check
from coserver.site import load_site
from coserver.site.ports import server_ports
from coserver.sys import netns
from coserver.sys import proc as labproc

from .labutil import coserver, status

pytestmark = [pytest.mark.qemu, pytest.mark.netns, pytest.mark.slow]

PREFIX = f"m{os.getpid() % 10000}"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROM_PORT = 9090

HOOK = """#!{python}
import json, sys, time
event = json.loads(sys.stdin.read())
event["received"] = time.time()
with open({out!r}, "a") as f:
    f.write(json.dumps(event) + "\\n")
"""


def _get(ns: str, host: str, port: int, path: str, timeout: float = 5.0) -> tuple[int, str]:
    """An HTTP GET made from namespace `ns` (the lab's networks are reachable only from there)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    conn.sock = netns.socket_in(ns, host, port, timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


class _NotReady(Exception):
    """Prometheus answers 503 until its storage is open (seconds on a loaded machine): ask again."""


def _query(ns: str, promql: str) -> list[dict]:
    code, body = _get(ns, labnet.WITNESS_ADDRESS, PROM_PORT, "/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
    if code == 503:
        raise _NotReady(body[:100])
    assert code == 200, body[:300]
    return json.loads(body)["data"]["result"]


def _value(ns: str, promql: str) -> float | None:
    res = _query(ns, promql)
    return float(res[0]["value"][1]) if res else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _render(url: str, workdir: Path) -> dict:
    """render_check, three tries (a headless Chromium on a loaded 2-core machine once exited 0 without
    writing its screenshot), each in a fresh profile directory."""
    for attempt in range(3):
        work = workdir / f"try{attempt}"
        work.mkdir(parents=True)
        try:
            return render_check(url, work)
        except BrowserError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def _roles(url: str, workdir: Path) -> dict[str, str]:
    return {r["host"]: r["role"] for r in _render(url, workdir)["roles"] if r["server"] == "journal"}


def _page_up(url: str) -> bool:
    """`coserver web` answers /status.json (before a browser is pointed at it)."""
    host, port = url[7:-1].rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        conn.request("GET", "/status.json")
        return conn.getresponse().status == 200
    finally:
        conn.close()


def _until(what: str, timeout: float, fn):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = fn()
            if last:
                return last
        except (OSError, http.client.HTTPException, _NotReady) as exc:
            last = exc
        time.sleep(0.5)
    raise AssertionError(f"{what}: not within {timeout:.0f} s (last: {last!r})")


@pytest.mark.skipif(not Path(PROMETHEUS).exists(), reason="Debian's prometheus package is not installed")
def test_prometheus_scrapes_both_the_hook_hears_each_change_and_status_check_fails_on_a_cut_link(tmp_path):
    alerts = tmp_path / "alerts.jsonl"
    hook = tmp_path / "hook.py"
    hook.write_text(HOOK.format(python=sys.executable, out=str(alerts)))
    hook.chmod(0o755)
    lab = Lab(PREFIX, tmp_path / "lab")
    prom_dir = tmp_path / "prometheus"
    web: subprocess.Popen[bytes] | None = None
    try:
        up = lab.up(LabOptions(prefix=PREFIX, workdir=tmp_path / "lab", checkpoint_ms=1000,
                               alert_command=(str(hook),)))
        assert up["state"] == "protected"
        url = f"http://127.0.0.1:{_free_port()}/"
        web = subprocess.Popen([sys.executable, "-m", "coserver.cli.main", "web", "--prefix", PREFIX, "--listen",
                                url[7:-1]], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        browser = find_browser()
        _until("coserver web answers", 30, lambda: _page_up(url))
        if browser:
            assert _roles(url, tmp_path / "page0")[up["primary"]] == "primary"
        site = load_site(lab.etc_dir("cs1") / "site.toml")
        port = server_ports(site, up["ftserver"]).metrics
        targets = [f"{site.coservers[h].management}:{port}" for h in ("cs1", "cs2")]
        prom_dir.mkdir()
        (prom_dir / "prometheus.yml").write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            f"scrape_configs:\n  - job_name: coserver\n    static_configs:\n      - targets: {json.dumps(targets)}\n")
        wns = lab.net.ns("witness")
        labproc.start("prometheus", [PROMETHEUS, f"--config.file={prom_dir / 'prometheus.yml'}",
                                     f"--storage.tsdb.path={prom_dir / 'data'}", "--log.level=warn",
                                     f"--web.listen-address={labnet.WITNESS_ADDRESS}:{PROM_PORT}"],
                      prom_dir, netns=wns)
        _until("both controllers scraped", 60, lambda: _value(wns, 'sum(up{job="coserver"})') == 2.0)
        _until("both protected in Prometheus", 30,
               lambda: _value(wns, 'sum(coserver_ft_state{state="protected"})') == 2.0)
        before = _value(wns, "sum(coserver_failovers_total)") or 0.0
        # each link's heartbeat round trip, from both hosts (a LAN: well under the 50 ms alert)
        rtts = _query(wns, "coserver_heartbeat_rtt_seconds")
        assert len(rtts) == 4 and all(0 < float(r["value"][1]) < 0.05 for r in rtts), rtts
        # the COLO stream's bytes, sent by the primary: some per checkpoint
        _until("checkpoint bytes scraped", 30, lambda: (v := _value(
            wns, f'coserver_replication_sent_bytes_total{{stream="checkpoint",host="{up["primary"]}"}}')) and v > 0)

        # ---- kill -9 the primary's QEMU: one failover, simplex, then protected again
        primary = up["primary"]
        t_kill = time.time()
        lab.fault("kill-qemu", primary)
        _until("re-protected", 180, lambda: status(PREFIX)["state"] == "protected")
        after = _until("failovers_total +1", 30,
                       lambda: (v := _value(wns, "sum(coserver_failovers_total)")) is not None and v > before and v)
        assert after == before + 1, (before, after)
        # how long the failover took to see and to carry out, on the side that ran it
        detection = _value(wns, "max(coserver_last_failover_detection_seconds)")
        promotion = _value(wns, "max(coserver_last_failover_promotion_seconds)")
        assert detection is not None and 0 <= detection < 10, detection
        assert promotion is not None and 0 < promotion < 10, promotion
        # the survivor went simplex (for less than a scrape, so counted, not sampled), then protected
        went = _query(wns, 'increase(coserver_state_changes_total{state="simplex"}[5m])')
        assert any(float(r["value"][1]) >= 0.9 for r in went), went
        # status says protected before Prometheus's next scrape (1 s) has counted it
        _until("the change to protected scraped", 15, lambda: (v := _value(
            wns, 'sum(increase(coserver_state_changes_total{state="protected"}[5m]))')) is not None and v >= 0.9)
        _until("protected again in Prometheus", 30,
               lambda: _value(wns, 'sum(coserver_ft_state{state="protected"})') == 2.0)

        # ---- the alert hook: protected -> simplex on the survivor, then -> protected, each within 1 s
        st = status(PREFIX)
        survivor = st["primary"]
        history = [t for t in st["hosts"][survivor]["history"] if t["at"] >= t_kill]
        events = [json.loads(line) for line in alerts.read_text().splitlines()]
        for target in ("simplex", "protected"):
            change = next(t for t in history if t["to"] == target)
            heard = [e for e in events if e["host"] == survivor and e["new"] == target
                     and e["received"] >= change["at"] - 0.05]
            assert heard, (target, events[-5:])
            assert heard[0]["received"] - change["at"] < 1.0, (target, heard[0], change)
            assert heard[0]["ftserver"] == up["ftserver"] and heard[0]["reason"]
        if browser:   # the page, drawn by the browser, names the new primary
            assert _roles(url, tmp_path / "page1")[survivor] == "primary"

        # ---- one sync link cut: the link Failed, the FT server Degraded, status --check exits 2
        lab.fault("cut-link", link=1)
        _until("both see the link down", 30,
               lambda: all(e.get("state") == "degraded" for e in status(PREFIX)["hosts"].values()))
        check = coserver("status", "--prefix", PREFIX, "--check", check=False)
        assert check.returncode == 2, (check.returncode, check.stdout, check.stderr)
        assert check.stderr.count("\n") <= 1 or check.stdout
        comps = json.loads(coserver("status", "--prefix", PREFIX, "--json").stdout)["components"]
        by = {(c["kind"], c["name"]): c["health"] for c in comps}
        link = [k for k in by if k[0] == "link" and by[k] == "failed"]
        assert link, comps
        assert any(k[0] == "ftserver" and h == "degraded" for k, h in by.items()), comps
        _until("sync link down in Prometheus", 30,
               lambda: _value(wns, "min(coserver_sync_link_up)") == 0.0)
        if browser:
            parts = _render(url, tmp_path / "page2")["parts"]
            assert any(p["part"] == "link" and p["health"] == "failed" for p in parts), parts
        lab.fault("heal-link", link=1)
        _until("status --check passes again", 60,
               lambda: coserver("status", "--prefix", PREFIX, "--check", check=False).returncode == 0)
    finally:
        if web is not None:
            web.terminate()
            web.wait(timeout=10)
        if prom_dir.is_dir():
            labproc.stop(prom_dir, "prometheus")
        lab.down()
