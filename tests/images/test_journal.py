"""The journal service's protocol, against the binary on the host and inside a booted guest.

The same tests run twice: `host` (the guest's static binary run on 127.0.0.1, fast) and `guest`
(the lab guest under QEMU TCG, reached through a user-mode hostfwd; one boot shared by all).
Counts are relative, since the guest's journal is shared by the tests.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from pathlib import Path

import pytest

from coserver.images.errors import JournalError
from coserver.images.journal_client import MAX_TEXT, JournalClient

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
SERIAL = "CS-LAB-0001"
SMBIOS_UUID = "5eed0000-c05e-4e00-8000-00000000c0de"


@pytest.fixture(scope="module")
def shared_guest(lab_guest, boot_guest, tmp_path_factory):
    """One guest for this module's tests, ended with the module: a TCG guest left running for the
    rest of the session took CPU from every lab test after it (2 cores)."""
    disk = lab_guest.new_data_disk(tmp_path_factory.mktemp("shared") / "data.qcow2")
    vm = boot_guest(disk, "shared", ["-smbios", f"type=1,serial={SERIAL}", "-uuid", SMBIOS_UUID])
    vm.wait_ready().close()
    yield vm
    vm.kill()


@pytest.fixture(params=["host", pytest.param("guest", marks=pytest.mark.qemu)])
def endpoint(request) -> tuple[str, int]:
    if request.param == "host":
        j = request.getfixturevalue("host_journal")
        return ("127.0.0.1", j.port)
    vm = request.getfixturevalue("shared_guest")
    return ("127.0.0.1", vm.port)


@pytest.fixture
def client(endpoint):
    c = JournalClient(*endpoint, timeout=20)
    yield c
    c.close()


def test_append_count_get(client: JournalClient):
    n0 = client.count()
    texts = ["hello", "two words", "  leading and trailing  ", "ünïcødé ✓", "APPEND inside",
             "x" * 200]
    seqs = [client.append(t) for t in texts]
    assert seqs == list(range(n0 + 1, n0 + 1 + len(texts)))
    assert client.count() == n0 + len(texts)
    for s, t in zip(seqs, texts, strict=True):
        assert client.get(s) == t
    # the wire format, exactly
    assert client.request("APPEND raw") == f"OK {n0 + len(texts) + 1}"
    assert client.request("COUNT") == f"COUNT {n0 + len(texts) + 1}"
    assert client.request(f"GET {seqs[1]}") == f"LINE {seqs[1]} two words"


def test_empty_text_is_a_record(client: JournalClient):
    s = client.append("")
    assert client.request(f"GET {s}") == f"LINE {s} "


def test_err_cases_keep_the_connection_usable(client: JournalClient):
    n = client.count()
    bad = ["", "NOPE", "count", "COUNT extra", "GET", "GET ", "GET x", "GET -1", "GET 1.5",
           f"GET {n + 1}", "GET 0", "GET 99999999999999999999999", "APPEND", "INFO please",
           "append lower"]
    for req in bad:
        reply = client.request(req)
        assert reply.startswith("ERR "), f"{req!r} -> {reply!r}"
        assert len(reply) > 4
        assert client.request("COUNT") == f"COUNT {n}", f"after {req!r}"
    with pytest.raises(JournalError) as ei:
        client.get(n + 1)
    assert ei.value.reason and "\n" not in str(ei.value)
    assert client.count() == n  # no ERR appended anything


def test_max_text_and_too_long_lines(client: JournalClient):
    big = "é" * (MAX_TEXT // 2)  # exactly MAX_TEXT bytes in UTF-8
    s = client.append(big)
    assert client.get(s) == big
    n = client.count()
    reply = client.request("APPEND " + "y" * (MAX_TEXT + 1))
    assert reply.startswith("ERR ")
    client.send_raw(b"APPEND " + b"z" * 100_000 + b"\n")  # far over any buffer: one ERR
    assert client.read_line().startswith("ERR ")
    assert client.count() == n
    assert client.request("GET 0").startswith("ERR ")


def test_nul_byte_refused_and_crlf_tolerated(client: JournalClient):
    n = client.count()
    client.send_raw(b"APPEND a\x00b\n")
    assert client.read_line().startswith("ERR ")
    client.send_raw(b"COUNT\r\n")
    assert client.read_line() == f"COUNT {n}"
    client.send_raw(b"APPEND crlf\r\n")
    assert client.read_line() == f"OK {n + 1}"
    assert client.get(n + 1) == "crlf"


def test_pipelined_and_byte_by_byte_requests(client: JournalClient):
    n = client.count()
    client.send_raw(b"APPEND p1\nAPPEND p2\nCOUNT\nGET %d\nBAD\nGET %d\n" % (n + 1, n + 2))
    replies = [client.read_line() for _ in range(6)]
    assert replies == [f"OK {n + 1}", f"OK {n + 2}", f"COUNT {n + 2}", f"LINE {n + 1} p1",
                       replies[4], f"LINE {n + 2} p2"]
    assert replies[4].startswith("ERR ")
    for b in b"APPEND slow\n":
        client.send_raw(bytes([b]))
        time.sleep(0.002)
    assert client.read_line() == f"OK {n + 3}"
    assert client.get(n + 3) == "slow"


def test_info(client: JournalClient, request):
    raw = client.request("INFO")
    assert raw.startswith("INFO {") and raw.endswith("}")
    info = json.loads(raw[len("INFO "):])
    for k in ("sys_vendor", "product_name", "product_serial", "product_uuid", "boot_id", "uptime"):
        assert k in info
    assert UUID_RE.match(info["boot_id"])
    assert isinstance(info["uptime"], (int, float)) and info["uptime"] > 0
    assert info["count"] == client.count()
    again = client.info()
    assert again["boot_id"] == info["boot_id"] and again["uptime"] >= info["uptime"]
    if request.node.callspec.params["endpoint"] == "guest":
        assert info["sys_vendor"] == "QEMU"
        assert info["product_serial"] == SERIAL
        assert info["product_uuid"] == SMBIOS_UUID
        assert info["product_name"]


def test_several_clients_at_once(endpoint):
    clients = [JournalClient(*endpoint, timeout=30) for _ in range(4)]
    try:
        n0 = clients[0].count()
        acks: dict[int, str] = {}
        lock = threading.Lock()
        errors: list[BaseException] = []

        def worker(i: int, c: JournalClient) -> None:
            try:
                for k in range(10):
                    text = f"client{i}-{k}"
                    s = c.append(text)
                    with lock:
                        acks[s] = text
            except BaseException as exc:  # surfaced below
                errors.append(exc)

        # an idle client with half a request must not block the others
        clients[3].send_raw(b"APPE")
        threads = [threading.Thread(target=worker, args=(i, c)) for i, c in enumerate(clients[:3])]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors
        assert sorted(acks) == list(range(n0 + 1, n0 + 31))
        clients[3].send_raw(b"ND idle\n")
        idle = clients[3].read_line()
        assert idle.startswith("OK ")
        for s, text in acks.items():
            assert clients[s % 4].get(s) == text
    finally:
        for c in clients:
            c.close()


def test_half_close_gets_its_replies(endpoint):
    with socket.create_connection(endpoint, timeout=20) as s:
        s.sendall(b"COUNT\nINFO\n")
        s.shutdown(socket.SHUT_WR)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    lines = data.decode().splitlines()
    assert len(lines) == 2 and lines[0].startswith("COUNT ") and lines[1].startswith("INFO {")


def test_dropped_client_mid_line_harms_nobody(endpoint):
    with JournalClient(*endpoint, timeout=20) as c:
        n = c.count()
    with socket.create_connection(endpoint, timeout=20) as s:
        s.sendall(b"APPEND never finished")
    time.sleep(0.3)
    with JournalClient(*endpoint, timeout=20) as c:
        assert c.count() == n  # an unfinished line is no request
        assert c.append("after the drop") == n + 1


# ---------------------------------------------------------------- host-only: the file


def records(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_record_format_on_disk(host_journal):
    import zlib
    with host_journal.client() as c:
        c.append("alpha")
        c.append("b e t a")
    assert records(host_journal.file) == [
        f"1 {zlib.crc32(b'alpha'):08x} alpha", f"2 {zlib.crc32(b'b e t a'):08x} b e t a"]


def test_survives_kill_and_ignores_torn_tail(host_journal):
    import zlib
    with host_journal.client() as c:
        for i in range(5):
            assert c.append(f"line {i}") == i + 1
    host_journal.kill()
    # a crash mid-append: the 6th record only half written
    with open(host_journal.file, "ab") as f:
        f.write(b"6 %08x half a li" % zlib.crc32(b"half a line"))
    host_journal.start()
    with host_journal.client() as c:
        assert c.count() == 5
        assert [c.get(i + 1) for i in range(5)] == [f"line {i}" for i in range(5)]
        assert c.append("next") == 6
        assert c.get(6) == "next"
    assert "dropping" in host_journal.log.read_text()
    assert records(host_journal.file)[-1] == f"6 {zlib.crc32(b'next'):08x} next"
    host_journal.restart()
    with host_journal.client() as c:
        assert c.count() == 6 and c.get(6) == "next"


@pytest.mark.parametrize("tail", [
    b"\0" * 700,                                   # size grew, data never reached the disk
    b"6 00000000 wrong crc\n",                     # complete line, bad checksum
    b"9 %08x out of sequence\n",                   # wrong seq
    b"\0\0\0\0 0 garbage\n",
    b"6 zzzzzzzz x\n",
])
def test_invalid_tail_dropped(host_journal, tail):
    import zlib
    if b"%08x" in tail:
        tail = tail % zlib.crc32(b"out of sequence")
    with host_journal.client() as c:
        for i in range(5):
            c.append(f"r{i}")
    host_journal.kill()
    with open(host_journal.file, "ab") as f:
        f.write(tail)
    host_journal.start()
    with host_journal.client() as c:
        assert c.count() == 5
        assert c.append("fresh") == 6
        assert [c.get(i) for i in range(1, 7)] == ["r0", "r1", "r2", "r3", "r4", "fresh"]


def test_bad_arguments_exit_nonzero(journal_binary, tmp_path):
    import subprocess
    r = subprocess.run([str(journal_binary), "-p", "notaport"], capture_output=True,
                       text=True, timeout=10)
    assert r.returncode == 2 and "usage" in r.stderr
    r = subprocess.run([str(journal_binary), "-p", "0", "-f", str(tmp_path / "no/dir/j")],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 1 and "cannot open" in r.stderr


def test_power_requests_are_refused_without_dash_p(host_journal):
    """The host-run journal (no -P) must never reboot the machine it runs on."""
    with JournalClient("127.0.0.1", host_journal.port) as c:
        n = c.count()
        for req in ("REBOOT", "POWEROFF"):
            assert c.request(req).startswith("ERR power requests are off")
        assert c.count() == n
        assert c.request("MEMLOAD 16").startswith("ERR MEMLOAD is off")
        assert c.request("MEMSTAT") == "MEMSTAT 0 0 0 0"


@pytest.mark.qemu
def test_memload_fills_guest_ram_and_keeps_dirtying_it(shared_guest):
    """MEMLOAD: RAM in use (filled, non-zero) and dirtied at the asked rate, in a child of the
    journal, which keeps answering; MEMLOAD 0 ends it. What the live-protection bench loads."""
    with JournalClient("127.0.0.1", shared_guest.port, timeout=20) as c:
        for bad in ("MEMLOAD", "MEMLOAD x", "MEMLOAD 1 2 3", f"MEMLOAD {2**21}"):
            assert c.request(bad).startswith("ERR"), bad
        stat = c.wait_memload(48, 40, timeout=60)
        assert (stat.mib, stat.filled_mib, stat.rate_mib_s) == (48, 48, 40)
        t0, first = time.monotonic(), c.memstat().dirtied_pages
        seq = c.append("still answering under a memory load")
        assert c.get(seq) == "still answering under a memory load"
        time.sleep(1.0)
        rate = (c.memstat().dirtied_pages - first) / 256 / (time.monotonic() - t0)
        assert 10 < rate <= 45, f"dirtied {rate:.1f} MiB/s, asked 40"
        assert c.request("MEMLOAD 0") == "OK memload 0 0"
        assert c.memstat() == type(stat)(0, 0, 0, 0)


@pytest.mark.qemu
def test_the_guest_powers_itself_off_and_keeps_every_ack(lab_guest, boot_guest, tmp_path):
    """POWEROFF: the guest's own shutdown ends QEMU (exit 0, not a kill); every acked append is on
    the disk when the guest boots again."""
    disk = lab_guest.new_data_disk(tmp_path / "data.qcow2")
    vm = boot_guest(disk, "poweroff")
    with vm.wait_ready() as c:
        acked = {c.append(f"before-off-{i}"): f"before-off-{i}" for i in range(20)}
        c.poweroff()
    assert vm.proc.wait(timeout=60) == 0
    again = boot_guest(disk, "after-poweroff")
    with again.wait_ready() as c:
        assert {seq: c.get(seq) for seq in acked} == acked
    again.kill()
