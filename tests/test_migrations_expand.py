"""Expand/contract (ansible/README.md): the worked example's migration, taken from the
README, applied to a real MariaDB while the release before it serves under real
Gunicorn. GET and POST keep working on the expanded schema; renaming a column in place
(the naive change) breaks the same release."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import requests

from harness import ROOT, VENV_BIN
from harness.mariadb import LocalMariaDB
from tests.helpers import WAIT_TIMEOUT, AppFactory

pytestmark = pytest.mark.slow

README = ROOT / "ansible" / "README.md"
EXAMPLE = "# migrations/versions/0002_add_note_author.py"


def worked_example() -> str:
    """The README's expand migration, verbatim."""
    for block in re.findall(r"^```python\n(.*?)^```", README.read_text(), re.S | re.M):
        if block.startswith(EXAMPLE):
            return str(block)
    raise AssertionError(f"ansible/README.md has no ```python block starting {EXAMPLE!r}")


def alembic(workdir: Path, url: str, *args: str) -> str:
    env = {**os.environ, "DATABASE_URL": url, "DB_IDLE_TIMEOUT": str(WAIT_TIMEOUT)}
    done = subprocess.run(
        [str(VENV_BIN / "alembic"), *args],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def serves(url: str, text: str) -> tuple[int, int]:
    made = requests.post(f"{url}/notes", json={"text": text}, timeout=10)
    listing = requests.get(f"{url}/", timeout=10)
    return made.status_code, listing.status_code


def test_the_old_release_serves_on_the_expanded_schema(
    start_app: AppFactory, mariadb: LocalMariaDB, tmp_path: Path
) -> None:
    # A database of its own: the session's server is shared with other tests.
    name = f"expand{os.getpid()}"
    mariadb.execute(
        f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4",
        f"GRANT ALL PRIVILEGES ON `{name}`.* TO '{mariadb.user}'@'127.0.0.1'",
    )
    url = mariadb.url.rsplit("/", 1)[0] + f"/{name}"
    # The repository's release (app, migrations) plus the next release's expand migration.
    shutil.copy(ROOT / "alembic.ini", tmp_path / "alembic.ini")
    for part in ("app", "migrations"):
        shutil.copytree(ROOT / part, tmp_path / part, ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "migrations" / "versions" / "0002_add_note_author.py").write_text(worked_example())
    try:
        alembic(tmp_path, url, "upgrade", "0001")
        old = start_app(DATABASE_URL=url)
        assert serves(old.url, "before the expand") == (201, 200)

        assert "Running upgrade 0001 -> 0002" in alembic(tmp_path, url, "upgrade", "head")
        columns = mariadb.execute(f"SHOW COLUMNS FROM `{name}`.notes")
        assert [c[0] for c in columns] == ["id", "text", "created_at", "author"]
        # The same running release, its pooled connections and new ones, on the new schema.
        for i in range(6):
            assert serves(old.url, f"after the expand {i}") == (201, 200)
        restarted = start_app(DATABASE_URL=url)
        assert serves(restarted.url, "a restarted old release") == (201, 200)
        rows = mariadb.execute(f"SELECT COUNT(*), COUNT(author) FROM `{name}`.notes")
        assert rows == [(8, 0)]

        # The naive change beside it: the column the old release reads renamed in place.
        mariadb.execute(f"ALTER TABLE `{name}`.notes RENAME COLUMN text TO body")
        made, listed = serves(old.url, "after a rename")
        assert made >= 500 and listed >= 500, (made, listed)
    finally:
        mariadb.execute(f"DROP DATABASE IF EXISTS `{name}`")
