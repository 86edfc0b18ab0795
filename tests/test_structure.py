"""The house rules a newcomer relies on: no import circles, small modules, nothing shipped or
benchmarked that imports the tests, and no reference to files outside the repository."""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Where each top-level package's code lives.
PACKAGES = {"app": ROOT / "app", "kit": ROOT / "deploy" / "kit"}
for extra in ("harness", "bench"):
    if (ROOT / extra / "__init__.py").exists():
        PACKAGES[extra] = ROOT / extra
MAX_LINES = 400


def modules() -> dict[str, Path]:
    found = {}
    for package, directory in PACKAGES.items():
        for path in sorted(directory.glob("*.py")):
            name = package if path.stem == "__init__" else f"{package}.{path.stem}"
            found[name] = path
    return found


def imports(path: Path, known: set[str]) -> set[str]:
    """The project modules a file imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # "from app import metrics" imports app.metrics; "from app.db import x", app.db.
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


def test_no_import_circles() -> None:
    graph = {name: imports(path, set(modules())) - {name} for name, path in modules().items()}
    # A package's __init__ runs before any of its modules: that edge is implied, not a circle.
    for name, deps in graph.items():
        if "." in name:
            deps.discard(name.partition(".")[0])

    def cycle_from(start: str) -> list[str] | None:
        stack = [(start, [start])]
        while stack:
            node, path = stack.pop()
            for nxt in sorted(graph.get(node, ())):
                if nxt == start:
                    return [*path, start]
                if nxt not in path:
                    stack.append((nxt, [*path, nxt]))
        return None

    circles = [c for name in graph if (c := cycle_from(name))]
    assert not circles, f"import circle: {' -> '.join(circles[0])}"


@pytest.mark.parametrize("name", sorted(modules()))
def test_modules_stay_small(name: str) -> None:
    lines = len(modules()[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{name} has {lines} lines: split it by concern"


def tracked(*patterns: str) -> list[Path]:
    out = subprocess.run(
        ["git", "ls-files", *patterns], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return [ROOT / line for line in out.stdout.splitlines()]


def test_nothing_outside_the_tests_imports_them() -> None:
    offenders = [
        str(path.relative_to(ROOT))
        for path in tracked("*.py")
        if path.relative_to(ROOT).parts[0] != "tests"
        and any(n == "tests" or n.startswith("tests.") for n in imports(path, {"tests"}))
    ]
    assert offenders == []


def test_no_file_sends_the_reader_outside_the_repository() -> None:
    offenders = [
        str(path.relative_to(ROOT))
        for path in tracked()
        if path.is_file()
        and path.suffix not in (".png", ".lock")
        and "../shared" in path.read_text(errors="replace")
        and path.name != "test_structure.py"
    ]
    assert offenders == [], "a user's clone has no ../shared/: copy what is needed into the repo"
