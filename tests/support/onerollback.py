"""One ``ROLLBACK`` per request instead of two: the change the benchmark proposes for app/.

With SQLAlchemy 2.x, ``Session.close()`` (what ``scoped_session.remove()`` calls at
teardown) first rolls back the session's transaction, then closes the ``Connection``;
by then the ``Connection`` no longer holds a transaction, so the pool's reset-on-return
sends a second ``ROLLBACK`` on a connection that has nothing to roll back. A committed
``POST`` pays the same extra round trip after its ``COMMIT``.

:func:`skip_redundant_reset` keeps the reset but makes it conditional: the pooled
connection remembers whether a transaction was begun and not yet committed or rolled
back (engine events), and the server's own "in transaction" status flag is checked too.
When either says a transaction may be open, or nothing is known, it rolls back.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy
from pymysql.constants import SERVER_STATUS
from sqlalchemy import event
from sqlalchemy.pool import PoolResetState
from sqlalchemy.pool.base import reset_none


def skip_redundant_reset(engine: sqlalchemy.Engine) -> None:
    # What create_engine(..., pool_reset_on_return=None) sets; app/ would pass that.
    engine.pool._reset_on_return = reset_none

    def opened(conn: sqlalchemy.Connection) -> None:
        conn.info["transaction_open"] = True

    def ended(conn: sqlalchemy.Connection) -> None:
        conn.info["transaction_open"] = False

    def reset(dbapi_connection: Any, record: Any, state: PoolResetState) -> None:
        in_trans = (dbapi_connection.server_status or 0) & SERVER_STATUS.SERVER_STATUS_IN_TRANS
        if not state.terminate_only and (record.info.get("transaction_open", True) or in_trans):
            dbapi_connection.rollback()
            record.info["transaction_open"] = False

    event.listen(engine, "begin", opened)
    event.listen(engine, "commit", ended)
    event.listen(engine, "rollback", ended)
    event.listen(engine, "reset", reset)
