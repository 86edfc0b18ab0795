"""A profile of one request, summed by area: where the kit's CPU goes beside the ORM floor's.

cProfile's own time per function (``tottime``), grouped by the package or module it lives
in, over interleaved slices; each area's smallest slice counts (as the timings do: a busy
neighbour or a slow reply from MariaDB inflates a slice, nothing deflates it). cProfile
slows every Python call down (about 3x here), so the figures are larger than the
unprofiled ones; compare the areas with each other, kit against floor.
"""

from __future__ import annotations

import cProfile
import pstats
from collections import Counter
from collections.abc import Callable, Mapping
from typing import TypeVar

K = TypeVar("K")


# Areas, in the report's order: the first whose test matches a function's file wins.
AREAS: tuple[tuple[str, Callable[[str], bool]], ...] = (
    ("the idleproof library (src/idleproof)", lambda f: "/idleproof/" in f),
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


PROFILE_SLICES = 5


def _one_slice(call: Callable[[], None], n: int) -> Counter[str]:
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
    return totals


def profile_by_area(calls: Mapping[K, Callable[[], None]], n: int) -> dict[K, dict[str, float]]:
    """Each call's profiled µs per call by area (the smallest of the interleaved slices)."""
    slices: dict[K, list[Counter[str]]] = {key: [] for key in calls}
    for _ in range(PROFILE_SLICES):
        for key, call in calls.items():
            slices[key].append(_one_slice(call, max(1, n // PROFILE_SLICES)))
    return {
        key: {name: min(s[name] for s in samples) for name, _ in AREAS}
        for key, samples in slices.items()
    }
