"""One progress line per measured step on stderr, with the elapsed time, and each phase's
duration (printed as it ends, kept for the report)."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager


class Progress:
    def __init__(self, total: int):
        self.total, self.step, self.started = total, 0, time.monotonic()
        self.phases: dict[str, float] = {}

    def __call__(self, message: str, count: bool = True) -> None:
        if count:
            self.step += 1
        elapsed = time.monotonic() - self.started
        label = f"{self.step}/{self.total}" if self.total else str(self.step)
        print(f"[bench {label} {elapsed:5.0f}s] {message}", file=sys.stderr, flush=True)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time the block as phase ``name``; a phase that fails still gets its time."""
        started = time.monotonic()
        try:
            yield
        finally:
            seconds = time.monotonic() - started
            self.phases[name] = round(seconds, 1)
            self(f"phase {name}: {seconds:.0f} s", count=False)
