"""`coserver hardware list|show|check` via click's CliRunner: one line on error, no traceback."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from coserver.cli.hardware import hardware
from coserver.hardware import profile_names

from .conftest import GOOD_SPEC


def run(*args: str):
    result = CliRunner().invoke(hardware, list(args))
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def test_list_shows_every_profile():
    result = run("list")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines] == profile_names()
    assert "HP ProLiant DL380 G5" in result.stdout and "BIOS HPE U30 07/16/2020" in result.stdout


def test_list_json():
    data = json.loads(run("list", "--json").stdout)
    assert [p["name"] for p in data] == profile_names()


def test_show_json_fields():
    result = run("show", "dl380-gen9", "--json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert set(data) == {"name", "title", "family", "generation", "product_line", "machine",
                         "smbios", "real", "guest", "sources", "file"}
    assert data["name"] == "dl380-gen9" and data["machine"] == "q35"
    assert data["smbios"]["bios_version"] == "P89" and data["smbios"]["sku"] == "719064-B21"
    assert data["smbios"]["board"] is True
    assert data["real"]["sockets"] == 2 and data["guest"]["memory_mib"] == 256
    assert data["sources"]


def test_show_text():
    result = run("show", "dl360-g7")
    assert result.exit_code == 0
    assert "BIOS" not in result.stdout.splitlines()[0]
    assert "HP P68 08/16/2015" in result.stdout and "none (no SMBIOS type 2" in result.stdout


def test_show_unknown_profile_is_one_line():
    result = run("show", "dl999")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("coserver: error: no hardware profile 'dl999'")


def test_check_good_spec(write_spec):
    result = run("check", str(write_spec()))
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("ok spec journal: HP ProLiant DL380 G5")


def test_check_good_spec_json(write_spec):
    result = run("check", str(write_spec()), "--json", "--host", "cs1")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["ok"] is True and data["local_hosts"] == ["cs1"]
    assert data["config"]["smbios"]["serial"] == "CZJ7300ABC"
    assert len(data["digest"]) == 64


def test_check_profile():
    result = run("check", "dl580-gen9")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("ok profile dl580-gen9: HP ProLiant DL580 Gen9, q35")


def test_check_example_without_its_files():
    from pathlib import Path

    import coserver.hardware
    example = Path(coserver.hardware.__file__).parent / "examples" / "lab-journal.toml"
    result = run("check", str(example), "--no-files")
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("broken, expected", [
    (GOOD_SPEC.replace("sockets = 1", "sockets = 0"),
     "key cpu.sockets: must be a positive integer, got 0"),
    (GOOD_SPEC + '\n[[devices]]\ntype = "vfio-pci"\n',
     "key devices[0].type: refused for COLO: host pass-through"),
    (GOOD_SPEC.replace("memory_mib = 256", "memory_mib = 16384"),
     "key memory_mib: 16384 MiB of guest RAM needs"),
    ("name = [", "not valid TOML"),
])
def test_check_bad_spec_is_one_line_exit_1(write_spec, broken, expected):
    path = write_spec(broken)
    result = run("check", str(path))
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"coserver: error: spec {path}: ")
    assert expected in result.stderr


def test_check_bad_spec_json(write_spec):
    result = run("check", str(write_spec(GOOD_SPEC.replace("cores = 1", "cores = -1"))), "--json")
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["ok"] is False and "key cpu.cores: must be a positive integer, got -1" in \
        data["error"]


def test_check_iso_mismatch_between_hosts(write_spec):
    result = run("check", str(write_spec(iso_cs1=b"one", iso_cs2=b"two")))
    assert result.exit_code == 1
    assert "key cdrom.sha256: differs between CoServers: cs1 has" in result.stderr


def test_check_missing_spec_file(tmp_path):
    result = run("check", str(tmp_path / "absent.toml"))
    assert result.exit_code == 1
    assert result.stderr == f"coserver: error: spec {tmp_path / 'absent.toml'}: no such file\n"


def test_check_unknown_profile_name():
    result = run("check", "nonesuch")
    assert result.exit_code == 1 and "no hardware profile 'nonesuch'" in result.stderr


def test_check_profile_with_spec_options_is_a_usage_error():
    result = run("check", "dl380-g5", "--no-files")
    assert result.exit_code == 2
