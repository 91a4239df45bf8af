"""`site check`'s libvirt line (backend = "libvirt"): the local libvirtd answers, and its qemu.conf
lets the QEMUs it starts open what an FT server's copy needs.

What libvirt cannot express goes in the domain's `<qemu:commandline>` (coserver/libvirt/domainxml.py):
the COLO disk graph on the site's images, the controller's QMP socket, the TLS keys. libvirt neither
chowns nor labels those paths, so a QEMU running as Debian's default `libvirt-qemu` user cannot open
root's 0600 images and keys, and an AppArmor (or SELinux) profile made from the domain XML alone
denies them: the domain starts and its QEMU fails on the first disk, in a log the operator must
find. Said here, before any FT server is started, with the line to change.
"""

from __future__ import annotations

import grp
import pwd
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path

from coserver.errors import clip
from coserver.sys.sysfs import flag_on

QEMU_CONF = Path("/etc/libvirt/qemu.conf")
#: The user (and group) Debian's libvirt runs QEMU as when qemu.conf names none.
DEFAULT_QEMU_USER = "libvirt-qemu"
CONNECT_TIMEOUT_S = 5.0
#: Where the kernel says a mandatory access control is active (libvirt then confines QEMU by default).
CONFINEMENT = {"AppArmor": Path("/sys/module/apparmor/parameters/enabled"), "SELinux": Path("/sys/fs/selinux/enforce")}
_SETTING = re.compile(r'^\s*([a-z_]+)\s*=\s*(?:"([^"]*)"|(\S+))')
FIX = 'set user = "+0", group = "+0" and security_driver = "none" (README "libvirt")'


def parse_qemu_conf(text: str) -> dict[str, str]:
    """qemu.conf's plain `key = "value"` and `key = 0` settings (lists are kept as their first token;
    comments and blank lines skipped)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        m = None if line.lstrip().startswith("#") else _SETTING.match(line)
        if m:
            out[m.group(1)] = m.group(2) if m.group(2) is not None else m.group(3)
    return out


def _is_root(name: str, *, group: bool) -> bool:
    """qemu.conf's user (or group): "+0" (a number), or a name the user (group) database resolves to id 0."""
    if name.startswith("+"):
        return name[1:] == "0"
    try:
        return (grp.getgrnam(name).gr_gid if group else pwd.getpwnam(name).pw_uid) == 0
    except KeyError:
        return False


def confinement_active(paths: dict[str, Path] = CONFINEMENT) -> str | None:
    """The mandatory access control the kernel enforces ("AppArmor", "SELinux"), or None."""
    return next((name for name, path in paths.items() if flag_on(path)), None)


def qemu_conf_problems(conf: dict[str, str], *, confined_by: str | None) -> list[str]:
    """Why QEMUs started by this libvirtd could not open an FT server's files ([] if they can)."""
    problems = []
    for key in ("user", "group"):
        who = conf.get(key, DEFAULT_QEMU_USER)
        if not _is_root(who, group=key == "group"):
            problems.append(f"QEMU runs as {key} {who!r}, which cannot open the site's images, sockets and "
                            "TLS keys (root's, 0600; libvirt does not chown what <qemu:commandline> names)")
    driver = conf.get("security_driver")
    if driver not in (None, "none") or (driver is None and confined_by):
        what = driver or f"{confined_by} (libvirt's default here)"
        problems.append(f"security_driver {what} confines QEMU to the files the domain XML names; the COLO "
                        "disks and keys are in <qemu:commandline> and would be denied")
    return problems


def _connect(uri: str) -> str:
    """libvirtd's version, asked over a read-only connection (raises libvirt.libvirtError)."""
    import libvirt

    conn = libvirt.openReadOnly(uri)
    try:
        v = conn.getLibVersion()
        return f"{v // 1_000_000}.{v // 1000 % 1000}.{v % 1000}"
    finally:
        conn.close()


def libvirt_line(uri: str, *, conf_path: Path = QEMU_CONF, confined_by: str | None | bool = True,
                 connect: Callable[[str], str] = _connect, timeout: float = CONNECT_TIMEOUT_S) -> tuple[bool, str]:
    """(ok, detail) of the libvirt check. confined_by: True asks the kernel; a name or None is given."""
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            version = pool.submit(connect, uri).result(timeout=timeout)
    except FutureTimeout:
        return False, f"libvirt {uri}: no answer within {timeout:g} s (is libvirtd running? systemctl start libvirtd)"
    except Exception as exc:  # noqa: BLE001 - libvirt's own error (or a missing module): one line, what and where
        return False, f"libvirt {uri}: cannot connect: {clip(' '.join(str(exc).split()), 160)}"
    try:
        conf = parse_qemu_conf(conf_path.read_text())
    except FileNotFoundError:
        conf = {}
    except OSError as exc:
        return False, f"{conf_path}: cannot read: {exc.strerror or exc}"
    active = confinement_active() if confined_by is True else confined_by or None
    problems = qemu_conf_problems(conf, confined_by=active)
    if problems:
        return False, f"{conf_path}: {'; '.join(problems)}: {FIX}"
    return True, f"libvirt {version} at {uri} answers; {conf_path} runs QEMU as root, unconfined"
