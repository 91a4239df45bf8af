"""Kernel switches read from /sys: a module parameter or a security file that says on or off."""

from __future__ import annotations

from pathlib import Path


def flag_on(path: Path) -> bool:
    """True if `path` reads "Y" or "1" (how /sys/module/*/parameters/* and /sys/fs/selinux/enforce say
    yes); False if it says anything else or cannot be read (the module or feature is absent)."""
    try:
        return path.read_text().strip() in ("Y", "1")
    except OSError:
        return False
