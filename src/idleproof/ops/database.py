"""The operator tools' own connection to the database: plain PyMySQL, the app's settings."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

import pymysql

from idleproof.connection import tls_args
from idleproof.settings import Settings


def connect(
    settings: Settings, read_timeout: float | None = None
) -> pymysql.connections.Connection[pymysql.cursors.Cursor]:
    """A connection with the app's URL and connect timeout, in autocommit.

    Queries give up after ``read_timeout`` (default: the app's ping timeout, at least 5 s),
    so a tool never hangs on a silent peer.
    """
    io_timeout = read_timeout or max(settings.ping_timeout, 5.0)
    parts = urlsplit(settings.database_url)
    return pymysql.connect(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 3306,
        user=unquote(parts.username or ""),
        password=unquote(parts.password or ""),
        database=parts.path.lstrip("/") or None,
        connect_timeout=settings.connect_timeout,
        read_timeout=io_timeout,
        write_timeout=io_timeout,
        charset="utf8mb4",
        autocommit=True,
        **tls_args(settings.tls_ca),
    )
