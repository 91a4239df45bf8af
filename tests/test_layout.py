"""The package's layout holds: imports run down the floors only, no package cycle, a lean daemon.

The floors (issue 11), top to bottom; a module may import from its own floor or
any lower one, never from a higher one:

    cli -> bench -> lab, doctor -> pair -> controller -> colo, images, hardware
        -> machine -> qmp -> sys -> (errors, log, paths: the package's top level)
    (site: beside colo, images and hardware; it reads the site file for the controller;
     monitoring: the alert rules, package data only)

Imports inside functions count too: a lazy import upward is still an upward
dependency. No QEMU is started here.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import coserver

PACKAGE_DIR = Path(coserver.__file__).parent

#: Floor of each subpackage; "" is the package's top level (errors.py, log.py, paths.py).
FLOORS: dict[str, int] = {
    "": 0,
    "sys": 1,
    "qmp": 2,
    "machine": 3,
    "colo": 4, "images": 4, "hardware": 4, "site": 4, "monitoring": 4, "libvirt": 4,
    "controller": 5,
    "pair": 6,
    "lab": 7, "doctor": 7,
    "bench": 8,
    "cli": 9,
}

#: What the systemd unit's process (`python -m coserver.controller.daemon`) must never load.
NOT_IN_DAEMON = ("coserver.lab", "coserver.images.labguest", "coserver.images.debianguest", "coserver.bench",
                 "coserver.doctor", "coserver.cli", "matplotlib")


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE_DIR.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _package_of(module: str) -> str:
    """'coserver.controller.daemon' -> 'controller'; 'coserver.paths' or 'coserver' -> ''."""
    parts = module.split(".")
    if len(parts) >= 2 and (PACKAGE_DIR / parts[1]).is_dir():
        return parts[1]
    return ""


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every coserver import in the file, lazy ones included."""
    module = _module_name(path)
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((node.lineno, target))
            # `from coserver import log` / `from coserver.sys import netns`: the names may be modules
            found += [(node.lineno, f"{target}.{alias.name}") for alias in node.names
                      if (PACKAGE_DIR.parent / Path(*f"{target}.{alias.name}".split("."))).is_dir()
                      or (PACKAGE_DIR.parent / Path(*f"{target}.{alias.name}".split("."))).with_suffix(".py").exists()]
    return [(line, name) for line, name in found if name == "coserver" or name.startswith("coserver.")]


def _all_modules() -> list[Path]:
    return sorted(p for p in PACKAGE_DIR.rglob("*.py") if "__pycache__" not in p.parts)


def test_every_package_has_a_floor() -> None:
    packages = {p.name for p in PACKAGE_DIR.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert packages <= FLOORS.keys(), f"packages without a floor in this test: {packages - FLOORS.keys()}"


def test_no_import_runs_up_a_floor() -> None:
    upward = []
    for path in _all_modules():
        here = _package_of(_module_name(path))
        for line, target in _imports(path):
            there = _package_of(target)
            if FLOORS[there] > FLOORS[here]:
                upward.append(f"{path.relative_to(PACKAGE_DIR.parent)}:{line}: {here or 'coserver'} "
                              f"(floor {FLOORS[here]}) imports {target} (floor {FLOORS[there]})")
    assert not upward, "imports from a lower floor to a higher one:\n" + "\n".join(upward)


def test_no_import_cycle_between_packages() -> None:
    edges: dict[str, set[str]] = {name: set() for name in FLOORS}
    for path in _all_modules():
        here = _package_of(_module_name(path))
        for _, target in _imports(path):
            there = _package_of(target)
            if there != here and here != "" and there != "":
                edges[here].add(there)
    cycles = []

    def visit(node: str, trail: list[str]) -> None:
        for nxt in sorted(edges[node]):
            if nxt in trail:
                cycles.append(" -> ".join(trail[trail.index(nxt):] + [nxt]))
            elif len(trail) < len(edges):
                visit(nxt, trail + [nxt])

    for start in sorted(edges):
        visit(start, [start])
    assert not cycles, "import cycles between packages:\n" + "\n".join(sorted(set(cycles)))


def test_the_walker_finds_imports() -> None:
    """The walker itself: relative and lazy imports are found and resolved."""
    sample = PACKAGE_DIR / "controller" / "daemon.py"
    targets = {name for _, name in _imports(sample)}
    assert "coserver.controller.policy" in targets or "coserver.controller" in targets
    assert all(t.startswith("coserver") for t in targets)


def test_daemon_imports_no_lab_builder_bench_or_matplotlib() -> None:
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "coserver.controller.daemon", "--help"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "--config" in proc.stdout
    loaded = {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines()
              if line.startswith("import time:") and "|" in line}
    assert "coserver.controller.policy" in loaded  # the import trace really was read
    bad = sorted(m for m in loaded for prefix in NOT_IN_DAEMON if m == prefix or m.startswith(prefix + "."))
    assert not bad, f"the daemon process loads {bad}"


LOG_METHODS = {"debug", "info", "warning", "error", "critical", "exception"}
EVENT_NAME = re.compile(r"^[a-z]+(\.[a-z]+)+$")


def test_log_event_names_are_dotted() -> None:
    """One style for log events (component.subject.what), so a script can grep them all alike."""
    bad = []
    for path in _all_modules():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in LOG_METHODS
                    and isinstance(getattr(node.func.value, "id", getattr(node.func.value, "attr", None)), str)
                    and "log" in getattr(node.func.value, "id", getattr(node.func.value, "attr", ""))
                    and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
                    and not EVENT_NAME.match(node.args[0].value)):
                bad.append(f"{path.relative_to(PACKAGE_DIR.parent)}:{node.lineno}: {node.args[0].value!r}")
    assert not bad, "log event names not in the dotted style:\n" + "\n".join(bad)
