"""`coserver lab` refuses bad input with one line, before it makes anything."""

from __future__ import annotations

import os

import pytest

from coserver.sys import netns

from .labutil import coserver, lab_processes

pytestmark = [pytest.mark.netns]

PREFIX = f"b{os.getpid() % 10000}"


def one_line_error(proc) -> str:
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("coserver: error:") or lines[0].startswith("Error:"), lines[0]
    return lines[0]


def nothing_made() -> None:
    assert netns.list_namespaces(f"{PREFIX}-") == []
    assert lab_processes(PREFIX) == []


def test_unknown_profile(tmp_path):
    err = one_line_error(coserver("lab", "up", "--prefix", PREFIX, "--workdir", str(tmp_path),
                                  "--profile", "dl999-g0", check=False))
    assert "dl999-g0" in err
    nothing_made()


def test_workdir_that_is_not_writable(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    err = one_line_error(coserver("lab", "up", "--prefix", PREFIX, "--workdir", str(blocker / "lab"),
                                  check=False))
    assert "workdir" in err and str(blocker) in err
    nothing_made()


def test_busy_prefix_is_refused_and_left_alone(tmp_path):
    ns = f"{PREFIX}-cs1"
    netns.create(ns)
    try:
        err = one_line_error(coserver("lab", "up", "--prefix", PREFIX, "--workdir", str(tmp_path), check=False))
        assert "in use" in err and ns in err
        assert netns.list_namespaces(f"{PREFIX}-") == [ns]  # the busy one untouched, nothing added
    finally:
        netns.delete(ns)
    nothing_made()


def test_bad_prefix_and_bad_checkpoint_period(tmp_path):
    err = one_line_error(coserver("lab", "up", "--prefix", "no/slash", "--workdir", str(tmp_path), check=False))
    assert "prefix" in err
    proc = coserver("lab", "up", "--prefix", PREFIX, "--checkpoint-ms", "5", check=False)
    assert proc.returncode == 2 and "checkpoint-ms" in proc.stderr
    nothing_made()
