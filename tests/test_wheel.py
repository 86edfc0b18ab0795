"""The idleproof wheel as a user gets it: built from this working tree, installed into a new
virtual environment with nothing else of the repo's, and used from there.

The wheel is built once per test session, from a copy of the working tree (the files git
tracks or would track), so the build's ``build/`` and ``*.egg-info`` never land in the
checkout. Its build runs in pip's isolated build environment: the dev venv's setuptools is
older than pyproject's ``setuptools>=68`` and it has no ``wheel`` package, so
``--no-build-isolation`` cannot build it there. pip fetches the build backend, and the new
venv's dependencies, from the machine's configured package indexes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from email.parser import Parser
from pathlib import Path

import pytest

from harness import ROOT, VENV_BIN
from tests.helpers import report

pytestmark = pytest.mark.slow

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
VERSION: str = PYPROJECT["project"]["version"]
DIST_INFO = f"idleproof-{VERSION}.dist-info"
# Controller-side code (the Ansible plugins' inventory checks): never on an app host.
CONTROLLER_ONLY = {"inventory.py", "wiring.py", "agreement.py"}
# Minutes, not seconds: pip may fetch from the network on a loaded machine.
PIP_TIMEOUT = 900


def clean_env() -> dict[str, str]:
    """The environment without the repo's settings or a Python path into the checkout."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DB_", "IDLEPROOF_", "GUNICORN_", "PYTHON", "VIRTUAL_ENV"))
        and k != "DATABASE_URL"
    }


def run(
    cmd: list[str | Path], cwd: Path, timeout: float = 120, check: bool = True
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(c) for c in cmd],
        cwd=cwd,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and done.returncode != 0:
        pytest.fail(f"{' '.join(map(str, cmd))} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done


def working_tree_files() -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [name for name in listed.split("\0") if name and (ROOT / name).is_file()]


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``pip wheel --no-deps`` of a copy of this working tree; built once per session."""
    source = tmp_path_factory.mktemp("source")
    for name in working_tree_files():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    out = tmp_path_factory.mktemp("wheelhouse")
    run(
        [VENV_BIN / "python", "-m", "pip", "wheel", "--no-deps", "-w", out, source],
        cwd=out,
        timeout=PIP_TIMEOUT,
    )
    built = sorted(out.glob("idleproof-*.whl"))
    assert [w.name for w in built] == [f"idleproof-{VERSION}-py3-none-any.whl"]
    return built[0]


def metadata(wheel: Path) -> list[tuple[str, str]]:
    with zipfile.ZipFile(wheel) as z:
        text = z.read(f"{DIST_INFO}/METADATA").decode()
    return list(Parser().parsestr(text).items())


@pytest.fixture(scope="module")
def venv(
    wheel: Path, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Path]:
    """A new virtual environment with the wheel and its dependencies, nothing else."""
    root = tmp_path_factory.mktemp("venv")
    run([sys.executable, "-m", "venv", root], cwd=root)
    python = root / "bin" / "python"
    # Its dependencies as the wheel declares them (no extra), from the package indexes...
    required = [v for k, v in metadata(wheel) if k == "Requires-Dist" and "extra ==" not in v]
    assert required, "the wheel declares no dependency"
    run([python, "-m", "pip", "install", *required], cwd=root, timeout=PIP_TIMEOUT)
    # ...then the wheel itself, from its own directory only: not a namesake from an index.
    run(
        [python, "-m", "pip", "install", "--no-index", "--find-links", wheel.parent,
         f"idleproof=={VERSION}"],
        cwd=root,
        timeout=PIP_TIMEOUT,
    )  # fmt: skip
    report(request, "wheel", f"{wheel.name}: {wheel.stat().st_size} bytes; requires {required}")
    yield root


def python_in(venv: Path, code: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``code`` with the venv's Python, from a directory outside the checkout."""
    return run([venv / "bin" / "python", "-c", code], cwd=venv, check=check)


def test_the_wheel_holds_the_library_only(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
    outside = [n for n in names if not n.startswith(("idleproof/", f"{DIST_INFO}/"))]
    assert outside == []  # no app/, tests/, harness/, deploy/, migrations/ ...
    for top in ("app/", "tests/", "harness/", "deploy/", "ansible/", "bench/"):
        assert not [n for n in names if f"/{top}" in f"/{n}"], top
    controller = [n for n in names if n.rsplit("/", 1)[-1] in CONTROLLER_ONLY]
    assert controller == []
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    for module in ("plugin.py", "engine.py", "flask.py", "gunicorn_conf.py", "ops/cli.py"):
        assert f"idleproof/{module}" in names


def test_the_flask_integration_is_an_extra(wheel: Path) -> None:
    declared = [v for k, v in metadata(wheel) if k == "Requires-Dist"]
    flask = [v for v in declared if v.lower().startswith("flask")]
    assert flask and all('extra == "flask"' in v or 'extra == "dev"' in v for v in flask)


def test_version_is_pyprojects_and_comes_from_the_venv(venv: Path) -> None:
    done = python_in(venv, "import idleproof; print(idleproof.__version__, idleproof.__file__)")
    version, location = done.stdout.split()
    assert version == VERSION
    assert Path(location).is_relative_to(venv)
    assert not Path(location).is_relative_to(ROOT)


def test_the_engine_plugin_entry_point_resolves(venv: Path) -> None:
    code = """
from importlib.metadata import entry_points
import sqlalchemy
from idleproof.engine import is_protected
from idleproof.plugin import IdleProofPlugin

(point,) = entry_points(group="sqlalchemy.plugins", name="idleproof")
assert point.load() is IdleProofPlugin, point
# SQLAlchemy finds it by name; making the engine connects nowhere.
engine = sqlalchemy.create_engine("mysql+pymysql://u:p@127.0.0.1:9/x?plugin=idleproof")
assert is_protected(engine)
print(point.value)
"""
    assert python_in(venv, code).stdout.strip() == "idleproof.plugin:IdleProofPlugin"


def test_the_console_script_works(venv: Path) -> None:
    script = venv / "bin" / "idleproof"
    assert script.is_file()
    done = run([script, "--help"], cwd=venv)
    assert done.stdout.startswith("usage: idleproof")
    for command in ("doctor", "probe-idle", "settings"):
        assert command in done.stdout
    table = run([script, "settings", "--markdown"], cwd=venv).stdout
    assert "| `DB_IDLE_TIMEOUT` |" in table


def test_idleproof_flask_needs_the_flask_extra(venv: Path, wheel: Path) -> None:
    without = python_in(venv, "import idleproof.flask", check=False)
    assert without.returncode != 0
    assert "No module named 'flask'" in without.stderr
    # Everything else imports without Flask (and without Gunicorn).
    python_in(venv, "import idleproof.engine, idleproof.plugin, idleproof.gunicorn_conf")

    run([venv / "bin" / "python", "-m", "pip", "install", f"{wheel}[flask]"], cwd=venv,
        timeout=PIP_TIMEOUT)  # fmt: skip
    done = python_in(venv, "import idleproof.flask; print(idleproof.flask.IdleProof.__name__)")
    assert done.stdout.strip() == "IdleProof"
