"""QEMU's option syntax (``-chardev socket,id=x,path=...``): how a value is written into it.

QEMU splits ``key=value,key=value`` at every single comma; a comma inside a value is written
twice. A path (a workdir, a socket, a log, an image) can hold a comma, so every option value
built from a path goes through :func:`qemu_opt_value`. Options QEMU takes whole (``-kernel``,
``-initrd``, ``-pidfile``, ``-append``) and JSON ``-blockdev`` values are not escaped: there
a doubled comma would be two commas.
"""

from __future__ import annotations

from pathlib import Path


def qemu_opt_value(value: str | Path) -> str:
    """value as one value of a QEMU key=value,... option: each ',' written as ',,'."""
    return str(value).replace(",", ",,")
