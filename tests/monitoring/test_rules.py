"""The shipped alert rules, checked and unit-tested by Prometheus's own promtool (an argv, no shell).

CI installs promtool (Debian package prometheus, in deps/apt-test.txt); without it these
skip, saying so.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

import coserver.monitoring

TESTS = Path(__file__).parent / "rules_test.yml"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (apt-get install prometheus; "
                                                             "`make apt` installs it)")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=120, check=False)


def test_the_rules_ship_as_package_data() -> None:
    assert coserver.monitoring.RULES.is_file()
    assert "../../coserver/monitoring/coserver-rules.yml" in TESTS.read_text()   # the tests test the shipped file
    assert (TESTS.parent / "../../coserver/monitoring/coserver-rules.yml").resolve() == coserver.monitoring.RULES


@needs_promtool
def test_the_rules_are_valid() -> None:
    proc = promtool("check", "rules", str(coserver.monitoring.RULES))
    assert proc.returncode == 0, proc.stdout + proc.stderr


@needs_promtool
def test_the_rules_fire_as_their_tests_say() -> None:
    proc = promtool("test", "rules", str(TESTS))
    assert proc.returncode == 0, proc.stdout + proc.stderr


@needs_promtool
def test_every_rule_is_tested() -> None:
    rules = {line.split(":", 1)[1].strip() for line in coserver.monitoring.RULES.read_text().splitlines()
             if line.strip().startswith("- alert:")}
    tested = {line.split(":", 1)[1].strip() for line in TESTS.read_text().splitlines()
              if line.strip().startswith("alertname:")}
    assert rules and rules == tested, f"untested: {rules - tested}; unknown: {tested - rules}"
