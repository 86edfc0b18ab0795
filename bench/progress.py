"""One progress line per measured step on stderr, with the elapsed time."""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, total: int):
        self.total, self.step, self.started = total, 0, time.monotonic()

    def __call__(self, message: str, count: bool = True) -> None:
        if count:
            self.step += 1
        elapsed = time.monotonic() - self.started
        label = f"{self.step}/{self.total}" if self.total else str(self.step)
        print(f"[bench {label} {elapsed:5.0f}s] {message}", file=sys.stderr, flush=True)
