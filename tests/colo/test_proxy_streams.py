"""When the secondary's proxy streams count as connected (the live order waits for them)."""

from __future__ import annotations

from coserver.colo.proxy import peer_streams_connected

CONNECTED = "tcp:10.201.9.1:8152,server=on <-> 10.201.9.2:33104"


def chardev(label: str, filename: str) -> dict[str, object]:
    return {"label": label, "filename": filename, "frontend-open": True}


def test_both_streams_must_have_a_peer() -> None:
    """A listener with no peer yet reads "disconnected:..."; both mirror0 and compare1 must be connected
    (the client's packets to the secondary, its replies back); other chardevs do not count."""
    both = [chardev("mirror0", CONNECTED), chardev("compare1", CONNECTED.replace("8152", "8153")),
            chardev("compare0", "disconnected:unix:/run/compare0.sock,server=on")]
    assert peer_streams_connected(both)
    assert not peer_streams_connected([both[0], chardev("compare1", "disconnected:tcp:10.201.9.1:8153,server=on")])
    assert not peer_streams_connected([both[0]])   # compare1 not there at all
    assert not peer_streams_connected([])
