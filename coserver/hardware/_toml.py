"""Strict reading of TOML tables: every key is typed, checked and accounted for.

A :class:`Table` wraps one TOML table. Each typed getter records the key as known; ``finish()``
then refuses any key that no getter asked for, so a misspelt key is an error, never ignored.
Every failure is a :class:`~coserver.hardware.errors.SchemaError` naming file, key and reason.
Values and keys echoed in a message are clipped (coserver.errors.clip): a file may hold a
100,000-character string, a message stays one short line. A file nested deeper than
:data:`MAX_DEPTH` levels is refused (tomllib recurses per level: 5000 nested arrays would be a
RecursionError traceback).
"""

from __future__ import annotations

import datetime
import json
import re
import tomllib
from pathlib import Path
from typing import Any, Callable, TypeVar

from coserver.errors import clip
from coserver.hardware.errors import SchemaError, SpecError
from coserver.sys.files import open_regular

T = TypeVar("T")
#: Longest string value echoed whole in an error message.
_MISSING: Any = object()
#: Deepest nesting of tables and arrays a spec or profile may have (the schema needs 6).
MAX_DEPTH = 32
#: tomllib's message ends with where: "(at line 3, column 7)" or "(at end of document)".
_TOML_WHERE = re.compile(r"(.*) (\(at (?:line \d+, column \d+|end of document)\))", re.DOTALL)


def show(value: Any) -> str:
    """A value as TOML would spell it, short enough for a one-line message."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return clip(value, quote=json.dumps)
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, (datetime.date, datetime.time)):
        return f"a date/time ({value.isoformat()})"
    return str(value)


def is_int(value: Any) -> bool:
    """An integer that is not a bool (TOML true/false are not numbers)."""
    return isinstance(value, int) and not isinstance(value, bool)


class Origin:
    """Where values come from: ``spec /x.toml`` or ``profile /y.toml``; makes located errors."""

    def __init__(self, kind: str, path: Path) -> None:
        self.kind = kind
        self.path = path

    def __str__(self) -> str:
        return f"{self.kind} {self.path}"

    def error(self, key: str | None, reason: str, cls: type[SpecError] = SchemaError) -> SpecError:
        return cls(str(self), key, reason)


def _toml_reason(exc: tomllib.TOMLDecodeError) -> str:
    """tomllib's message with any key or value it quotes clipped, keeping where it happened."""
    text = str(exc)
    m = _TOML_WHERE.fullmatch(text)
    return f"{clip(m.group(1), 120)} {m.group(2)}" if m else clip(text, 160)


def _too_deep(doc: dict[str, Any]) -> bool:
    """True if tables/arrays nest deeper than MAX_DEPTH (walked without recursion)."""
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            return True
        children = value.values() if isinstance(value, dict) else value
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return False


def read_toml(origin: Origin) -> dict[str, Any]:
    """Parse origin.path; unreadable, non-regular (a FIFO would hang), invalid or over-deep files
    become one-line SchemaErrors."""
    try:
        with open_regular(origin.path) as f:
            text = f.read().decode("utf-8")
    except FileNotFoundError:
        raise origin.error(None, "no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise origin.error(None, f"cannot read: {reason}") from None
    except ValueError:  # os.stat: "embedded null byte"
        raise origin.error(None, "cannot read: the path contains a NUL character") from None
    too_deep = f"tables or arrays nested deeper than {MAX_DEPTH} levels"
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise origin.error(None, f"not valid TOML: {_toml_reason(exc)}") from None
    except RecursionError:
        raise origin.error(None, too_deep) from None
    if _too_deep(doc):
        raise origin.error(None, too_deep)
    return doc


class Table:
    """One TOML table under a dotted key prefix, read strictly."""

    def __init__(self, data: dict[str, Any], origin: Origin, prefix: str = "") -> None:
        self.data = data
        self.origin = origin
        self.prefix = prefix
        self._known: list[str] = []

    # -- locating -------------------------------------------------------------------------

    def key(self, name: str) -> str:
        """The dotted key of name here; a name from the file (an unknown key) is clipped."""
        name = clip(name)
        return f"{self.prefix}.{name}" if self.prefix else name

    def error(self, name: str | None, reason: str, cls: type[SpecError] = SchemaError) -> SpecError:
        return self.origin.error(self.key(name) if name is not None else (self.prefix or None),
                                 reason, cls)

    def has(self, name: str) -> bool:
        self._note(name)
        return name in self.data

    def _note(self, name: str) -> None:
        if name not in self._known:
            self._known.append(name)

    def _raw(self, name: str, default: Any) -> Any:
        self._note(name)
        if name in self.data:
            return self.data[name]
        if default is _MISSING:
            raise self.error(name, "required key is missing")
        return default

    # -- typed getters --------------------------------------------------------------------

    def string(self, name: str, default: Any = _MISSING, *, pattern: str | None = None,
               what: str | None = None, choices: tuple[str, ...] | None = None,
               max_len: int | None = None, empty_ok: bool = False) -> Any:
        value = self._raw(name, default)
        if value is default and name not in self.data:
            return value
        if not isinstance(value, str):
            raise self.error(name, f"must be a string, got {show(value)}")
        if choices is not None and value not in choices:
            raise self.error(name, f"must be one of {', '.join(choices)}; got {show(value)}")
        if not value and not empty_ok:
            raise self.error(name, "must not be empty")
        if max_len is not None and len(value) > max_len:
            raise self.error(name, f"must be at most {max_len} characters, got {len(value)}")
        if pattern is not None and value and not re.fullmatch(pattern, value):
            raise self.error(name, f"must be {what or 'of the form ' + pattern}, got {show(value)}")
        return value

    def integer(self, name: str, default: Any = _MISSING, *, minimum: int = 1,
                maximum: int | None = None) -> Any:
        value = self._raw(name, default)
        if value is default and name not in self.data:
            return value
        ok = is_int(value) and value >= minimum and (maximum is None or value <= maximum)
        if not ok:
            if maximum is not None:
                want = f"an integer from {minimum} to {maximum}"
            elif minimum == 1:
                want = "a positive integer"
            else:
                want = f"an integer of at least {minimum}"
            raise self.error(name, f"must be {want}, got {show(value)}")
        return value

    def boolean(self, name: str, default: Any = _MISSING) -> Any:
        value = self._raw(name, default)
        if value is default and name not in self.data:
            return value
        if not isinstance(value, bool):
            raise self.error(name, f"must be true or false, got {show(value)}")
        return value

    def strings(self, name: str, default: Any = _MISSING) -> Any:
        value = self._raw(name, default)
        if value is default and name not in self.data:
            return value
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.error(name, f"must be an array of non-empty strings, got {show(value)}")
        return list(value)

    def table(self, name: str, default: Any = _MISSING) -> Any:
        value = self._raw(name, default)
        if value is default and name not in self.data:
            return value
        if not isinstance(value, dict):
            raise self.error(name, f"must be a table, got {show(value)}")
        return Table(value, self.origin, self.key(name))

    def tables(self, name: str) -> list[Table]:
        """An array of tables ([[name]]); absent means empty."""
        value = self._raw(name, [])
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise self.error(name, f"must be an array of tables ([[{self.key(name)}]]), "
                                   f"got {show(value)}")
        return [Table(v, self.origin, f"{self.key(name)}[{i}]") for i, v in enumerate(value)]

    def custom(self, name: str, convert: Callable[[Any], T], default: Any = _MISSING) -> Any:
        """A value checked by convert(value), which raises ValueError(reason) to refuse it."""
        value = self._raw(name, default)
        if value is default and name not in self.data:
            return value
        try:
            return convert(value)
        except ValueError as exc:
            raise self.error(name, str(exc)) from None

    # -- closing --------------------------------------------------------------------------

    def finish(self) -> None:
        """Refuse any key no getter asked for (misspelt or unsupported)."""
        for name in self.data:
            if name not in self._known:
                known = ", ".join(sorted(self._known)) or "none"
                raise self.error(name, f"unknown key (known here: {known})")
