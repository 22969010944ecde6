"""Progress of a long run: a count per step, its rate and, when the step's total is known, an ETA, logged as one
line at most every ``interval`` seconds."""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field

LOG = logging.getLogger("semsim.progress")


@dataclass
class _Step:
    started: float
    updated: float
    count: int = 0
    total: int | None = None


def eta_text(seconds: float) -> str:
    """``3725.2`` -> ``"1:02:05"``."""
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


@dataclass
class Progress:
    """Counts per step (in the order first seen) of one worker process; thread-safe. ``add`` logs a line when
    ``interval`` seconds have passed since the last one; ``interval`` <= 0 never logs."""

    interval: float
    clock: Callable[[], float] = time.monotonic
    log: Callable[[str], None] = LOG.info
    _steps: dict[str, _Step] = field(default_factory=dict)
    _last: float | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, step: str, count: int, total: int | None = None) -> None:
        """Count ``count`` more items of ``step`` (of ``total`` in all, when known)."""
        with self._lock:
            now = self.clock()
            state = self._steps.setdefault(step, _Step(started=now, updated=now))
            state.count += count
            state.updated = now
            if total is not None:
                state.total = total
            if self._last is None:
                self._last = now
            if self.interval > 0 and now - self._last >= self.interval:
                self._last = now
                self.log(self.line())

    def line(self) -> str:
        """``"read 12,000, 5,210/s | embedded 8,192 of 20,000 (41%), 410/s, ETA 0:00:29"``: per step its count, its
        total and share when known, its rate between its first and latest report, and the time left at that rate."""
        parts = []
        for name, step in self._steps.items():
            text = f"{name} {step.count:,}"
            if step.total:
                text += f" of {step.total:,} ({step.count / step.total:.0%})"
            elapsed = step.updated - step.started
            if elapsed > 0:
                rate = step.count / elapsed
                text += f", {rate:,.0f}/s"
                if step.total and rate > 0 and step.count < step.total:
                    text += f", ETA {eta_text((step.total - step.count) / rate)}"
            parts.append(text)
        return " | ".join(parts)


_RUNS: weakref.WeakValueDictionary[str, Progress] = weakref.WeakValueDictionary()
_RUNS_LOCK = threading.Lock()


def run_progress(run: str, interval: float) -> Progress:
    """The :class:`Progress` of pipeline run ``run`` in this process, shared by every step and thread that reports
    for it; kept while some step holds it, so runs in one process never mix their counts."""
    with _RUNS_LOCK:
        progress = _RUNS.get(run)
        if progress is None:
            progress = _RUNS[run] = Progress(interval)
        return progress
