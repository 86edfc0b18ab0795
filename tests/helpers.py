"""Helpers the test modules share (fixtures stay in conftest.py)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.engine import Engine

from idleproof.engine import create_engine, guard_of
from idleproof.guard import ConnectionGuard, Observer
from idleproof.settings import Settings


@dataclass
class Protected:
    """An engine with the kit's protection, and what the tests look at on it."""

    engine: Engine

    @property
    def guard(self) -> ConnectionGuard:
        return guard_of(self.engine)

    @property
    def settings(self) -> Settings:
        return self.guard.settings

    def dispose_after_fork(self) -> None:
        self.engine.dispose(close=False)


def protected(settings: Settings, observer: Observer | None = None) -> Protected:
    return Protected(create_engine(settings, observer if observer is not None else Observer()))
