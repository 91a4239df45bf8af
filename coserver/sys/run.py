"""One way to run a program: an argv list (never a shell string), a deadline, one-line errors.

Every caller says what it was doing (`what`) and which error class its layer
raises; the message is "<what>: <program> failed: <the program's last word>",
"... timed out after N s" or "... cannot run ...", so a failed build step or
qemu-img call reads the same everywhere.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from coserver.errors import CoserverError


class RunError(CoserverError):
    """A program could not be run, timed out, or failed."""


def last_line(res: subprocess.CompletedProcess[str]) -> str:
    """The last non-empty line of the program's stderr (or stdout), else its exit status."""
    lines = [ln.strip() for ln in (res.stderr or res.stdout or "").splitlines() if ln.strip()]
    return lines[-1] if lines else f"exit status {res.returncode}"


def run(argv: Sequence[str], what: str, *, timeout: float, error: type[CoserverError] = RunError,
        program: str | None = None, reason: Callable[[subprocess.CompletedProcess[str]], str] = last_line,
        check: bool = True, cwd: str | Path | None = None, **kw: Any) -> subprocess.CompletedProcess[str]:
    """Run argv with output captured as text, at most `timeout` s.

    Raises `error` if it cannot start or times out, and (check) if it exits non-zero,
    with reason(result) as the explanation. `program` names it in messages (argv[0]).
    """
    argv = [str(a) for a in argv]
    name = program or argv[0]
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, cwd=cwd, **kw)
    except subprocess.TimeoutExpired as exc:
        raise error(f"{what}: {name} timed out after {timeout:.0f} s") from exc
    except OSError as exc:
        raise error(f"{what}: cannot run {argv[0]}: {exc.strerror or exc}") from exc
    if check and res.returncode != 0:
        raise error(f"{what}: {name} failed: {reason(res)}")
    return res
