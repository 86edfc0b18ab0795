"""The round trips one request makes to MariaDB, per configuration, and the statements each
carries (``BEGIN+INSERT``: two statements sent before the first answer is read).

    DATABASE_URL=... python -m bench.statements kit|fsa-preping|floor-orm|...

Builds the configuration's app in this process exactly as Gunicorn would (``app.wsgi`` or
``harness.variants``, as ``bench/configs.py`` names it), warms it with Flask's test client,
then records the commands PyMySQL sends for one ``GET /`` and one ``POST /notes``. Prints
them as JSON.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any

from pymysql.connections import Connection
from pymysql.constants import COMMAND
from werkzeug.test import TestResponse

from bench.configs import CONFIGS


def trace(config: str) -> dict[str, list[str]]:
    os.environ.setdefault("DB_IDLE_TIMEOUT", "600")
    wsgi, env = CONFIGS[config]
    if wsgi == "app.wsgi:app":
        from app import create_app

        app = create_app()
    else:
        os.environ["KIT_VARIANT"] = env["KIT_VARIANT"]  # the module builds its app at import
        from harness.variants import app
    client = app.test_client()
    sent: list[str] = []
    answered = [True]  # a packet was read since the last command went out
    original = getattr(Connection, "_execute_command")  # noqa: B009
    original_read = getattr(Connection, "_read_packet")  # noqa: B009

    def recording(self: Connection, command: int, sql: Any) -> Any:
        if command == COMMAND.COM_PING:
            name = "PING"
        else:
            name = (sql if isinstance(sql, str) else sql.decode()).split(" ", 1)[0]
        if answered[0] or not sent:
            sent.append(name)
        else:  # sent behind the previous one, in the same round trip
            sent[-1] += f"+{name}"
        answered[0] = False
        return original(self, command, sql)

    def reading(self: Connection, *args: Any, **kwargs: Any) -> Any:
        answered[0] = True
        return original_read(self, *args, **kwargs)

    setattr(Connection, "_execute_command", recording)  # noqa: B010
    setattr(Connection, "_read_packet", reading)  # noqa: B010
    try:
        for _ in range(3):  # past the first connect and the dialect's start-up queries
            client.get("/")
            client.post("/notes", json={"text": "trace"})
        out = {}
        calls: dict[str, Callable[[], TestResponse]] = {
            "GET /": lambda: client.get("/"),
            "POST /notes": lambda: client.post("/notes", json={"text": "trace"}),
        }
        for endpoint, call in calls.items():
            sent.clear()
            status = call().status_code
            if not 200 <= status < 300:
                raise SystemExit(f"{config} {endpoint} answered {status}")
            out[endpoint] = list(sent)
        return out
    finally:
        setattr(Connection, "_execute_command", original)  # noqa: B010
        setattr(Connection, "_read_packet", original_read)  # noqa: B010


if __name__ == "__main__":
    print(json.dumps(trace(sys.argv[1])))
