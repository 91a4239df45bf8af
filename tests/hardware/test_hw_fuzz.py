"""Fuzzing the TOML readers (issue 13): whatever a file holds, a reader either loads it or raises
the package's one-line error (CoserverError: no newline, bounded length). Never another
exception, a traceback, a hang or a message that echoes a huge value whole.

Three kinds of input per reader: arbitrary text, arbitrary TOML documents, and a valid file with
one key replaced by a random value, deleted, or an unknown key added (this reaches the deep
checks). Each test is bounded (MAX_EXAMPLES, no per-example deadline) so the suite stays fast.

A reader is one entry in READERS: name -> (file name to write, a valid document, the function
that reads a path). The site reader (coserver/site/, being written) is added with one line, e.g.
``"site": ("site.toml", SITE_TOML, load_site)``.
"""

from __future__ import annotations

import copy
import datetime
import functools
import math
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coserver.errors import CoserverError
from coserver.hardware import check_spec
from coserver.hardware.profile import PROFILES_DIR, load_family
from coserver.libvirt.spectext import string as toml_string  # the spec writer `libvirt import` uses

from .conftest import GOOD_SPEC, LAB

MAX_EXAMPLES = 200
#: A message may name the file, a key, a value clipped to 64 characters and a path (itself at
#: most a few hundred characters in these inputs): far below this, however big the input.
MAX_MESSAGE = 1500

#: name -> (file name, a valid document as TOML text, reader). Add a reader here: one line.
#: The spec goes through check_spec (what `coserver hardware check` runs): load_spec, then
#: resolving for both CoServers and measuring the ISO/kernel/initrd it names (a FIFO, /dev/zero
#: or a NUL byte there must be one line too); the files GOOD_SPEC names are in the scratch dir.
READERS: dict[str, tuple[str, str, Callable[[Path], object]]] = {
    "spec": ("spec.toml", GOOD_SPEC, lambda path: check_spec(path, capacity=LAB)),
    "profile": ("dl380.toml", (PROFILES_DIR / "dl380.toml").read_text(), load_family),
}

FUZZ = settings(max_examples=MAX_EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# -- writing TOML (inline form: tables as {...}, arrays of tables as [{...}], same parsed data) ----

def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_string(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(type(value))


def toml_document(doc: dict[str, Any]) -> str:
    return "".join(f"{toml_string(k)} = {toml_value(v)}\n" for k, v in doc.items())


def test_the_writer_round_trips_the_valid_documents() -> None:
    for _, text, _ in READERS.values():
        doc = tomllib.loads(text)
        assert tomllib.loads(toml_document(doc)) == doc


# -- what to feed -------------------------------------------------------------------------------

KEYS = st.one_of(st.sampled_from(["name", "profile", "path", "serial", "hosts", "cs1", "cs2", "mode", "type",
                                  "g5", "real", "guest", "smbios", "family"]),
                 st.text(min_size=1, max_size=20))
#: Strings that broke a reader once (issue 13): NUL, huge, a device, a comma, empty, blank.
NASTY = st.sampled_from(["\0", "x" * 5000, "/dev/zero", "a,b", "", " "])
SCALARS = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.sampled_from([0, 1, -1, 2, 64, 256, 65536, 2**31]),
    st.floats(),
    st.text(max_size=80),
    NASTY,
    st.sampled_from(["../x", "cs1", "kernel", "disk", "host",
                     "virtio-blk", "e1000", "qemu64", "max", "dl380-g5", "52:54:00:12:34:56", "1.2.3.4"]),
    st.dates(),
    st.times(),
)
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(KEYS, inner, max_size=4)),
                      max_leaves=8)
DEEP = st.integers(min_value=1, max_value=1500).map(lambda n: "[" * n + "]" * n)


def _paths(value: Any, here: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key/index path into a parsed document."""
    out = []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for k, v in items:
        out.append(here + (k,))
        out += _paths(v, here + (k,))
    return out


def _at(doc: Any, path: tuple[Any, ...]) -> Any:
    for k in path:
        doc = doc[k]
    return doc


@functools.lru_cache(maxsize=None)
def _parsed(text: str) -> dict[str, Any]:
    return tomllib.loads(text)


@st.composite
def mutated(draw: st.DrawFn, text: str) -> str:
    """A valid document with one value replaced (a string often by a NASTY one), one key deleted or
    one unknown key added."""
    doc = copy.deepcopy(_parsed(text))
    op = draw(st.sampled_from(["replace", "delete", "add", "nasty", "nasty"]))
    paths = _paths(doc)
    if op == "nasty":
        paths = [p for p in paths if isinstance(_at(doc, p), str)]
    path = draw(st.sampled_from(paths))
    parent: Any = doc
    for k in path[:-1]:
        parent = parent[k]
    if op == "nasty":
        parent[path[-1]] = draw(NASTY)
    elif op == "replace":
        parent[path[-1]] = draw(VALUES)
    elif op == "delete":
        del parent[path[-1]]
    else:
        target = parent[path[-1]] if isinstance(parent[path[-1]], dict) else doc
        target[draw(KEYS)] = draw(VALUES)
    return toml_document(doc)


@pytest.fixture(scope="session")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One directory for every example's file (rewritten each time: cheaper than one per example),
    with the ISO, kernel and initrd GOOD_SPEC names."""
    directory = tmp_path_factory.mktemp("fuzz")
    for name in ("cs1/install.iso", "cs2/install.iso", "guest/vmlinuz", "guest/initrd.img"):
        (directory / name).parent.mkdir(exist_ok=True)
        (directory / name).write_bytes(b"fuzz\n")
    return directory


def loads_or_one_line(read: Callable[[Path], object], path: Path, content: str | bytes) -> None:
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    try:
        read(path)
    except CoserverError as exc:
        message = str(exc)
        assert message and "\n" not in message, message[:500]
        assert len(message) <= MAX_MESSAGE, f"{len(message)} characters: {message[:500]}"


# -- the properties -----------------------------------------------------------------------------

READER_NAMES = sorted(READERS)


@pytest.mark.parametrize("reader", READER_NAMES)
@FUZZ
@given(content=st.one_of(st.text(max_size=400), st.binary(max_size=400)))
def test_any_text_loads_or_is_one_line(scratch: Path, reader: str, content: str | bytes) -> None:
    name, _, read = READERS[reader]
    loads_or_one_line(read, scratch / name, content)


@pytest.mark.parametrize("reader", READER_NAMES)
@FUZZ
@given(doc=st.dictionaries(KEYS, VALUES, max_size=6), deep=st.one_of(st.none(), DEEP))
def test_any_toml_document_loads_or_is_one_line(scratch: Path, reader: str, doc: dict[str, Any],
                                                 deep: str | None) -> None:
    name, _, read = READERS[reader]
    text = toml_document(doc) + (f"deep = {deep}\n" if deep else "")
    loads_or_one_line(read, scratch / name, text)


@pytest.mark.parametrize("reader", READER_NAMES)
@FUZZ
@given(data=st.data())
def test_a_valid_file_with_one_random_change_loads_or_is_one_line(scratch: Path, reader: str,
                                                                  data: st.DataObject) -> None:
    name, text, read = READERS[reader]
    loads_or_one_line(read, scratch / name, data.draw(mutated(text)))


@pytest.mark.parametrize("reader", READER_NAMES)
def test_the_valid_documents_load(scratch: Path, reader: str) -> None:
    """The fuzz starts from documents that load: a mutation is the only thing wrong with them."""
    name, text, read = READERS[reader]
    path = scratch / name
    path.write_text(text)
    read(path)
