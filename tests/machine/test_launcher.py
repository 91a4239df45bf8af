"""QemuProcess against a real QEMU (TCG): start, stop on every path, safe kill, re-attach."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import time
import uuid

import pytest

from coserver.machine.errors import LaunchError
from coserver.machine.launcher import QemuProcess
from coserver.qmp import QmpSession
from coserver.sys.proc import ProcessRecord

pytestmark = [pytest.mark.qemu, pytest.mark.timeout(60)]


def _gone(pid: int, starttime: int) -> bool:
    """True if no process with that pid and start time exists (or it is a zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return True
    return int(fields[19]) != starttime or fields[0] == "Z"


def test_with_block_starts_and_cleans_up(qemu, qemu_args, tmp_path):
    with QemuProcess("vm", qemu_args, tmp_path, qemu=qemu) as proc:
        assert proc.alive()
        rec = ProcessRecord.of(proc.pid)
        assert int(proc.pid_path.read_text()) == proc.pid
        for sock in (proc.qmp_path, proc.ctl_path):
            mode = os.stat(sock).st_mode
            assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600, oct(mode)
        saved = json.loads(proc.record_path.read_text())
        assert (saved["pid"], saved["starttime"]) == (proc.pid, rec.starttime)
        assert saved["argv"] == proc.argv and "-daemonize" not in proc.argv
        assert proc.argv[0] == str(qemu.system)
        assert proc.argv[proc.argv.index("-pidfile") + 1] == str(proc.pid_path)
        assert os.getsid(proc.pid) == proc.pid != os.getsid(0)  # own session (setsid)
    assert _gone(rec.pid, rec.starttime)
    assert not proc.alive() and proc.returncode == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vm.log"]
    assert "--- coserver" in proc.log_path.read_text()


def test_stop_uses_qmp_quit_then_reports_gone(qemu_proc):
    assert qemu_proc.stop(timeout=4) == "quit"
    assert qemu_proc.returncode == 0
    assert qemu_proc.stop() == "gone"
    assert not qemu_proc.kill(signal.SIGTERM)


def test_stop_falls_back_to_sigterm_when_quit_cannot_be_sent(qemu_proc, arun):
    """Someone holds the private monitor (QEMU serves one client): quit cannot go through."""
    async def main() -> str:
        async with await QmpSession.connect(qemu_proc.ctl_path, name="squatter"):
            return qemu_proc.stop(timeout=2)
    t0 = time.monotonic()
    assert arun(main()) == "term"
    assert time.monotonic() - t0 < 2.5
    assert not qemu_proc.alive() and qemu_proc.returncode is not None


def test_with_block_stops_qemu_on_exception(qemu_args, tmp_path):
    with pytest.raises(RuntimeError, match="boom"):
        with QemuProcess("vm", qemu_args, tmp_path) as proc:
            rec = ProcessRecord.of(proc.pid)
            raise RuntimeError("boom")
    assert _gone(rec.pid, rec.starttime)
    assert not proc.pid_path.exists() and not proc.qmp_path.exists()


def test_stop_continues_a_paused_qemu(qemu_proc):
    qemu_proc.pause()
    assert qemu_proc.stop(timeout=4) == "quit"


def test_early_exit_on_bad_option_names_the_log_line(qemu_args, tmp_path):
    proc = QemuProcess("vm", [*qemu_args, "-bogus-option"], tmp_path)
    with pytest.raises(LaunchError) as err:
        with proc:
            pytest.fail("the with-block must not run")
    msg = str(err.value)
    assert "-bogus-option: invalid option" in msg and "status 1" in msg and "\n" not in msg
    assert proc.returncode == 1 and proc.pid is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vm.log"]


def test_exit_after_pidfile_is_a_launch_error_too(qemu_args, tmp_path):
    """A bad -device fails after QEMU wrote its pidfile and sockets: start() still sees it."""
    proc = QemuProcess("vm", [*qemu_args, "-device", "no-such-device"], tmp_path)
    with pytest.raises(LaunchError, match="no-such-device"):
        proc.start()
    assert proc.returncode not in (None, 0)
    assert not proc.record_path.exists()


def test_kill_never_touches_a_process_with_another_starttime(qemu_args, tmp_path):
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        real = ProcessRecord.of(sleeper.pid)
        assert real.signal(0)  # the check can say yes: the guard below is meaningful
        stale = ProcessRecord(real.pid, real.starttime + 1, real.boot)
        other_boot = ProcessRecord(real.pid, real.starttime, str(uuid.uuid4()))
        assert not stale.signal(signal.SIGKILL) and not other_boot.signal(signal.SIGKILL)
        assert not stale.alive()

        # a record left by a QEMU that died, its pid since reused by the sleeper
        (tmp_path / "vm.pid").write_text(f"{real.pid}\n")
        (tmp_path / "vm.json").write_text(json.dumps(
            {"pid": real.pid, "starttime": real.starttime + 1, "boot_id": real.boot,
             "argv": [], "args": [], "netns": None}))
        with pytest.raises(LaunchError, match="not the QEMU we started"):
            QemuProcess.attach(tmp_path, "vm")
        # start() over the stale files: no refusal, and the sleeper is left alone
        with QemuProcess("vm", qemu_args, tmp_path) as proc:
            assert proc.pid != real.pid
        assert sleeper.poll() is None, "the stale record's pid was signalled"
    finally:
        os.kill(sleeper.pid, signal.SIGKILL)
        sleeper.wait()


def test_reattach_from_record(qemu_args, tmp_path, arun):
    first = QemuProcess("vm", qemu_args, tmp_path).start()
    try:
        again = QemuProcess.attach(tmp_path, "vm")
        assert again.pid == first.pid and again.alive()
        assert again.argv == first.argv and again.qmp_path == first.qmp_path

        async def status() -> str:
            async with await QmpSession.connect(again.qmp_path, name="t") as s:
                return (await s.execute("query-status"))["status"]
        assert arun(status()) == "running"

        with pytest.raises(LaunchError, match="already runs"):
            QemuProcess("vm", qemu_args, tmp_path).start()

        assert again.stop(timeout=4) == "quit"
        assert not first.alive()
        assert first.stop() == "gone" and first.returncode == 0  # reaped by its parent object
        with pytest.raises(LaunchError, match="no QEMU record"):
            QemuProcess.attach(tmp_path, "vm")
    finally:
        first.stop(timeout=4)


def test_argv_must_be_a_list(tmp_path):
    with pytest.raises(TypeError):
        QemuProcess("vm", "-accel tcg", tmp_path)  # type: ignore[arg-type]
    with pytest.raises(LaunchError, match="bad QEMU process name"):
        QemuProcess("../vm", [], tmp_path)


@pytest.mark.netns
@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("ip"), reason="needs root and ip(8)")
def test_runs_inside_a_network_namespace(qemu, qemu_args, tmp_path):
    ns = f"coserver-test-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        with QemuProcess("vm", qemu_args, tmp_path, netns=ns) as proc:
            assert proc.argv[:4] == ["ip", "netns", "exec", ns]
            assert os.readlink(f"/proc/{proc.pid}/ns/net") != os.readlink("/proc/self/ns/net")
            # the recorded pid is QEMU itself (ip exec'ed it), not a wrapper
            assert os.readlink(f"/proc/{proc.pid}/exe") == str(qemu.system)
        assert not proc.alive() and proc.returncode == 0
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
