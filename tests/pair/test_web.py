"""pair.web: the status page's server, fed a fake status source (no controller, no QEMU)."""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.error
import urllib.request
from typing import Any

import pytest

from coserver.pair.web import WebError, make_server, parse_listen

from .webfake import constant, failed_over, serving


def get(url: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def status_json(base: str) -> dict[str, Any]:
    code, headers, body = get(base + "status.json")
    assert code == 200 and headers["Content-Type"] == "application/json"
    return json.loads(body)


def test_the_page_is_html_with_no_external_url() -> None:
    with serving(constant(failed_over())) as srv:
        code, headers, body = get(srv.url)
    page = body.decode()
    assert code == 200 and headers["Content-Type"].startswith("text/html")
    assert "<svg" in page and "<script>" in page and "status.json" in page
    # The SVG namespace is an identifier, not a fetch; nothing else may name a host.
    urls = set(re.findall(r"(?:https?:)?//[\w.-]+", page)) - {"http://www.w3.org"}
    assert urls == set(), urls
    assert not re.search(r"""(src|href)\s*=\s*["'](?!#)""", page)


def test_status_json_has_what_the_page_draws() -> None:
    with serving(constant(failed_over())) as srv:
        d = status_json(srv.url)
    assert d["error"] is None and d["hosts"] == ["cs1", "cs2"]
    journal, web = d["servers"]
    assert journal["name"] == "journal" and journal["state"] == "protected"
    assert (journal["primary"], journal["secondary"], journal["epoch"], journal["checkpoints"]) == ("cs2", "cs1", 4, 420)
    assert journal["hosts"]["cs2"]["role"] == "primary" and journal["hosts"]["cs2"]["label"] == "PRIMARY"
    assert journal["hosts"]["cs1"]["label"] == "SECONDARY" and journal["hosts"]["cs1"]["health"] == "good"
    assert len(journal["hosts"]["cs2"]["history"]) == 10 and journal["hosts"]["cs2"]["history"][-1]["to"] == "s14"
    assert {(c["kind"], c["name"]) for c in journal["components"]} >= {("link", "sync2"), ("witness", "witness")}
    assert journal["pauses_ms"] == [20.0]           # the primary's pause, one sample per fresh answer
    assert web["hosts"]["cs1"]["label"] == "SIMPLEX"
    assert web["hosts"]["cs2"] == {**web["hosts"]["cs2"], "role": "unknown", "label": "NO ANSWER", "health": "offline"}
    # The site: the worst any server says of a shared part.
    assert {lk["name"]: lk["health"] for lk in d["links"]} == {"sync1": "good", "sync2": "degraded"}
    assert d["coservers"]["cs2"]["health"] == "offline" and d["coservers"]["cs1"]["health"] == "good"
    assert d["witness"]["health"] == "good"


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "BREW"])
def test_only_get_and_head(method: str) -> None:
    with serving(constant(failed_over())) as srv:
        code, headers, _ = get(srv.url + "status.json", method)
        head = get(srv.url, "HEAD")
        missing = get(srv.url + "nope")
    assert code == 405 and headers["Allow"] == "GET, HEAD"
    assert head[0] == 200 and head[2] == b"" and int(head[1]["Content-Length"]) > 0
    assert missing[0] == 404


def test_a_failing_source_is_a_banner_not_a_500() -> None:
    def broken() -> Any:
        raise RuntimeError("controller\nexploded")

    with serving(broken) as srv:
        d = status_json(srv.url)
    assert d["error"] == "cannot read the status: RuntimeError: controller exploded"
    assert d["servers"] == []


def test_a_bad_summary_is_a_banner_too() -> None:
    with serving(constant({"journal": {"hosts": "nonsense"}})) as srv:
        d = status_json(srv.url)
    assert d["error"].startswith("cannot draw the status: ") and d["servers"] == []


def test_the_cache_limits_source_calls() -> None:
    calls = []

    def source() -> Any:
        calls.append(time.monotonic())
        return failed_over()

    with serving(source, cache_s=0.5) as srv:
        for _ in range(8):
            status_json(srv.url)
        assert len(calls) == 1
        time.sleep(0.55)
        d = status_json(srv.url)
    assert len(calls) == 2 and d["servers"][0]["pauses_ms"] == [20.0, 20.0]


def test_a_hung_source_is_bounded_and_keeps_the_last_answer() -> None:
    release = threading.Event()
    answers = iter([False, True])

    def source() -> Any:
        if next(answers):
            release.wait(10)
        return failed_over()

    with serving(source, cache_s=0.0, timeout_s=0.3) as srv:
        assert status_json(srv.url)["error"] is None
        started = time.monotonic()
        d = status_json(srv.url)
        assert time.monotonic() - started < 2
        assert "did not answer within 0.3 s" in d["error"] and d["servers"][0]["primary"] == "cs2"
        started = time.monotonic()
        status_json(srv.url)                       # still hung: answered at once, not another 0.3 s
        assert time.monotonic() - started < 0.25
        release.set()


@pytest.mark.parametrize("text", ["8480", "host", ":80", "a:b", "1.2.3.4:99999", "::1:80"])
def test_bad_listen_is_one_line(text: str) -> None:
    with pytest.raises(WebError, match="--listen"):
        parse_listen(text)


def test_listen_forms() -> None:
    assert parse_listen("127.0.0.1:8480") == ("127.0.0.1", 8480)
    assert parse_listen("[::1]:0") == ("::1", 0)


def test_a_port_in_use_is_one_line() -> None:
    with serving(constant({})) as srv:
        port = srv.server_address[1]
        with pytest.raises(WebError, match=f"cannot listen on 127.0.0.1:{port}"):
            make_server(f"127.0.0.1:{port}", constant({}))


def test_it_binds_only_the_given_address() -> None:
    with serving(constant({})) as srv:
        assert srv.server_address[0] == "127.0.0.1"


def test_cli_bad_input_is_one_line(tmp_path: Any) -> None:
    from click.testing import CliRunner

    from coserver.cli.main import main

    bad = CliRunner().invoke(main, ["web", "--listen", "nowhere", "--prefix", "cs-webtest"])
    assert bad.exit_code == 1 and bad.output.strip() == \
        "coserver: error: --listen 'nowhere': want ADDR:PORT, e.g. 127.0.0.1:8480"
    both = CliRunner().invoke(main, ["web", "--prefix", "x", "--site", str(tmp_path / "site.toml")])
    assert both.exit_code == 1 and "do not go together" in both.output and "Traceback" not in both.output
