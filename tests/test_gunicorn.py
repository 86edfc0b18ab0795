"""gunicorn.conf.py as an operator meets it: bad settings stop start-up with one line."""

from __future__ import annotations

import os
import subprocess

import pytest

from harness import ROOT, VENV_BIN, free_port

pytestmark = pytest.mark.slow

URL = "mysql+pymysql://app:x@127.0.0.1:1/app"  # never reached: start-up fails before


def start_gunicorn(**env: str) -> subprocess.CompletedProcess[str]:
    inherited = {
        k: v
        for k, v in os.environ.items()
        if k != "DATABASE_URL" and not k.startswith(("DB_", "GUNICORN_"))
    }
    full_env = {
        **inherited,
        "GUNICORN_BIND": f"127.0.0.1:{free_port()}",
        "GUNICORN_WORKERS": "1",
        **env,
    }
    return subprocess.run(
        [str(VENV_BIN / "gunicorn"), "-c", "gunicorn.conf.py", "app.wsgi:app"],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"DATABASE_URL": URL, "DB_IDLE_TIMEOUT": "300", "DB_POOL_RECYCLE": "300"},
            "configuration error: DB_POOL_RECYCLE=300 must be below DB_IDLE_TIMEOUT=300: "
            "lower DB_POOL_RECYCLE or unset it to use 270",
        ),
        (
            {"DATABASE_URL": "postgresql://app:x@db/app"},
            "configuration error: DATABASE_URL scheme 'postgresql' is not supported",
        ),
        ({}, "configuration error: DATABASE_URL is not set"),
        (
            {"DATABASE_URL": URL, "GUNICORN_TIMEOUT": "20", "DB_READ_TIMEOUT": "30"},
            "GUNICORN_TIMEOUT=20 must exceed the longest a request can wait on the database, "
            "41 s (2 x DB_POOL_TIMEOUT=2 + DB_PING_TIMEOUT=1 + 2 x DB_CONNECT_TIMEOUT=2 + "
            "DB_NET_TIMEOUT=2 + DB_READ_TIMEOUT=30): raise GUNICORN_TIMEOUT to 42 or lower "
            "DB_READ_TIMEOUT",
        ),
        (
            # The connect and ping in front of the query count too (31 s vs 2 + 30 passed).
            {"DATABASE_URL": URL, "GUNICORN_TIMEOUT": "31", "DB_READ_TIMEOUT": "30"},
            "GUNICORN_TIMEOUT=31 must exceed the longest a request can wait on the database",
        ),
        ({"DATABASE_URL": URL, "GUNICORN_WORKERS": "four"}, "GUNICORN_WORKERS='four' is not"),
        ({"DATABASE_URL": URL, "GUNICORN_PRELOAD_APP": "maybe"}, "GUNICORN_PRELOAD_APP='maybe'"),
    ],
)
def test_bad_settings_stop_start_up_with_one_line(env: dict[str, str], message: str) -> None:
    result = start_gunicorn(**env)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr
