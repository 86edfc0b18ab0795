"""In-process micro-measurements: what ending the session after each request costs.

Runs in the benchmark's own process against the same MariaDB, without Gunicorn or HTTP,
so the per-request session removal is priced on its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from bench.configs import THROUGHPUT_WAIT_TIMEOUT
from harness.mariadb import LocalMariaDB

MICRO_SLICES = 20

Cases = dict[str, Callable[[], object]]


@contextmanager
def removal_cases(db: LocalMariaDB) -> Iterator[Cases]:
    """The cases to time, each one call; every engine and connection is closed on exit."""
    import pymysql
    import sqlalchemy
    from sqlalchemy import select
    from sqlalchemy.orm import scoped_session, sessionmaker

    from app import create_app
    from app.db import get_db
    from app.models import Note
    from app.settings import Settings

    settings = Settings.from_env(
        {"DATABASE_URL": db.url, "DB_IDLE_TIMEOUT": str(THROUGHPUT_WAIT_TIMEOUT)}
    )
    query = select(Note).order_by(Note.id.desc()).limit(20)
    # The kit exactly as create_app() wires it (guard, metrics, reset-on-return), and a
    # second one whose ROLLBACK is skipped: what ending the transaction itself costs.
    kit, unsafe = get_db(create_app(settings)), get_db(create_app(settings))
    unsafe.engine.dialect.do_rollback = lambda dbapi_connection: None  # type: ignore[method-assign]
    plain = scoped_session(sessionmaker(bind=sqlalchemy.create_engine(db.url)))

    def kit_keep() -> None:
        kit.session.scalars(query).all()

    def kit_remove() -> None:
        kit.session.scalars(query).all()
        kit.remove_session()

    def kit_close() -> None:
        kit.session.scalars(query).all()
        kit.session.close()

    def kit_remove_without_rollback() -> None:
        unsafe.session.scalars(query).all()
        unsafe.remove_session()

    def plain_remove() -> None:
        plain.scalars(query).all()
        plain.remove()

    raw = pymysql.connect(host="127.0.0.1", port=db.port, user=db.user, password=db.password)
    try:
        yield {
            "query_session_kept_us": kit_keep,
            "query_then_remove_kit_us": kit_remove,
            "query_then_close_kit_us": kit_close,
            "query_then_remove_without_rollback_us": kit_remove_without_rollback,
            "query_then_remove_plain_engine_us": plain_remove,
            "rollback_round_trip_us": raw.rollback,
        }
    finally:
        raw.close()
        for database in (kit, unsafe):
            database.session.remove()
            database.engine.dispose()
        plain.remove()


def per_call(fn: Callable[[], object], n: int) -> float:
    """Microseconds per call of ``fn``, over ``n`` calls."""
    started = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - started) / n * 1e6


def fastest_slices(cases: Cases, iterations: int) -> dict[str, float]:
    """Each case's fastest slice of ``iterations / MICRO_SLICES`` calls, interleaved."""
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for fn in cases.values():
        per_call(fn, 50)  # warm-up
    # Interleaved slices: a busy neighbour hits every case alike.
    for _ in range(MICRO_SLICES):
        for name, fn in cases.items():
            samples[name].append(per_call(fn, max(1, iterations // MICRO_SLICES)))
    # The fastest slice: what the code costs when nothing else got in the way (timeit's rule).
    return {name: min(v) for name, v in samples.items()}


def removal_microbench(db: LocalMariaDB, iterations: int) -> dict[str, Any]:
    """Microseconds per GET /-like query, with and without ending the session after it.

    Runs in this process against the same server, interleaved in slices (fastest per case):
    the kit's ``Database`` (from ``create_app()``) keeping its session (as ``bare`` does),
    removing it (as the kit does at teardown), closing it (the same ``Session`` object next
    time), removing it with the ``ROLLBACK`` skipped (measurement only: splits the cost into
    ending the transaction and the rest), and a plain ``create_engine`` removing it; plus
    PyMySQL's bare ``ROLLBACK`` on a connection with no transaction open.
    """
    with removal_cases(db) as cases:
        result: dict[str, Any] = dict(fastest_slices(cases, iterations))
    result["iterations"] = iterations
    kept = result["query_session_kept_us"]
    result["removal_cost_kit_us"] = result["query_then_remove_kit_us"] - kept
    result["close_cost_kit_us"] = result["query_then_close_kit_us"] - kept
    # Pool checkin/checkout, a new Session, the guard and the metrics, without the round trip.
    result["lifecycle_cost_us"] = result["query_then_remove_without_rollback_us"] - kept
    result["transaction_end_cost_us"] = (
        result["query_then_remove_kit_us"] - result["query_then_remove_without_rollback_us"]
    )
    result["removal_cost_plain_engine_us"] = result["query_then_remove_plain_engine_us"] - kept
    return result
