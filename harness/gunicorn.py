"""The app as an operator runs it: ``alembic upgrade head``, then real Gunicorn.

Gunicorn is stopped by its own process group, never by name.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

import requests

from harness import ROOT, VENV_BIN, free_port


def migrate(database_url: str) -> None:
    """``alembic upgrade head`` on ``database_url``, from the repo root."""
    env = {**os.environ, "DATABASE_URL": database_url}
    subprocess.run(
        [str(VENV_BIN / "alembic"), "upgrade", "head"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )


class GunicornServer:
    """``gunicorn -c gunicorn.conf.py <app>`` from the repo root, as an operator runs it; or
    another application's Gunicorn (``bin_dir``, ``cwd``), with a config of its own or none
    (``config=None``: Gunicorn's defaults, the bind, workers and timeouts on its command
    line)."""

    def __init__(
        self,
        env: Mapping[str, str],
        log_path: Path,
        app: str = "app.wsgi:app",
        workers: int = 2,
        *,
        bin_dir: Path = VENV_BIN,
        config: str | None = "gunicorn.conf.py",
        cwd: Path = ROOT,
        health: str = "/healthz",
    ):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.env = {
            **os.environ,
            "GUNICORN_BIND": f"127.0.0.1:{self.port}",
            "GUNICORN_WORKERS": str(workers),
            "GUNICORN_ACCESSLOG": "",
            "GUNICORN_LOGLEVEL": "info",
            # Short enough that a hung worker is replaced within one test, and above every
            # database wait (2 x 2 + 1 + 2 x 2 + 2 + 10 = 21 s: idleproof/rules.py).
            "GUNICORN_TIMEOUT": "30",
            "GUNICORN_GRACEFUL_TIMEOUT": "2",
            "DB_READ_TIMEOUT": "10",
            "DB_WRITE_TIMEOUT": "10",
            "GUNICORN_MAX_REQUESTS": "0",
            **env,
        }
        self.app = app
        self.bin_dir, self.config, self.cwd, self.health = bin_dir, config, cwd, health
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20) -> GunicornServer:
        log = self.log_path.open("ab")
        e = self.env
        options = (
            ["-c", self.config]
            if self.config
            else ["-b", e["GUNICORN_BIND"], "-w", e["GUNICORN_WORKERS"], "--timeout",
                  e["GUNICORN_TIMEOUT"], "--graceful-timeout", e["GUNICORN_GRACEFUL_TIMEOUT"]]
        )  # fmt: skip
        self.proc = subprocess.Popen(
            [str(self.bin_dir / "gunicorn"), *options, self.app],
            cwd=self.cwd,
            env=self.env,
            stdout=log,
            stderr=log,
            start_new_session=True,  # its own process group: stop() ends master and workers
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited; see {self.log_path}")
            try:
                if requests.get(f"{self.url}{self.health}", timeout=1).ok:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"gunicorn did not answer in {timeout}s; see {self.log_path}")

    @property
    def master_pid(self) -> int | None:
        """The Gunicorn master's pid (its workers are its children), once started."""
        return self.proc.pid if self.proc is not None else None

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        pgid = self.proc.pid  # start_new_session made the master its group leader
        os.killpg(pgid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        # Workers stuck on a dead socket ignore SIGTERM; end the whole group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        self.proc.wait(timeout=5)

    def __enter__(self) -> GunicornServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
