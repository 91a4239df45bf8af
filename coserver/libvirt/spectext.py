"""FT server specs as TOML text: the writing half of what hardware/_toml.py reads.

Python ships a TOML reader (tomllib) but no writer, and a spec is small and regular (scalars,
tables, arrays of tables, their per-host subtables), so it is written here rather than adding a
dependency. Keys and strings are always quoted or escaped per TOML 1.0, so any value a domain's XML
holds comes out as the same value when read back (tests/libvirt round-trip it through tomllib).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def string(value: str) -> str:
    """A TOML basic string: quotes, backslashes and control characters escaped."""
    out = []
    for ch in value:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def key(name: str) -> str:
    return name if _BARE_KEY.fullmatch(name) else string(name)


def value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return string(v)
    if isinstance(v, (list, tuple)) and all(not isinstance(x, Mapping) for x in v):
        return "[" + ", ".join(value(x) for x in v) + "]"
    raise TypeError(f"no TOML form for {type(v).__name__}")


def _is_tables(v: Any) -> bool:
    return isinstance(v, (list, tuple)) and bool(v) and all(isinstance(x, Mapping) for x in v)


def _table(lines: list[str], table: Mapping[str, Any], path: tuple[str, ...]) -> None:
    for name, v in table.items():
        if not isinstance(v, Mapping) and not _is_tables(v):
            lines.append(f"{key(name)} = {value(v)}")
    for name, v in table.items():
        here = ".".join(key(p) for p in (*path, name))
        if isinstance(v, Mapping):
            lines += ["", f"[{here}]"]
            _table(lines, v, (*path, name))
        elif _is_tables(v):
            for item in v:
                lines += ["", f"[[{here}]]"]
                _table(lines, item, (*path, name))


def _printable(text: str) -> str:
    """A comment line TOML accepts: control characters (other than tab) shown as '?'."""
    return "".join("?" if (ord(ch) < 0x20 and ch != "\t") or ord(ch) == 0x7F else ch for ch in text)


def dumps(doc: Mapping[str, Any], comments: Sequence[str] = ()) -> str:
    """doc as TOML: each table's plain keys first, then its tables and arrays of tables, in order;
    comments (one line each) on top."""
    lines = [f"# {_printable(c)}".rstrip() for text in comments for c in text.splitlines() or [""]]
    if lines:
        lines.append("")
    _table(lines, doc, ())
    return "\n".join(lines).lstrip("\n") + "\n"
