"""`coserver web`'s status page: the site as a picture, read-only, refreshing itself.

Why: an operator (or a wall screen) wants to see at a glance which CoServer is primary for each
FT server, whether both sync links and the witness are up, what happened last, and whether the
guest's checkpoint pauses grow, without typing `coserver status` again and again.

The page is served by the stdlib's ThreadingHTTPServer (no new dependency):

    /             the HTML page: inline CSS, an inline SVG picture drawn by a few lines of vanilla
                  JS that fetch /status.json every 2 s (no external asset, no CDN; each fetch
                  is a status request to every controller: bench section 5 prices it)
    /status.json  what the page draws (view()): per FT server its state, primary, secondary,
                  epoch, checkpoints, components (pair.components), each host's role and its last
                  state transitions, and recent checkpoint pauses (a ring buffer kept here)

The status source is a callable returning {ftserver: pair summary} (cli.web passes the site's or
the lab's; tests pass a fake). Snapshots call it at most once per CACHE_S, bounded by a timeout:
a slow or failing source is a one-line banner on the page, never a 500 with a traceback. Any
method but GET and HEAD is 405: the page changes nothing. It never talks to QEMU.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from coserver.errors import CoserverError, clip
from coserver.pair.components import Component, components

log = logging.getLogger(__name__)

#: `coserver web`'s address when --listen is not given: this machine only.
DEFAULT_LISTEN = "127.0.0.1:8480"
#: A /status.json asks the source at most this often (seconds): many open pages cost one status.
CACHE_S = 0.5
#: Seconds a source call may take before the page says so (SitePair asks each controller for up to 3 s).
SOURCE_TIMEOUT_S = 10.0
#: Checkpoint pause samples kept per FT server for the sparkline (one per fresh snapshot).
PAUSE_SAMPLES = 60
#: State transitions shown per host.
HISTORY_SHOWN = 10

Source = Callable[[], Mapping[str, Mapping[str, Any]]]

#: The label the picture puts on a host's box for an FT server, by the controller's role.
ROLE_LABELS = {"primary": "PRIMARY", "secondary": "SECONDARY", "simplex": "SIMPLEX"}
#: Worse health wins when several FT servers judge the same link, witness or CoServer.
_RANK = {"good": 0, "offline": 1, "degraded": 2, "failed": 3}


class WebError(CoserverError):
    """A bad --listen, or a port that cannot be bound: one line."""


def parse_listen(text: str) -> tuple[str, int]:
    """ADDR:PORT (IPv6 as [ADDR]:PORT) -> (addr, port); anything else is one line."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise WebError(f"--listen {clip(text, quote=repr)}: want ADDR:PORT, e.g. {DEFAULT_LISTEN}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise WebError(f"--listen {clip(text, quote=repr)}: write an IPv6 address as [ADDR]:PORT")
    return host, int(port_text)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return clip(text if isinstance(exc, CoserverError | OSError) else f"{type(exc).__name__}: {text}", 300)


def _worst(parts: list[dict[str, str]]) -> dict[str, str]:
    return max(parts, key=lambda p: _RANK.get(p["health"], 0))


def _host_view(server: str, host: str, entry: Mapping[str, Any], parts: list[Component]) -> dict[str, Any]:
    """One host's box for one FT server: its role label, coloured by its copy's health."""
    copy = next((p for p in parts if p.kind == "copy" and p.name == f"{server}@{host}"), None)
    role = entry.get("role")
    if "error" in entry:
        role_key, label = "unknown", "NO ANSWER"
    else:
        role_key = role if role in ROLE_LABELS else "stopped"
        label = ROLE_LABELS.get(str(role), "STOPPED")
    return {"role": role_key, "label": label, "state": entry.get("state"), "epoch": entry.get("epoch"),
            "health": copy.health.value if copy else "offline", "reason": copy.reason if copy else "",
            "error": entry.get("error"), "checkpoint_pause_ms": entry.get("checkpoint_pause_ms"),
            "history": list(entry.get("history") or [])[-HISTORY_SHOWN:]}


def _pause_ms(summary: Mapping[str, Any]) -> float | None:
    """The checkpoint pause (the controllers' median, ms) of the primary, else of any host reporting one."""
    hosts: Mapping[str, Mapping[str, Any]] = summary.get("hosts") or {}
    order = [summary.get("primary"), *sorted(hosts)]
    for host in order:
        value = (hosts.get(str(host)) or {}).get("checkpoint_pause_ms")
        if isinstance(value, int | float):
            return float(value)
    return None


def server_view(name: str, summary: Mapping[str, Any], pauses: list[float]) -> dict[str, Any]:
    """One FT server as /status.json carries it."""
    parts = components(summary)
    hosts: Mapping[str, Mapping[str, Any]] = summary.get("hosts") or {}
    epochs = [int(e["epoch"]) for e in hosts.values() if isinstance(e.get("epoch"), int)]
    ft = next((p for p in parts if p.kind == "ftserver"), None)
    return {"name": name, "state": summary.get("state"), "primary": summary.get("primary"),
            "secondary": summary.get("secondary"), "epoch": max(epochs) if epochs else None,
            "checkpoints": summary.get("checkpoints"), "alert": summary.get("alert"),
            "health": ft.health.value if ft else "offline", "reason": ft.reason if ft else "no controller answers",
            "components": [p.as_json() for p in parts],
            "hosts": {h: _host_view(name, h, hosts[h], parts) for h in sorted(hosts)},
            "pauses_ms": list(pauses)}


def view(pairs: Mapping[str, Mapping[str, Any]], pauses: Mapping[str, list[float]],
         error: str | None = None) -> dict[str, Any]:
    """The whole page's data: the servers, and the site's CoServers, links and witness (the worst
    any FT server's controllers report: they share the hosts, links and witness)."""
    servers = [server_view(n, pairs[n], pauses.get(n, [])) for n in sorted(pairs)]
    shared: dict[tuple[str, str], list[dict[str, str]]] = {}
    for s in servers:
        for p in s["components"]:
            if p["kind"] in ("coserver", "link", "witness"):
                shared.setdefault((p["kind"], p["name"]), []).append({**p, "reason": f"{s['name']}: {p['reason']}"})
    hosts = sorted({h for s in servers for h in s["hosts"]})
    pick = {key: _worst(found) for key, found in shared.items()}
    return {"time": time.time(), "error": error, "hosts": hosts,
            "coservers": {name: p for (kind, name), p in pick.items() if kind == "coserver"},
            "links": [p for (kind, _), p in sorted(pick.items()) if kind == "link"],
            "witness": pick.get(("witness", "witness")), "servers": servers}


class Snapshots:
    """The source, asked at most once per `cache_s` and never waited on longer than `timeout_s`.

    One worker thread calls the source: a source that hangs holds that thread, and later requests
    get the last good pairs with an error banner instead of piling up threads. Each fresh answer
    adds one checkpoint pause sample per FT server (the sparkline)."""

    def __init__(self, source: Source, *, cache_s: float = CACHE_S, timeout_s: float = SOURCE_TIMEOUT_S,
                 samples: int = PAUSE_SAMPLES) -> None:
        self.source = source
        self.cache_s = cache_s
        self.timeout_s = timeout_s
        self.samples = samples
        self.calls = 0
        self._lock = threading.Lock()
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="coserver-web-source")
        self._pending: concurrent.futures.Future[Mapping[str, Mapping[str, Any]]] | None = None
        self._pairs: Mapping[str, Mapping[str, Any]] = {}
        self._error: str | None = None
        self._at = float("-inf")
        self._pauses: dict[str, deque[float]] = {}

    def _call(self) -> Mapping[str, Mapping[str, Any]]:
        self.calls += 1
        return self.source()

    def get(self) -> dict[str, Any]:
        """The page's data (view()), fresh if the last answer is older than cache_s."""
        with self._lock:
            if time.monotonic() - self._at >= self.cache_s:
                self._refresh()
            pauses = {n: list(d) for n, d in self._pauses.items()}
            return view(self._pairs, pauses, self._error)

    def _refresh(self) -> None:
        # A call still running from an earlier timeout is not waited on again: that request already
        # waited; this one shows the last answer at once until the source comes back.
        wait = self.timeout_s if self._pending is None else 0.0
        if self._pending is None:
            self._pending = self._pool.submit(self._call)
        try:
            pairs = self._pending.result(timeout=wait)
        except concurrent.futures.TimeoutError:
            self._error = f"the status source did not answer within {self.timeout_s:g} s (showing the last answer)"
            self._at = time.monotonic()
            return
        except Exception as exc:  # noqa: BLE001 - any source failure is a banner on the page, not a 500
            self._error = f"cannot read the status: {_one_line(exc)}"
            self._pending = None
            self._at = time.monotonic()
            return
        self._pending = None
        self._at = time.monotonic()
        try:
            self._pairs = {str(n): dict(s) for n, s in pairs.items()}
            view(self._pairs, {})   # a summary the page cannot draw is the source's error, said once here
        except Exception as exc:  # noqa: BLE001
            self._pairs, self._error = {}, f"cannot draw the status: {_one_line(exc)}"
            return
        self._error = None
        for name, summary in self._pairs.items():
            pause = _pause_ms(summary)
            if pause is not None:
                self._pauses.setdefault(name, deque(maxlen=self.samples)).append(pause)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class _Handler(BaseHTTPRequestHandler):
    """GET/HEAD / and /status.json; every other method 405, every other path 404."""

    server: StatusServer
    server_version = "coserver-web"
    sys_version = ""

    def __getattr__(self, name: str) -> Any:
        # BaseHTTPRequestHandler dispatches do_<METHOD>; any method but GET/HEAD lands here.
        if name.startswith("do_"):
            return self._not_allowed
        raise AttributeError(name)

    def _not_allowed(self) -> None:
        self._send(HTTPStatus.METHOD_NOT_ALLOWED, b"read-only: GET or HEAD\n", "text/plain; charset=utf-8",
                   extra={"Allow": "GET, HEAD"})

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self._get(body=True)

    def do_HEAD(self) -> None:  # noqa: N802
        self._get(body=False)

    def _get(self, body: bool) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/":
            self._send(HTTPStatus.OK, PAGE.encode(), "text/html; charset=utf-8", body=body)
        elif path == "/status.json":
            try:
                data = self.server.snapshots.get()
            except Exception as exc:  # noqa: BLE001 - the page shows the line; no traceback to a browser
                data = view({}, {}, f"cannot read the status: {_one_line(exc)}")
            self._send(HTTPStatus.OK, json.dumps(data, default=str).encode(), "application/json", body=body)
        else:
            self._send(HTTPStatus.NOT_FOUND, b"not found: / or /status.json\n", "text/plain; charset=utf-8",
                       body=body)

    def _send(self, status: HTTPStatus, payload: bytes, ctype: str, *, body: bool = True,
              extra: Mapping[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", "default-src 'none'; connect-src 'self'; "
                         "script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' data:")
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if body:
            self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
        log.debug("web %s: " + format, self.address_string(), *args)


class StatusServer(ThreadingHTTPServer):
    """The page's HTTP server, bound to exactly the given address (port 0: any free one)."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], snapshots: Snapshots) -> None:
        self.snapshots = snapshots
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        try:
            super().__init__(address, _Handler)
        except OSError as exc:
            raise WebError(f"cannot listen on {address[0]}:{address[1]}: {exc.strerror or exc}") from None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        name = host.decode() if isinstance(host, bytes) else str(host)
        shown = f"[{name}]" if ":" in name else name
        return f"http://{shown}:{port}/"

    def server_close(self) -> None:
        super().server_close()
        self.snapshots.close()


def make_server(listen: str | tuple[str, int], source: Source, **snapshot_kw: Any) -> StatusServer:
    """The status page's server on `listen` (ADDR:PORT or (addr, port)), not yet serving."""
    address = parse_listen(listen) if isinstance(listen, str) else listen
    return StatusServer(address, Snapshots(source, **snapshot_kw))


PAGE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>coserver status</title>
<style>
body{font:14px system-ui,sans-serif;margin:0;background:#f4f5f7;color:#1d2330}
header{padding:10px 18px;background:#1d2330;color:#fff;display:flex;gap:16px;align-items:baseline}
header h1{font-size:18px;margin:0}
#updated{opacity:.7;font-size:12px}
#banner{display:none;background:#c62828;color:#fff;padding:8px 18px;font-weight:600}
#banner.on{display:block}
main{padding:12px 18px}
svg text{font-family:system-ui,sans-serif}
.good{fill:#2e7d32}.degraded{fill:#f9a825}.failed{fill:#c62828}.offline{fill:#9e9e9e}
.card{background:#fff;border-radius:6px;padding:10px 14px;margin:12px 0;box-shadow:0 1px 2px #0002}
.card h2{font-size:16px;margin:0 0 6px}
.pill{display:inline-block;padding:1px 8px;border-radius:9px;color:#fff;font-size:12px;font-weight:600}
.pill.good{background:#2e7d32}.pill.degraded{background:#f9a825;color:#1d2330}
.pill.failed{background:#c62828}.pill.offline{background:#9e9e9e}
table{border-collapse:collapse;font-size:12px}
td{padding:2px 10px;border-top:1px solid #eee;vertical-align:top}
.muted{color:#667}
</style></head>
<body data-rendered="0">
<header><h1>coserver</h1><span id="summary">loading…</span><span id="updated"></span></header>
<div id="banner" role="alert"></div>
<main>
<svg id="site" width="900" height="240" viewBox="0 0 900 240" role="img" aria-label="the site"></svg>
<div id="servers"></div>
</main>
<script>
"use strict";
const COLOR={good:"#2e7d32",degraded:"#f9a825",failed:"#c62828",offline:"#9e9e9e"};
const NS="http://www.w3.org/2000/svg";
function el(tag,attrs,text,ns){const e=ns?document.createElementNS(NS,tag):document.createElement(tag);
  for(const k in attrs||{}){if(attrs[k]!==null&&attrs[k]!==undefined)e.setAttribute(k,attrs[k]);}
  if(text!==undefined&&text!==null)e.textContent=String(text);return e;}
function s(tag,attrs,text){return el(tag,attrs,text,true);}
function hc(p){return COLOR[(p&&p.health)||"offline"]||COLOR.offline;}
function drawSite(d){
  const svg=document.getElementById("site");svg.replaceChildren();
  const hosts=d.hosts.length?d.hosts:["—","—"],n=Math.max(d.servers.length,1);
  const top=100,bw=330,bh=56+34*n,xs=[30,540],h=top+bh+20;
  svg.setAttribute("height",h);svg.setAttribute("viewBox","0 0 900 "+h);
  const w=d.witness;const wg=s("g",{"data-part":"witness","data-health":w?w.health:"offline"});
  wg.appendChild(s("title",{},w?w.reason:"no controller answers"));
  wg.appendChild(s("rect",{x:380,y:10,width:140,height:40,rx:6,fill:"#fff",stroke:hc(w),"stroke-width":3}));
  wg.appendChild(s("text",{x:450,y:35,"text-anchor":"middle","font-weight":600},"witness"));
  for(const x of [xs[0]+bw/2,xs[1]+bw/2])wg.appendChild(s("line",{x1:450,y1:50,x2:x,y2:top,stroke:hc(w),"stroke-width":2,"stroke-dasharray":"6 4"}));
  svg.appendChild(wg);
  d.links.forEach((l,i)=>{const y=top+28+i*22;const g=s("g",{"data-part":"link","data-link":l.name,"data-health":l.health});
    g.appendChild(s("title",{},l.reason));
    g.appendChild(s("line",{x1:xs[0]+bw,y1:y,x2:xs[1],y2:y,stroke:hc(l),"stroke-width":5}));
    g.appendChild(s("text",{x:450,y:y-5,"text-anchor":"middle","font-size":11},l.name+" "+l.health));svg.appendChild(g);});
  hosts.forEach((host,i)=>{const c=d.coservers[host];const x=xs[i];
    const g=s("g",{"data-part":"coserver","data-host":host,"data-health":c?c.health:"offline"});
    g.appendChild(s("title",{},c?c.reason:""));
    g.appendChild(s("rect",{x:x,y:top,width:bw,height:bh,rx:8,fill:"#fff",stroke:hc(c),"stroke-width":4}));
    g.appendChild(s("text",{x:x+14,y:top+26,"font-size":18,"font-weight":700},host));
    d.servers.forEach((sv,j)=>{const hv=sv.hosts[host]||{role:"unknown",label:"—",health:"offline"};const y=top+44+j*34;
      const r=s("g",{"class":"role","data-server":sv.name,"data-host":host,"data-role":hv.role,"data-health":hv.health});
      r.appendChild(s("title",{},hv.reason||hv.error||""));
      r.appendChild(s("rect",{x:x+10,y:y,width:bw-20,height:28,rx:4,fill:hc(hv)}));
      r.appendChild(s("text",{x:x+20,y:y+19,fill:"#fff","font-weight":600},sv.name));
      r.appendChild(s("text",{x:x+bw-20,y:y+19,fill:"#fff","font-weight":700,"text-anchor":"end"},hv.label));
      g.appendChild(r);});
    svg.appendChild(g);});
}
function spark(values){const W=240,H=36,g=s("svg",{width:W,height:H,viewBox:"0 0 "+W+" "+H,"class":"spark","data-samples":values.length});
  if(values.length<1){g.appendChild(s("text",{x:0,y:22,"font-size":11,fill:"#667"},"no checkpoint pauses reported"));return g;}
  const max=Math.max(...values,1),step=values.length>1?W/(values.length-1):0;
  const pts=values.map((v,i)=>(i*step).toFixed(1)+","+(H-2-(v/max)*(H-6)).toFixed(1)).join(" ");
  g.appendChild(s("polyline",{points:pts,fill:"none",stroke:"#1565c0","stroke-width":2}));
  const end=pts.split(" ").pop().split(",");g.appendChild(s("circle",{cx:Math.min(+end[0],W-3),cy:end[1],r:3,fill:"#1565c0"}));return g;}
function when(t){return t?new Date(t*1000).toLocaleTimeString():"";}
function drawServers(d){const box=document.getElementById("servers");box.replaceChildren();
  for(const sv of d.servers){const c=el("section",{"class":"card","data-server":sv.name,"data-state":sv.state,"data-primary":sv.primary||""});
    const h=el("h2",{},sv.name+" ");h.appendChild(el("span",{"class":"pill "+sv.health},(sv.state||"?").toUpperCase()));c.appendChild(h);
    c.appendChild(el("div",{},"primary "+(sv.primary||"—")+" · secondary "+(sv.secondary||"—")+" · epoch "+(sv.epoch??"—")+" · checkpoints "+(sv.checkpoints??0)));
    c.appendChild(el("div",{"class":"muted"},sv.reason+(sv.alert?" · ALERT: "+sv.alert:"")));
    const last=sv.pauses_ms.length?sv.pauses_ms[sv.pauses_ms.length-1]:null;
    c.appendChild(el("div",{},"checkpoint pause (median, ms)"+(last!==null?": "+last:"")));c.appendChild(spark(sv.pauses_ms));
    const bad=sv.components.filter(p=>p.health!=="good");
    if(bad.length){const t=el("table",{"class":"problems"});for(const p of bad){const tr=el("tr",{});
      const td=el("td",{});td.appendChild(el("span",{"class":"pill "+p.health},p.health.toUpperCase()));tr.appendChild(td);
      tr.appendChild(el("td",{},p.kind+" "+p.name));tr.appendChild(el("td",{},p.reason));t.appendChild(tr);}c.appendChild(t);}
    const ev=[];for(const host in sv.hosts)for(const e of sv.hosts[host].history)ev.push({host:host,...e});
    ev.sort((a,b)=>(b.at||0)-(a.at||0));
    const t=el("table",{"class":"events"});for(const e of ev.slice(0,10)){const tr=el("tr",{});
      tr.appendChild(el("td",{"class":"muted"},when(e.at)));tr.appendChild(el("td",{},e.host));
      tr.appendChild(el("td",{},(e.from||"")+" → "+(e.to||"")));tr.appendChild(el("td",{"class":"muted"},e.reason||""));t.appendChild(tr);}
    c.appendChild(el("div",{},"last events"));c.appendChild(t);box.appendChild(c);}
  if(!d.servers.length)box.appendChild(el("p",{"class":"muted"},"no FT servers"));}
function render(d){drawSite(d);drawServers(d);
  const b=document.getElementById("banner");b.textContent=d.error||"";b.className=d.error?"on":"";
  document.getElementById("summary").textContent=d.servers.map(v=>v.name+": "+(v.state||"?")+(v.primary?" on "+v.primary:"")).join(" · ")||"no FT servers";
  document.getElementById("updated").textContent="updated "+when(d.time);
  document.body.dataset.rendered=String(Number(document.body.dataset.rendered)+1);}
async function tick(){try{const r=await fetch("status.json",{cache:"no-store"});
    if(!r.ok)throw new Error("HTTP "+r.status);render(await r.json());}
  catch(e){const b=document.getElementById("banner");b.textContent="cannot reach the status page's server: "+e.message;b.className="on";}}
tick();setInterval(tick,2000);
</script>
</body></html>
"""
