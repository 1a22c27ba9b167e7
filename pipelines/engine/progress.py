"""Progress of a sweep: one line at most every few seconds with the rate, the ETA and the best value so far."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable


@dataclass
class Progress:
    """Counts finished configurations and prints one line at most every ``every_s`` seconds: rate and ETA."""

    name: str
    total: int
    done: int = 0
    failed: int = 0
    quiet: bool = False
    every_s: float = 2.0
    running_every_s: float = 60.0  # long trials: a line on the latest intermediate report at most this often
    start: float = field(default_factory=time.time)
    _base: int = 0
    _printed: float = 0.0
    best: tuple | None = None

    def __post_init__(self):
        self._base = self.done

    def add(self, n: int, text: str, metric: str, value, mode: str) -> None:
        self.done += n
        if value is not None and (self.best is None or (value > self.best[0] if mode == "max" else value < self.best[0])):
            self.best = (value, metric, text)
        self.show(text)

    def fail(self, text: str, retried: bool) -> None:
        self.failed += 0 if retried else 1
        self.show(text + (" (queued again)" if retried else ""), force=True)

    def running(self, describe: Callable[[], str]) -> None:
        """A line on a trial still running, ``describe()`` (built only then), when none was printed for ``running_every_s``."""
        now = time.time()
        if self.quiet or now - self._printed < self.running_every_s:
            return
        self._printed = now
        print(f"[{self.name}] {self.done}/{self.total} done | {now - self.start:.0f}s | running: {describe()}", flush=True)

    def show(self, text: str, force: bool = False) -> None:
        now = time.time()
        if self.quiet or (not force and now - self._printed < self.every_s and self.done < self.total):
            return
        self._printed = now
        elapsed = now - self.start
        rate = (self.done - self._base) / elapsed if elapsed > 0 else 0.0
        eta = f", ETA {_duration((self.total - self.done) / rate)}" if rate > 0 and self.done < self.total else ""
        best = f" | best {self.best[1]}={format_value(self.best[0])} ({self.best[2]})" if self.best else ""
        failed = f", {self.failed} failed" if self.failed else ""
        print(f"[{self.name}] {self.done}/{self.total} done{failed} | {rate:.2f}/s{eta} | {elapsed:.0f}s | {text}{best}", flush=True)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def format_value(value) -> str:
    """A metric value as the progress lines show it."""
    return "n/a" if value is None else f"{value:.4f}"
