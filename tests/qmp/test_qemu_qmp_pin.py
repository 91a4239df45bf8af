"""The private parts of qemu.qmp that coserver.qmp.session relies on are there, in the pinned range.

session.py overrides QMPClient._event_dispatch and reads _writer, _listeners and
EventListener._history. If a qemu.qmp release changes them, this test fails at
once (no QEMU needed), instead of a controller silently missing events; the pin
in pyproject.toml keeps untested releases out.
"""

from __future__ import annotations

import inspect
from importlib.metadata import requires, version

import qemu.qmp.events
import qemu.qmp.protocol
import qemu.qmp.qmp_client
from packaging.requirements import Requirement


def test_installed_qemu_qmp_is_in_the_pinned_range() -> None:
    pins = [Requirement(r) for r in requires("coserver") or [] if r.startswith("qemu.qmp")]
    assert pins and pins[0].specifier, "qemu.qmp must stay pinned: session.py uses its private parts"
    assert pins[0].specifier.contains(version("qemu.qmp"))


def test_the_private_names_session_uses_still_exist() -> None:
    client = qemu.qmp.qmp_client.QMPClient
    assert inspect.iscoroutinefunction(client._event_dispatch)
    assert list(inspect.signature(client._event_dispatch).parameters) == ["self", "msg"]
    assert issubclass(client, qemu.qmp.events.Events)
    assert "self._listeners" in inspect.getsource(qemu.qmp.events.Events)
    assert "self._writer" in inspect.getsource(qemu.qmp.protocol.AsyncProtocol)
    assert "self._history" in inspect.getsource(qemu.qmp.events.EventListener)
