"""What QEMU's block events mean to the policy (coserver.controller.observe.ColoEvents)."""

from __future__ import annotations

from coserver.controller.observe import ColoEvents, colo_window
from coserver.controller.roles import Role


def _bad(node: str) -> dict[str, object]:
    return {"event": "QUORUM_REPORT_BAD", "data": {"type": "write", "error": "Input/output error",
                                                   "node-name": node, "sector-num": 0, "sectors-count": 8}}


def test_a_bad_replication_child_is_the_replica_failing():
    ev = ColoEvents()
    ev.record(_bad("replication0"), Role.PRIMARY, "cs1")
    assert ev.replica_disk_error and ev.replica_disk_error["node"] == "replication0"
    assert ev.local_disk_error is None


def test_a_bad_nbd_node_is_the_replica_failing_too():
    ev = ColoEvents()
    ev.record(_bad("replication0-nbd"), Role.PRIMARY, "cs1")
    assert ev.replica_disk_error is not None and ev.local_disk_error is None


def test_any_other_bad_child_is_our_own_disk():
    ev = ColoEvents()
    ev.record(_bad("disk0"), Role.PRIMARY, "cs1")
    assert ev.local_disk_error and ev.local_disk_error["node"] == "disk0"
    assert ev.replica_disk_error is None


def test_a_block_io_error_is_our_own_disk_and_the_first_is_kept():
    ev = ColoEvents()
    for reason in ("first", "second"):
        ev.record({"event": "BLOCK_IO_ERROR", "data": {"device": "", "node-name": "colo-disk0", "operation":
                                                       "write", "action": "report", "reason": reason}},
                  Role.SECONDARY, "cs2")
    assert ev.io_errors == 2 and ev.local_disk_error and ev.local_disk_error["error"] == "first"


def test_a_new_colo_forgets_old_disk_errors():
    ev = ColoEvents()
    ev.record(_bad("replication0"), Role.PRIMARY, "cs1")
    ev.record(_bad("disk0"), Role.PRIMARY, "cs1")
    ev.record({"event": "COLO_EXIT", "data": {"mode": "primary", "reason": "error"}}, Role.PRIMARY, "cs1")
    ev.forget_colo()
    assert ev.local_disk_error is None and ev.replica_disk_error is None and ev.quorum_bad == 2
    assert ev.colo_exit is None


def test_the_checkpoint_window():
    assert colo_window(2000) == 3.5


def test_a_long_period_does_not_stretch_the_window():
    """At a 10-minute period the primary nudges a checkpoint every 4 s: the window stays 6.5 s."""
    assert colo_window(600_000) == colo_window(4000) == 6.5


def _shutdown(guest: bool, reason: str) -> dict[str, object]:
    return {"event": "SHUTDOWN", "data": {"guest": guest, "reason": reason}}


def test_a_qemu_ended_by_the_host_is_ending_not_the_guest_powering_off():
    # `virsh destroy` (SIGTERM), a QMP quit: the QEMU is on its way out; what it reports next (a
    # primary's COLO_EXIT "error") must not read as the replica failing
    for reason in ("host-signal", "host-qmp-quit", "host-error"):
        ev = ColoEvents()
        ev.record(_shutdown(False, reason), Role.PRIMARY, "cs1")
        assert ev.qemu_ending and ev.qemu_ending["reason"] == reason and ev.guest_shutdown is None
    ev = ColoEvents()
    ev.record(_shutdown(True, "guest-shutdown"), Role.PRIMARY, "cs1")
    assert ev.guest_shutdown and ev.qemu_ending is None
    ev.record(_shutdown(False, "host-signal"), Role.PRIMARY, "cs1")
    ev.new_qemu()   # a new QEMU: both are history
    assert ev.guest_shutdown is None and ev.qemu_ending is None
