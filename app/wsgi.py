"""WSGI entry point: ``gunicorn -c gunicorn.conf.py app.wsgi:app``.

A bad setting stops the process here with one line instead of a traceback per worker.
"""

from __future__ import annotations

import sys

from app import create_app
from idleproof.settings import SettingsError

try:
    app = create_app()
except SettingsError as exc:
    sys.exit(f"configuration error: {exc}")
