"""A profile of one request, summed by area: where the kit's CPU goes beside the ORM floor's.

cProfile's own time per function (``tottime``), grouped by the package or module it lives
in. cProfile slows every Python call down (about 3x here), so the figures are larger than
the unprofiled ones; compare the areas with each other, kit against floor.
"""

from __future__ import annotations

import cProfile
import pstats
from collections import Counter
from collections.abc import Callable

_KIT = tuple(f"/app/{name}.py" for name in ("db", "guard", "connection", "metrics"))

# Areas, in the report's order: the first whose test matches a function's file wins.
AREAS: tuple[tuple[str, Callable[[str], bool]], ...] = (
    ("the kit's database code (app/db, guard, connection, metrics)", lambda f: f.endswith(_KIT)),
    ("Prometheus client (counters, gauges, histogram)", lambda f: "/prometheus_client/" in f),
    ("SQLAlchemy event dispatch", lambda f: "/sqlalchemy/event/" in f),
    ("SQLAlchemy pool", lambda f: "/sqlalchemy/pool/" in f),
    ("SQLAlchemy engine, SQL, ORM, util", lambda f: "/sqlalchemy/" in f),
    ("PyMySQL", lambda f: "/pymysql/" in f),
    ("Flask, Werkzeug", lambda f: "/flask/" in f or "/werkzeug/" in f),
    ("C functions (socket I/O, poll, locks, builtins)", lambda f: f == "~"),
    ("the rest (the views and model, stdlib)", lambda f: True),
)


def area(filename: str) -> str:
    return next(name for name, matches in AREAS if matches(filename))


def profile_by_area(call: Callable[[], None], n: int) -> dict[str, float]:
    """Profiled µs per call of ``call`` in each area, over ``n`` calls."""
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(n):
        call()
    profiler.disable()
    totals: Counter[str] = Counter({name: 0.0 for name, _ in AREAS})
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    for (filename, _line, _function), (_cc, _nc, tottime, _ct, _callers) in stats.items():
        totals[area(filename)] += tottime / n * 1e6
    return dict(totals)
