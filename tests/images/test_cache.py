"""images.cache.cached_build: built once, found after, rebuilt when unusable, never half-built."""

from __future__ import annotations

from pathlib import Path

import pytest

from coserver.images.cache import cached_build
from coserver.images.errors import GuestBuildError
from coserver.sys.files import sha256_file


def load(d: Path) -> str:
    manifest = d / "manifest"
    if not manifest.exists():
        raise GuestBuildError(f"{d}: no manifest")
    return manifest.read_text()


def test_built_once_then_loaded(tmp_path: Path) -> None:
    builds: list[Path] = []

    def build(tmp: Path) -> None:
        builds.append(tmp)
        (tmp / "manifest").write_text("v1")

    assert cached_build(tmp_path, "k1", load=load, build=build, what="test image") == "v1"
    assert cached_build(tmp_path, "k1", load=load, build=build, what="test image") == "v1"
    assert len(builds) == 1 and (tmp_path / "k1" / "manifest").exists()
    assert cached_build(tmp_path, "k1", load=load, build=build, what="test image", force=True) == "v1"
    assert len(builds) == 2


def test_unusable_build_is_rebuilt_and_a_failed_one_leaves_nothing(tmp_path: Path) -> None:
    (tmp_path / "k1").mkdir(parents=True)  # a build without its manifest: unusable

    def fail(tmp: Path) -> None:
        (tmp / "half").write_text("x")
        raise GuestBuildError("step 2 failed")

    with pytest.raises(GuestBuildError, match="step 2"):
        cached_build(tmp_path, "k1", load=load, build=fail, what="test image")
    assert not list(tmp_path.glob(".tmp-*"))
    assert cached_build(tmp_path, "k1", load=load, build=lambda t: (t / "manifest").write_text("v2"),
                        what="test image") == "v2"


def test_sha256_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"abc")
    assert sha256_file(tmp_path / "f") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
