"""The libvirt QEMU hook (/etc/libvirt/hooks/qemu.d/50-coserver): tell the controller, never libvirt.

libvirtd runs every hook synchronously, with ``DOMAIN OPERATION SUB-OP EXTRA`` as arguments and the
domain's XML on stdin, and waits for it: a hook that calls back into libvirt deadlocks, a slow one
stalls every domain on the host, and a failing ``reconnect`` makes libvirtd kill that QEMU. So:

- a domain without coserver's metadata (coserver.libvirt.metadata) is none of our business: exit 0
  at once (a byte search of stdin, before any XML is parsed);
- ``reconnect`` (libvirtd restarted and finds the QEMU running): exit 0, whatever else is wrong;
- ``release`` (the QEMU is gone and libvirt has cleaned up): one ``qemu-released`` request to the FT
  server's controller on its control socket (``<run_dir>/<name>.sock``, as controller.siteconfig
  places it), bounded to NOTIFY_TIMEOUT_S, failures ignored: exit 0;
- ``prepare``/``start`` (and ``restore``/``migrate``, the other ways libvirt brings a copy up)
  of a domain the controller did not start, i.e. without a valid per-start token
  (coserver.libvirt.starttoken): exit 1 with one line on stderr, which libvirt shows the
  operator ("use `coserver server start NAME`");
- anything else: exit 0.

The control socket client is written out here rather than using controller.control.ask: that
module imports asyncio, which alone costs ~70 ms on a lab machine, on every hook call of every
domain; it would also make libvirt/ depend on controller/, which will want to use libvirt/. The
request is one JSON line and the reply one line, as control.serve speaks them (a test runs the
hook against control.serve). Only the standard library is loaded before the metadata check.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

TYPE_CHECKING = False   # typing.TYPE_CHECKING without importing typing (~3 ms per hook call)
if TYPE_CHECKING:
    from typing import BinaryIO, TextIO

#: Where controllers keep their control sockets and start tokens (site file: run_dir);
#: `coserver libvirt install-hook` writes the site's into the hook script.
DEFAULT_RUN_DIR = "/run/coserver"
#: How long the hook may wait for a controller: libvirtd is blocked meanwhile.
NOTIFY_TIMEOUT_S = 0.1
#: controller.control.Command.QEMU_RELEASED (a test keeps them equal).
QEMU_RELEASED = "qemu-released"
#: Operations that bring a copy of the domain up.
GUARDED = ("prepare", "start", "restore", "migrate")
#: The namespace URI as bytes (coserver.libvirt.metadata.NAMESPACE; a test keeps them equal): its
#: absence in stdin means "not ours" without parsing anything.
NAMESPACE_BYTES = b"https://coserver.dev/xmlns/libvirt/1"
MAX_XML = 16 << 20


def notify(path: str, request: dict[str, object], timeout: float = NOTIFY_TIMEOUT_S) -> str | None:
    """Send one request line to a control socket and read the reply, all within `timeout`;
    None if the controller answered ok, else what went wrong (a few words)."""
    import json
    import socket
    import time

    deadline = time.monotonic() + timeout
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(path)
            s.sendall(json.dumps(request).encode() + b"\n")
            buf = b""
            while not buf.endswith(b"\n") and len(buf) < 65536:
                left = deadline - time.monotonic()
                if left <= 0:
                    return f"{path}: no reply within {timeout * 1000:.0f} ms"
                s.settimeout(left)
                chunk = s.recv(4096)
                if not chunk:
                    break
                buf += chunk
        reply = json.loads(buf)
    except TimeoutError:
        return f"{path}: no reply within {timeout * 1000:.0f} ms"
    except (OSError, ValueError) as exc:
        return f"{path}: {exc}"
    if not isinstance(reply, dict) or not reply.get("ok"):
        return f"{path}: {reply.get('error') if isinstance(reply, dict) else reply!r}"
    return None


def _read(stdin: BinaryIO | None) -> bytes:
    if stdin is None or stdin.isatty():
        return b""
    return stdin.read(MAX_XML)


def run(args: Sequence[str], xml: bytes, run_dir: str, err: TextIO) -> int:
    """The hook's decision for one call (see the module docstring); returns the exit status."""
    if len(args) < 2 or NAMESPACE_BYTES not in xml:
        return 0
    domain, op = args[0], args[1]
    if op == "reconnect" or (op not in GUARDED and op != "release"):
        return 0
    from coserver.libvirt import metadata, starttoken
    from coserver.libvirt.errors import MetadataError

    try:
        tag = metadata.parse(xml)
    except MetadataError as exc:
        if op in GUARDED:
            print(f"coserver: domain {domain}: {exc}; refusing to {op} it", file=err)
            return 1
        return 0
    if tag is None:
        return 0
    if op == "release":
        reason = f"libvirt: {' '.join(args[1:4])}"
        problem = notify(os.path.join(run_dir, f"{tag.name}.sock"),
                         {"cmd": QEMU_RELEASED, "name": tag.name, "domain": domain, "role": tag.role,
                          "epoch": tag.epoch, "reason": reason})
        if problem:
            print(f"coserver: could not tell the controller of {tag.name} that its QEMU is gone: {problem}",
                  file=err)
        return 0
    why = starttoken.refusal(Path(run_dir), tag.name, tag.token)
    if why is None:
        return 0
    print(f"coserver: domain {domain} is FT server {tag.name}'s copy and only its controller starts it "
          f"({why}): use `coserver server start {tag.name}`", file=err)
    return 1


def main(argv: Sequence[str] | None = None, stdin: BinaryIO | None = None, err: TextIO | None = None) -> int:
    """``[--run-dir DIR] DOMAIN OPERATION SUB-OP EXTRA``, the domain XML on stdin."""
    args = list(sys.argv[1:] if argv is None else argv)
    run_dir = DEFAULT_RUN_DIR
    if len(args) >= 2 and args[0] == "--run-dir":
        run_dir, args = args[1], args[2:]
    err = err or sys.stderr
    try:
        xml = _read(stdin if stdin is not None else sys.stdin.buffer if sys.stdin else None)
    except OSError:
        xml = b""
    try:
        return run(args, xml, run_dir, err)
    except Exception as exc:   # never a traceback into libvirtd's log; never block an unrelated start
        print(f"coserver hook: {type(exc).__name__}: {exc}", file=err)
        op = args[1] if len(args) > 1 else ""
        return 1 if op in GUARDED and NAMESPACE_BYTES in xml else 0


if __name__ == "__main__":
    sys.exit(main())
