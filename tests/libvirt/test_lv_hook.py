"""The hook as libvirtd runs it: a separate process, arguments and the domain XML on stdin, against
a real control socket (controller.control.serve) in the test's event loop."""

from __future__ import annotations

import asyncio
import io
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from lvhelp import EXAMPLE, ROOT, coserver_cli, env

from coserver.controller import control
from coserver.hardware.spec import load_spec
from coserver.libvirt import hook, starttoken
from coserver.libvirt.domainxml import domain_xml_for_spec
from coserver.libvirt.metadata import ServerTag

PLAIN = b"<domain type='kvm'><name>web</name><memory>1</memory></domain>"


def ft_xml(token: str | None = None) -> bytes:
    tag = ServerTag("lab-cs", "journal", "primary", 4, token)
    return domain_xml_for_spec(load_spec(EXAMPLE), "cs1", tag, qmp_socket="/q.sock").encode()


def run_hook(run_dir: Path, xml: bytes, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "coserver.libvirt.hook", "--run-dir", str(run_dir), *args],
                          input=xml, capture_output=True, env=env(), timeout=30)


async def run_hook_async(run_dir: Path, xml: bytes, *args: str) -> tuple[int, bytes]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "coserver.libvirt.hook", "--run-dir", str(run_dir), *args,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env())
    _, err = await proc.communicate(xml)
    assert proc.returncode is not None
    return proc.returncode, err


def test_release_is_delivered_to_the_controller(run_dir: Path, arun: Any) -> None:
    got: list[dict[str, Any]] = []

    async def handle(request: dict[str, Any]) -> dict[str, Any]:
        got.append(request)
        return {"ok": True}

    async def go() -> tuple[int, bytes]:
        server = await control.serve(run_dir / "journal.sock", handle)
        try:
            return await run_hook_async(run_dir, ft_xml(), "journal", "release", "end", "-")
        finally:
            server.close()

    rc, err = arun(go())
    assert rc == 0, err
    assert got == [{"cmd": "qemu-released", "name": "journal", "domain": "journal", "role": "primary", "epoch": 4,
                    "reason": "libvirt: release end -"}]


def test_a_domain_without_coserver_metadata_is_left_alone(run_dir: Path) -> None:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(run_dir / "web.sock"))
    listener.listen(1)
    listener.setblocking(False)
    try:
        for op in ("prepare", "start", "release", "reconnect", "migrate"):
            got = run_hook(run_dir, PLAIN, "web", op, "begin", "-")
            assert got.returncode == 0 and got.stderr == b"", (op, got.stderr)
        with pytest.raises(BlockingIOError):
            listener.accept()   # nobody connected
    finally:
        listener.close()


def test_reconnect_exits_0_even_without_a_controller_or_with_junk(run_dir: Path) -> None:
    for xml in (ft_xml(), ft_xml()[:200], b"\xff" + hook.NAMESPACE_BYTES):
        got = run_hook(run_dir, xml, "journal", "reconnect", "begin", "-")
        assert got.returncode == 0, got.stderr
    got = run_hook(run_dir, ft_xml(), "journal", "release", "end", "-")   # no controller: told on stderr, exit 0
    assert got.returncode == 0 and b"could not tell the controller" in got.stderr


def test_operators_start_is_refused_with_one_line(run_dir: Path) -> None:
    for op in ("prepare", "start", "restore"):
        got = run_hook(run_dir, ft_xml(), "journal", op, "begin", "-")
        assert got.returncode == 1
        lines = got.stderr.decode().splitlines()
        assert len(lines) == 1 and lines[0].endswith("use `coserver server start journal`"), lines
    # an old token from an earlier start, with no file (the start is over): refused too
    got = run_hook(run_dir, ft_xml("ab" * 16), "journal", "prepare", "begin", "-")
    assert got.returncode == 1 and b"no start token" in got.stderr


def test_the_controllers_start_passes_and_only_once(run_dir: Path) -> None:
    token = starttoken.issue(run_dir, "journal")
    assert (os.stat(starttoken.token_file(run_dir, "journal")).st_mode & 0o777) == 0o600
    for op in ("prepare", "start", "started"):
        got = run_hook(run_dir, ft_xml(token), "journal", op, "begin", "-")
        assert got.returncode == 0, got.stderr
    other = run_hook(run_dir, ft_xml("cd" * 16), "journal", "prepare", "begin", "-")
    assert other.returncode == 1 and b"not the one the controller issued" in other.stderr
    starttoken.withdraw(run_dir, "journal")
    assert run_hook(run_dir, ft_xml(token), "journal", "prepare", "begin", "-").returncode == 1


def test_stale_or_open_token_files_do_not_count(run_dir: Path) -> None:
    token = starttoken.issue(run_dir, "journal")
    path = starttoken.token_file(run_dir, "journal")
    assert starttoken.refusal(run_dir, "journal", token) is None
    assert "old" in (starttoken.refusal(run_dir, "journal", token, now=time.time() + 3600) or "")
    path.chmod(0o644)
    assert "private" in (starttoken.refusal(run_dir, "journal", token) or "")


def test_returns_within_150_ms_when_the_controller_accepts_but_never_answers(run_dir: Path) -> None:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(run_dir / "journal.sock"))
    listener.listen(4)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.05)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])   # accept and keep it open, never reply
            except TimeoutError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        err = io.StringIO()
        t0 = time.monotonic()
        rc = hook.main(["--run-dir", str(run_dir), "journal", "release", "end", "-"], io.BytesIO(ft_xml()), err)
        took = time.monotonic() - t0
        assert rc == 0 and "no reply within 100 ms" in err.getvalue()
        assert took < 0.15, took
        # the same as its own process, less the interpreter's start (measured on a domain not ours)
        base = min(_timed(run_dir, PLAIN, "web") for _ in range(3))
        whole = min(_timed(run_dir, ft_xml(), "journal") for _ in range(2))
        assert held, "the hook never connected"
        assert whole - base < 0.25, (whole, base)
    finally:
        stop.set()
        t.join()
        for s in held:
            s.close()
        listener.close()


def _timed(run_dir: Path, xml: bytes, name: str) -> float:
    t0 = time.monotonic()
    assert run_hook(run_dir, xml, name, "release", "end", "-").returncode == 0
    return time.monotonic() - t0


def test_hook_process_loads_no_libvirt_asyncio_or_hardware(run_dir: Path) -> None:
    got = subprocess.run([sys.executable, "-X", "importtime", "-m", "coserver.libvirt.hook", "--run-dir",
                          str(run_dir), "journal", "prepare", "begin", "-"],
                         input=ft_xml(), capture_output=True, env=env(), timeout=30)
    loaded = {line.rsplit("|", 1)[1].strip() for line in got.stderr.decode().splitlines()
              if line.startswith("import time:") and "|" in line}
    assert "coserver.libvirt.metadata" in loaded   # the trace was read
    assert not {"libvirt", "asyncio", "coserver.hardware", "coserver.controller", "dataclasses", "typing"} & loaded


def test_install_hook_writes_an_executable_script_once(run_dir: Path, tmp_path: Path) -> None:
    hooks = tmp_path / "qemu.d"
    got = coserver_cli("libvirt", "install-hook", "--hooks-dir", str(hooks), "--run-dir", str(run_dir))
    assert got.returncode == 0, got.stderr
    script = hooks / "50-coserver"
    assert (script.stat().st_mode & 0o7777) == 0o755
    text = script.read_text()
    assert text.startswith(f"#!{sys.executable} -I\n") and repr(str(ROOT)) in text and repr(str(run_dir)) in text
    again = coserver_cli("libvirt", "install-hook", "--hooks-dir", str(hooks), "--run-dir", str(run_dir))
    assert again.returncode == 0 and "already installed" in again.stdout and script.read_text() == text
    # libvirtd's way: exec the script with the four arguments and the XML on stdin, a clean environment
    for xml, name, rc in ((PLAIN, "web", 0), (ft_xml(), "journal", 1)):
        run = subprocess.run([str(script), name, "prepare", "begin", "-"], input=xml, capture_output=True,
                             env={"PATH": "/usr/bin:/bin"}, timeout=30)
        assert run.returncode == rc, run.stderr
    script.write_text("#!/bin/sh\nexit 1\n")
    fixed = coserver_cli("libvirt", "install-hook", "--hooks-dir", str(hooks), "--run-dir", str(run_dir))
    assert fixed.returncode == 0 and script.read_text() == text
