"""QEMU option values built from paths survive a comma (issue 13: a workdir with a comma broke
-chardev/-qmp). No QEMU is started: the argv lists are parsed as QEMU's QemuOpts parser does."""

from __future__ import annotations

from pathlib import Path

from coserver.colo.argv import Node, primary_args, secondary_args
from coserver.colo.guest import BasicGuestHardware
from coserver.colo.settings import SyncPorts
from coserver.machine.launcher import QemuProcess, qmp_argv
from coserver.machine.qemuopts import qemu_opt_value
from coserver.paths import QemuInstall


def parse_opts(text: str, implied: str | None = None) -> dict[str, str]:
    """key=value,... as QEMU's qemu_opts_do_parse reads it: ',,' is a comma inside a value; a
    first part without '=' is the value of the implied key (e.g. the chardev backend)."""
    parts: list[str] = []
    current = ""
    i = 0
    while i < len(text):
        if text[i] == ",":
            if text[i + 1:i + 2] == ",":
                current += ","
                i += 2
                continue
            parts.append(current)
            current = ""
        else:
            current += text[i]
        i += 1
    parts.append(current)
    out: dict[str, str] = {}
    for n, part in enumerate(parts):
        key, eq, value = part.partition("=")
        if not eq:
            assert n == 0 and implied is not None, f"{part!r} in {text!r} is not key=value"
            out[implied] = key
        else:
            out[key] = value
    return out


def option(argv: list[str], flag: str, containing: str = "") -> str:
    found = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == flag and containing in argv[i + 1]]
    assert len(found) == 1, (flag, containing, argv)
    return found[0]


COMMA_DIR = Path("/tmp/lab,with,commas/cs1")


def test_qemu_opt_value_doubles_commas() -> None:
    assert qemu_opt_value("/a,b,,c") == "/a,,b,,,,c"
    assert qemu_opt_value(Path("/plain")) == "/plain"
    assert parse_opts(f"socket,path={qemu_opt_value('/x,y')},server=on", "backend") == \
        {"backend": "socket", "path": "/x,y", "server": "on"}


def test_qmp_socket_path_with_a_comma() -> None:
    flag, value = qmp_argv(COMMA_DIR / "qemu.qmp")
    assert flag == "-qmp" and value.startswith("unix:")
    assert parse_opts(value[len("unix:"):], "path") == {"path": str(COMMA_DIR / "qemu.qmp"), "server": "on",
                                                       "wait": "off"}


def test_launcher_argv_with_a_comma_in_the_workdir() -> None:
    qemu = QemuInstall(system=Path("/usr/bin/qemu-system-x86_64"), img=Path("/usr/bin/qemu-img"), version="8.2.0",
                       source="env", reason="test")
    argv = QemuProcess("qemu", ["-display", "none"], COMMA_DIR, qemu=qemu).build_argv()
    paths = [parse_opts(argv[i + 1][len("unix:"):], "path")["path"] for i, a in enumerate(argv) if a == "-qmp"]
    assert paths == [str(COMMA_DIR / "qemu.qmp"), str(COMMA_DIR / "qemu.ctl")]
    assert argv[argv.index("-pidfile") + 1] == str(COMMA_DIR / "qemu.pid")  # taken whole by QEMU: not escaped


def _node(workdir: Path, overlay_dir: Path | None = None) -> Node:
    return Node(name="cs1", workdir=workdir, sync_addr="10.0.0.1", tap="tap0", disk=workdir / "disk,0.qcow2",
                mac="52:54:00:12:34:56", overlay_dir=overlay_dir)


def _hw(kernel: Path) -> BasicGuestHardware:
    return BasicGuestHardware(kernel=kernel, initrd=kernel.with_name("initrd,img"), append="console=ttyS0")


def test_colo_serial_chardev_with_a_comma_in_the_workdir() -> None:
    node = _node(COMMA_DIR)
    for argv in (primary_args(node, _hw(COMMA_DIR / "vmlinuz"), "tcg"),
                 secondary_args(node, _hw(COMMA_DIR / "vmlinuz"), "tcg", primary_sync_addr="10.0.0.2",
                                ports=SyncPorts(), qemu_version=(8, 2, 0))):
        serial = parse_opts(option(argv, "-chardev", "id=serial0"), "backend")
        assert serial["path"] == str(COMMA_DIR / "serial.sock")
        assert serial["logfile"] == str(COMMA_DIR / "serial.log")
        assert serial["server"] == "on" and serial["logappend"] == "on"
        assert argv[argv.index("-kernel") + 1] == str(COMMA_DIR / "vmlinuz")  # whole, not escaped


def test_colo_argv_without_commas_is_unchanged() -> None:
    node = _node(Path("/tmp/lab/cs1"))
    argv = primary_args(node, _hw(Path("/tmp/lab/cs1/vmlinuz")), "tcg")
    assert option(argv, "-chardev", "id=serial0") == (
        "socket,id=serial0,path=/tmp/lab/cs1/serial.sock,server=on,wait=off,"
        "logfile=/tmp/lab/cs1/serial.log,logappend=on")
