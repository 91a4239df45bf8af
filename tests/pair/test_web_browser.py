"""The status page in a real headless browser (Debian's chromium): its JS fetches and draws the status.

Fed a fake status after a failover (cs2 primary for "journal"), the page must show it: a non-trivial
screenshot, and a DOM whose drawn picture marks cs2 as journal's PRIMARY.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from coserver.pair.webcheck import find_browser, render_check

from .webfake import constant, failed_over, serving

pytestmark = pytest.mark.skipif(find_browser() is None,
                                reason="no chromium binary (apt-get install chromium; deps/apt-test.txt has it)")


def test_the_browser_draws_cs2_primary_after_a_failover(tmp_path: Path) -> None:
    with serving(constant(failed_over())) as srv:
        r = render_check(srv.url, tmp_path, timeout=60)
    png = Path(r["screenshot"]).read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and r["png_bytes"] > 10_000
    assert r["rendered"] >= 1, "the page's JS never drew a fetched status"
    assert r["banner"] is None
    roles = {(x["server"], x["host"]): (x["role"], x["health"]) for x in r["roles"]}
    assert roles[("journal", "cs2")] == ("primary", "good")
    assert roles[("journal", "cs1")] == ("secondary", "good")
    assert roles[("web", "cs1")] == ("simplex", "degraded")
    assert roles[("web", "cs2")] == ("unknown", "offline")
    parts = {(p["part"], p["name"]): p["health"] for p in r["parts"]}
    assert parts[("link", "sync2")] == "degraded" and parts[("link", "sync1")] == "good"
    assert parts[("witness", "witness")] == "good" and parts[("coserver", "cs2")] == "offline"


def test_the_browser_shows_a_source_error_as_a_banner(tmp_path: Path) -> None:
    def broken() -> dict[str, dict[str, object]]:
        raise OSError("no route to cs2")

    with serving(broken) as srv:
        r = render_check(srv.url, tmp_path, timeout=60)
    assert r["banner"] == "cannot read the status: no route to cs2" and r["roles"] == []
