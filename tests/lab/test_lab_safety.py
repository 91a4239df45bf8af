"""`lab up` refuses bad input before touching the workdir, and makes its overlay directories
safely (issue 13). No QEMU, no namespace: the network part is replaced by one that fails the
test if it is ever reached."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from coserver.colo.argv import Node
from coserver.hardware import ProfileNotFound, SchemaError
from coserver.lab import lab as labmod
from coserver.lab.lab import Lab, LabError, LabOptions, make_overlay_dir, overlay_dir
from coserver.lab.net import LabNet
from coserver.sys.files import UnsafeDirError


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Any use of the lab network (or its registry) fails the test: validation must come first."""

    def reached(*_args: object, **_kw: object) -> None:
        raise AssertionError("the lab network was touched before the input was validated")

    for name in ("existing", "create"):
        monkeypatch.setattr(LabNet, name, reached)
    monkeypatch.setattr(labmod, "REGISTRY", tmp_path / "registry-must-not-be-made")


def _open_dir(tmp_path: Path) -> Path:
    wd = tmp_path / "shared"
    wd.mkdir()
    os.chmod(wd, 0o755)
    return wd


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o7777


@pytest.mark.usefixtures("no_network")
@pytest.mark.parametrize("opts, error, words", [
    (LabOptions(profile="nosuch"), ProfileNotFound, "no hardware profile 'nosuch'"),
    (LabOptions(devices="fancy"), LabError, "--devices must be one of"),
    (LabOptions(spec=Path("/nonexistent/spec.toml")), LabError, "spec /nonexistent/spec.toml: no such file"),
    (LabOptions(spec=Path("/dev/null")), LabError, "spec /dev/null: not a regular file"),
])
def test_bad_input_leaves_an_existing_workdir_alone(tmp_path: Path, opts: LabOptions, error: type, words: str) -> None:
    wd = _open_dir(tmp_path)
    with pytest.raises(error, match=words):
        Lab("tsafe", workdir=wd).up(opts)
    assert _mode(wd) == 0o755          # `--workdir /tmp` must not close /tmp
    assert list(wd.iterdir()) == []    # and nothing was written into it
    assert not (tmp_path / "registry-must-not-be-made").exists()


@pytest.mark.usefixtures("no_network")
def test_a_bad_spec_is_refused_before_the_workdir(tmp_path: Path) -> None:
    wd = _open_dir(tmp_path)
    spec = tmp_path / "spec.toml"
    spec.write_text('name = "x"\n')
    with pytest.raises(SchemaError, match=r"key profile: required key is missing"):
        Lab("tsafe", workdir=wd).up(LabOptions(spec=spec))
    assert _mode(wd) == 0o755 and list(wd.iterdir()) == []


def test_an_existing_workdir_is_never_chmod_ed(tmp_path: Path) -> None:
    wd = _open_dir(tmp_path)
    Lab("tsafe", workdir=wd)._check_workdir()
    assert _mode(wd) == 0o755 and list(wd.iterdir()) == []


def test_a_workdir_the_lab_makes_is_private(tmp_path: Path) -> None:
    wd = tmp_path / "a" / "lab"
    Lab("tsafe", workdir=wd)._check_workdir()
    assert _mode(wd) == 0o700


def test_a_workdir_that_is_a_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    with pytest.raises(LabError, match=r"workdir .*/f: not writable"):
        Lab("tsafe", workdir=tmp_path / "f")._check_workdir()


# -- overlay directories under a shared base (/dev/shm) ---------------------------------------

def test_overlay_dirs_are_made_private(tmp_path: Path) -> None:
    made = make_overlay_dir("tsafe", "cs2", base=tmp_path)
    assert made == overlay_dir("tsafe", "cs2", base=tmp_path) == tmp_path / "coserver-lab-tsafe" / "cs2"
    assert _mode(made) == 0o700 and _mode(made.parent) == 0o700
    assert make_overlay_dir("tsafe", "cs2", base=tmp_path) == made  # again: ours, fine


def test_a_planted_symlink_is_refused(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.mkdir(mode=0o700)
    (tmp_path / "coserver-lab-tsafe").symlink_to(victim)
    with pytest.raises(UnsafeDirError, match=r"coserver-lab-tsafe: is a symlink, not a directory"):
        make_overlay_dir("tsafe", "cs2", base=tmp_path)
    assert list(victim.iterdir()) == []


def test_a_planted_symlink_at_the_host_level_is_refused(tmp_path: Path) -> None:
    (tmp_path / "coserver-lab-tsafe").mkdir(mode=0o700)
    (tmp_path / "coserver-lab-tsafe" / "cs2").symlink_to(tmp_path)
    with pytest.raises(UnsafeDirError, match=r"cs2: is a symlink"):
        make_overlay_dir("tsafe", "cs2", base=tmp_path)


def test_a_directory_others_can_enter_is_refused_and_left_as_is(tmp_path: Path) -> None:
    planted = tmp_path / "coserver-lab-tsafe"
    planted.mkdir()
    os.chmod(planted, 0o777)
    with pytest.raises(UnsafeDirError, match=r"coserver-lab-tsafe: mode 0777 lets group or others in"):
        make_overlay_dir("tsafe", "cs2", base=tmp_path)
    assert _mode(planted) == 0o777 and list(planted.iterdir()) == []


def test_someone_elses_directory_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "coserver-lab-tsafe").mkdir(mode=0o700)
    monkeypatch.setattr(os, "geteuid", lambda: (tmp_path / "coserver-lab-tsafe").stat().st_uid + 1)
    with pytest.raises(UnsafeDirError, match=r"owned by uid \d+, not by us"):
        make_overlay_dir("tsafe", "cs2", base=tmp_path)


def test_node_create_overlays_refuses_a_planted_overlay_dir(tmp_path: Path) -> None:
    """The controller's rejoin makes overlays through Node.create_overlays: it checks too."""
    (tmp_path / "elsewhere").mkdir(mode=0o700)
    (tmp_path / "ov").symlink_to(tmp_path / "elsewhere")
    node = Node("cs2", tmp_path, "10.0.0.2", "tap0", tmp_path / "disk.qcow2", "52:54:00:00:00:01",
                overlay_dir=tmp_path / "ov")
    with pytest.raises(UnsafeDirError, match=r"ov: is a symlink"):
        node.create_overlays()
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_down_does_not_remove_a_planted_overlay_tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check `down` makes before removing the overlay tree under the shared base."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious").write_text("x")
    (tmp_path / "link").symlink_to(victim)
    assert not labmod._own_real_dir(tmp_path / "link")
    assert labmod._own_real_dir(victim)
    monkeypatch.setattr(os, "geteuid", lambda: victim.stat().st_uid + 1)
    assert not labmod._own_real_dir(victim)


@pytest.mark.usefixtures("no_network")
@pytest.mark.parametrize("exists", [True, False])
def test_cli_lab_up_with_an_unknown_profile_touches_no_workdir(tmp_path: Path, exists: bool) -> None:
    """The CLI configures its log file in the workdir: it validates before that too."""
    from click.testing import CliRunner

    from coserver.cli.main import main

    wd = _open_dir(tmp_path) if exists else tmp_path / "not-yet"
    result = CliRunner().invoke(main, ["lab", "up", "--prefix", "tsafe", "--workdir", str(wd), "--profile", "nosuch"])
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("coserver: error: no hardware profile 'nosuch'") and result.stderr.count("\n") == 1
    if exists:
        assert _mode(wd) == 0o755 and list(wd.iterdir()) == []
    else:
        assert not wd.exists()
