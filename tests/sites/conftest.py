"""Site fixtures: the shipped example site file, a copy to edit, and servers_dir with specs."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

import coserver.site

EXAMPLE_SITE = Path(coserver.site.__file__).parent / "examples" / "site.toml"
EXAMPLE_SPEC = Path(coserver.site.__file__).parent.parent / "hardware" / "examples" / "lab-journal.toml"


def spec_text(name: str = "journal", mac: str = "52:54:00:c0:5e:01") -> str:
    """The example spec renamed, with its MAC replaced."""
    text = EXAMPLE_SPEC.read_text()
    text = re.sub(r'(?m)^name = "journal"', f'name = "{name}"', text)
    return text.replace('mac = "52:54:00:c0:5e:01"', f'mac = "{mac}"')


@pytest.fixture
def site_file(tmp_path: Path) -> Callable[..., Path]:
    """site_file(old=new, ...): the example site in tmp_path, servers_dir and key_file inside tmp_path,
    each (old, new) text replacement applied (asserted to match)."""

    def make(*edits: tuple[str, str], append: str = "") -> Path:
        text = EXAMPLE_SITE.read_text()
        text = text.replace('servers_dir = "/etc/coserver/servers"', f'servers_dir = "{tmp_path / "servers"}"')
        text = text.replace('key_file = "/etc/coserver/pair.key"', f'key_file = "{tmp_path / "keys" / "pair.key"}"')
        for old, new in edits:
            assert old in text, old
            text = text.replace(old, new, 1)
        path = tmp_path / "site.toml"
        path.write_text(text + append)
        (tmp_path / "servers").mkdir(exist_ok=True)
        return path

    return make


@pytest.fixture
def servers(tmp_path: Path) -> Callable[..., Path]:
    """servers(file_name, **spec_text kwargs): write one spec into tmp_path/servers."""

    def write(file_name: str, **kw: str) -> Path:
        d = tmp_path / "servers"
        d.mkdir(exist_ok=True)
        path = d / file_name
        path.write_text(spec_text(**kw))
        return path

    return write
