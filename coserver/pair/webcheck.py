"""Look at the status page with a real headless browser: a screenshot and the DOM its JS drew.

Why: the page is drawn by JavaScript from /status.json; only a browser running it proves the
picture says what the controllers say (e.g. "cs2 PRIMARY" after a failover). The unit tests
and the lab's tests both call render_check() on a served page; it needs Debian's `chromium`
(deps/apt-test.txt) and never shells out (argv lists, each run bounded by a timeout).

The DOM markers read here are the page's contract (pair.web's PAGE):
    <g class="role" data-server=S data-host=H data-role=primary|secondary|simplex|stopped|unknown data-health=...>
    <g data-part="link" data-link=NAME data-health=...>, <g data-part="witness" data-health=...>,
    <g data-part="coserver" data-host=H data-health=...>, <div id="banner"> (the error line, if any),
    <body data-rendered=N> (how many times the JS drew a fetched status).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from coserver.errors import CoserverError, clip

#: The browser binaries tried, in order (Debian's package installs `chromium`).
BROWSERS = ("chromium", "chromium-browser", "google-chrome")
#: Seconds one browser run may take.
BROWSER_TIMEOUT_S = 60.0
#: Virtual milliseconds the page gets to fetch and draw (it refreshes every 2000).
VIRTUAL_TIME_MS = 3000


class BrowserError(CoserverError):
    """No browser, or it failed or hung: one line."""


def find_browser() -> str | None:
    """The headless browser's path, or None."""
    return next((p for p in (shutil.which(b) for b in BROWSERS) if p), None)


def _run(url: str, extra: list[str], workdir: Path, browser: str | None, timeout: float) -> str:
    exe = browser or find_browser()
    if exe is None:
        raise BrowserError(f"no headless browser found (tried {', '.join(BROWSERS)}; apt-get install chromium)")
    argv = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
            "--disable-dev-shm-usage", f"--user-data-dir={workdir / 'profile'}",
            f"--virtual-time-budget={VIRTUAL_TIME_MS}", *extra, url]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise BrowserError(f"{exe} did not finish within {timeout:g} s on {url}") from None
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise BrowserError(f"{exe} failed on {url} (exit {proc.returncode}): {clip(last, 200)}")
    return proc.stdout


def screenshot(url: str, out: Path, workdir: Path, *, browser: str | None = None,
               timeout: float = BROWSER_TIMEOUT_S, size: tuple[int, int] = (1200, 800)) -> Path:
    """A PNG of the page at `url` once its JS had VIRTUAL_TIME_MS to draw."""
    _run(url, [f"--screenshot={out}", f"--window-size={size[0]},{size[1]}"], workdir, browser, timeout)
    if not out.is_file():
        raise BrowserError(f"the browser wrote no screenshot of {url} to {out}")
    return out


def dump_dom(url: str, workdir: Path, *, browser: str | None = None, timeout: float = BROWSER_TIMEOUT_S) -> str:
    """The page's DOM (HTML text) after its JS ran."""
    return _run(url, ["--dump-dom"], workdir, browser, timeout)


class _Markers(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.roles: list[dict[str, str]] = []
        self.parts: list[dict[str, str]] = []
        self.rendered = 0
        self.banner = ""
        self._in_banner = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "body":
            self.rendered = int(a.get("data-rendered", "0") or 0)
        if "role" in a.get("class", "").split() and "data-role" in a:
            self.roles.append({"server": a.get("data-server", ""), "host": a.get("data-host", ""),
                               "role": a["data-role"], "health": a.get("data-health", "")})
        if "data-part" in a:
            self.parts.append({"part": a["data-part"], "name": a.get("data-link") or a.get("data-host") or a["data-part"],
                               "health": a.get("data-health", "")})
        self._in_banner = a.get("id") == "banner"

    def handle_endtag(self, tag: str) -> None:
        self._in_banner = False

    def handle_data(self, data: str) -> None:
        if self._in_banner:
            self.banner += data


def read_markers(dom: str) -> dict[str, Any]:
    """What the drawn page says: {"rendered", "roles": [{server, host, role, health}], "parts", "banner"}."""
    m = _Markers()
    m.feed(dom)
    return {"rendered": m.rendered, "roles": m.roles, "parts": m.parts, "banner": m.banner.strip() or None}


def render_check(url: str, workdir: Path | None = None, *, browser: str | None = None,
                 timeout: float = BROWSER_TIMEOUT_S) -> dict[str, Any]:
    """Screenshot and DOM of the status page at `url`: read_markers() plus "screenshot" (path) and
    "png_bytes". `workdir` (default: a new temporary directory, kept) holds the screenshot and the
    browser's private profile. E.g. a lab test after a failover:

        r = render_check(server.url, tmp_path)
        assert {"server": "journal", "host": "cs2", "role": "primary", ...} in r["roles"]
    """
    work = workdir or Path(tempfile.mkdtemp(prefix="coserver-webcheck-"))
    png = screenshot(url, work / "status.png", work, browser=browser, timeout=timeout)
    out = read_markers(dump_dom(url, work, browser=browser, timeout=timeout))
    return {**out, "screenshot": str(png), "png_bytes": png.stat().st_size}
