"""Fake pair summaries and a served status page, for the web page's tests (unit and browser)."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from coserver.pair.summary import summarize
from coserver.pair.web import Source, StatusServer, make_server


def host(role: str, state: str = "protected", epoch: int = 3, pause: float | None = 12.5, **kw: Any) -> dict[str, Any]:
    """One controller's status entry, as pair.summary.host_entry keeps it."""
    e: dict[str, Any] = {"role": role, "state": state, "epoch": epoch, "qemu_health": "alive",
                         "links": {"sync1": True, "sync2": True}, "witness": {"reachable": True}, "alerts": [],
                         "desired": {"run": True}, "reprotect": {"maintenance": False, "alert": None},
                         "io_errors": 0, "quorum_bad": 0, "checkpoints": 420, "checkpoint_pause_ms": pause,
                         "history": [{"at": 1000.0 + i, "from": "a", "to": f"s{i}", "reason": f"step {i}"}
                                     for i in range(15)]}
    e.update(kw)
    return e


def pair(name: str, cs1: dict[str, Any], cs2: dict[str, Any]) -> dict[str, Any]:
    hosts = {"cs1": cs1, "cs2": cs2}
    return {**summarize(hosts), "ftserver": name, "hosts": hosts}


def failed_over() -> dict[str, dict[str, Any]]:
    """Two FT servers: "journal" after a failover (cs2 primary, cs1 its secondary again, link sync2
    heard by cs1 only), and "web" still on cs1 with cs2's controller silent."""
    return {"journal": pair("journal", host("secondary", links={"sync1": True, "sync2": True}),
                            host("primary", epoch=4, pause=20.0, links={"sync1": True, "sync2": False})),
            "web": pair("web", host("simplex", state="degraded"), {"role": None, "error": "web on cs2: timed out"})}


@contextmanager
def serving(source: Source, **kw: Any) -> Iterator[StatusServer]:
    """The page served on 127.0.0.1 (a free port) in a thread, for the with-block."""
    server = make_server(("127.0.0.1", 0), source, **kw)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def constant(pairs: Mapping[str, Mapping[str, Any]]) -> Source:
    return lambda: pairs
