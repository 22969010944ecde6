"""Progress of a long run: a count per step, its rate and, when the step's total is known, an ETA, shown as live
bars on a terminal or logged as one line at most every ``interval`` seconds; and a stream's status line."""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

from tqdm import tqdm

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


class ProgressBars:
    """A live tqdm bar per step on a terminal (``file``; default stderr), each with its count, share of the total when
    known, rate and ETA; tqdm redraws a bar at most every ``mininterval`` seconds."""

    def __init__(self, file: TextIO | None = None, mininterval: float = 0.5):
        self._file = file
        self._mininterval = mininterval
        self._bars: dict[str, tqdm] = {}
        self._updated: dict[str, float] = {}

    def show(self, name: str, count: int, total: int | None) -> None:
        """Draw step ``name`` at ``count`` (of ``total``)."""
        bar = self._bars.get(name)
        if bar is None:
            bar = self._bars[name] = tqdm(
                desc=name, total=total, unit="", position=len(self._bars), file=self._file or sys.stderr,
                mininterval=self._mininterval, dynamic_ncols=True, leave=True,
            )  # fmt: skip
        if total is not None and bar.total != total:
            bar.total = total
            bar.refresh()
        bar.update(count - bar.n)
        self._updated[name] = time.time()

    def close(self) -> None:
        """Draw every bar a last time, its time and rate as of its last change, and leave it on the terminal."""
        for name, bar in self._bars.items():
            bar._time = lambda at=self._updated[name]: at  # tqdm's clock: the final line must not count idle time
            bar.close()
        self._bars.clear()


@dataclass
class Progress:
    """Counts per step (in the order first seen) of one worker process; thread-safe. With ``bars``, every change is
    drawn there; else ``add`` logs a line when ``interval`` seconds have passed since the last one (``interval`` <= 0
    never logs)."""

    interval: float
    clock: Callable[[], float] = time.monotonic
    log: Callable[[str], None] = LOG.info
    bars: ProgressBars | None = None
    whole_run: bool = True  # False: other processes share the work, so a total is the run's, not this count's
    _steps: dict[str, _Step] = field(default_factory=dict)
    _last: float | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, step: str, count: int, total: int | None = None) -> None:
        """Count ``count`` more items of ``step`` (of ``total`` in all, when known); ``count`` 0 marks the step as
        started (its rate counts from the first call)."""
        self._update(step, lambda state: state.count + count, total)

    def reach(self, step: str, value: int, total: int | None = None) -> None:
        """Set ``step``'s count to ``value`` unless it is already higher (e.g. the clustering round under way, which
        every worker thread of that round reports)."""
        self._update(step, lambda state: max(state.count, value), total)

    def _update(self, step: str, count: Callable[[_Step], int], total: int | None) -> None:
        with self._lock:
            now = self.clock()
            state = self._steps.setdefault(step, _Step(started=now, updated=now))
            state.count = count(state)
            state.updated = now
            if total is not None:
                state.total = total
            if self.bars is not None:
                self.bars.show(step, state.count, state.total)
                return
            if self._last is None:
                self._last = now
            if self.interval > 0 and now - self._last >= self.interval:
                self._last = now
                self.log(self.line())

    def finish(self) -> None:
        """Show the final state: the bars drawn a last time and left on the terminal, or a last line (when this
        process counted anything and lines are on)."""
        with self._lock:
            if self.bars is not None:
                self.bars.close()
            elif self._steps and self.interval > 0:
                self.log(self.line())

    def line(self) -> str:
        """``"read 12,000, 5,210/s | embedded 8,192 of 20,000 (41%), 410/s, ETA 0:00:29"``: per step its count, its
        total and share when known, its rate between its first and latest report, and the time left at that rate.
        When the process does not do the whole run, a total reads ``"(run: 20,000)"``, with no share or ETA."""
        parts = []
        for name, step in self._steps.items():
            text = f"{name} {step.count:,}"
            if step.total and self.whole_run:
                text += f" of {step.total:,} ({step.count / step.total:.0%})"
            elif step.total:
                text += f" (run: {step.total:,})"
            elapsed = step.updated - step.started
            if elapsed > 0:
                rate = step.count / elapsed
                text += f", {rate:,.0f}/s"
                if self.whole_run and step.total and rate > 0 and step.count < step.total:
                    text += f", ETA {eta_text((step.total - step.count) / rate)}"
            parts.append(text)
        return " | ".join(parts)


_RUNS: weakref.WeakValueDictionary[str, Progress] = weakref.WeakValueDictionary()
_RUNS_LOCK = threading.Lock()


BARS, LINES, WORKER_LINES = "bars", "lines", "worker-lines"  # how a run shows its progress: ProgressSpec.display


def _worker_line(line: str) -> None:
    sys.stderr.write(f"INFO semsim.progress (worker {os.getpid()}): {line}\n")
    sys.stderr.flush()


@dataclass(frozen=True)
class ProgressSpec:
    """How the steps of pipeline run ``run`` (any id they share) show progress in each worker process: ``bars``,
    live bars on the process's terminal; ``lines``, a line at most every ``seconds`` through the logger
    ``semsim.progress`` (INFO); ``worker-lines``, that line written straight to the process's stderr, for worker
    processes that share the launching process's terminal (the runner relays their log records as protos)."""

    run: str
    seconds: float
    display: str = LINES
    whole_run: bool = True  # the process's workers do the whole run (an in-process runner): totals give ETAs

    def open(self) -> Progress:
        """The :class:`Progress` of this run in this process, shared by every step and thread that reports for it;
        kept while some step holds it, so runs in one process never mix their counts."""
        with _RUNS_LOCK:
            progress = _RUNS.get(self.run)
            if progress is None:
                bars = ProgressBars() if self.display == BARS else None
                log = _worker_line if self.display == WORKER_LINES else LOG.info
                progress = _RUNS[self.run] = Progress(self.seconds, log=log, bars=bars, whole_run=self.whole_run)
            return progress


@dataclass
class StreamStatus:
    """A stream's status in one worker process, one line at most every ``interval`` seconds: per kind of event
    (posts received, resolved, dead letters) the total and the count since the last line; the p50 and p95 of the
    publish-to-result latency of the posts resolved since the last line; and what ``held`` says (the cells this
    process holds in memory). Thread-safe; ``interval`` <= 0 never logs."""

    interval: float
    held: Callable[[], str] = lambda: ""
    clock: Callable[[], float] = time.monotonic
    log: Callable[[str], None] = LOG.info
    _totals: dict[str, int] = field(default_factory=dict)
    _since: dict[str, int] = field(default_factory=dict)
    _latencies: list[float] = field(default_factory=list)
    _last: float | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, kind: str, latency: float | None = None) -> None:
        """Count one ``kind`` event; ``latency``: seconds from the post's publish time to its result."""
        with self._lock:
            self._totals[kind] = self._totals.get(kind, 0) + 1
            self._since[kind] = self._since.get(kind, 0) + 1
            if latency is not None:
                self._latencies.append(latency)
            if self._last is None:
                self._last = self.clock()
            self._log_if_due()

    def tick(self) -> None:
        """Log the line if ``interval`` passed and anything happened since the last one: a stream that went quiet
        shows its last events without waiting for the next (:func:`stream_status` ticks every ``interval``)."""
        with self._lock:
            if any(self._since.values()):
                self._log_if_due()

    def flush(self) -> None:
        """Log the line now if anything happened since the last one (called when the process exits, so the events
        of a stream's last interval are not lost when it is stopped or drained)."""
        with self._lock:
            if self.interval > 0 and any(self._since.values()):
                self._log_now()

    def _log_if_due(self) -> None:  # the lock held
        if self.interval > 0 and self.clock() - self._last >= self.interval:
            self._log_now()

    def _log_now(self) -> None:  # the lock held
        self._last = self.clock()
        self.log(self.line())
        self._since = dict.fromkeys(self._since, 0)
        self._latencies = []

    def line(self) -> str:
        """``"stream: received 1,204 (+96) | resolved 1,200 (+95) | dead letters 3 (+0) | latency p50 0.84 s, p95
        1.52 s (95 posts) | cells held 12, 45 MB"``."""
        parts = [f"{kind} {total:,} (+{self._since[kind]:,})" for kind, total in self._totals.items()]
        if self._latencies:
            ordered = sorted(self._latencies)
            p50, p95 = (ordered[min(len(ordered) - 1, int(q * len(ordered)))] for q in (0.5, 0.95))
            parts.append(f"latency p50 {p50:.2f} s, p95 {p95:.2f} s ({len(ordered):,} posts)")
        held = self.held()
        return "stream: " + " | ".join([*parts, *([held] if held else [])])


_STREAMS: dict[str, StreamStatus] = {}  # held for the process's life: runners may drop a DoFn after every bundle


def stream_status(run: str, interval: float, held: Callable[[], str]) -> StreamStatus:
    """The :class:`StreamStatus` of streaming run ``run`` in this process, shared by its status steps (a few hundred
    bytes per stream the process ever ran), with a daemon thread that ticks it every ``interval`` seconds and a last
    line, if anything is new, when the process exits."""
    with _RUNS_LOCK:
        status = _STREAMS.get(run)
        if status is None:
            status = _STREAMS[run] = StreamStatus(interval, held)
            if interval > 0:
                threading.Thread(target=_tick_every, args=(status,), name="semsim-stream-status", daemon=True).start()
                atexit.register(status.flush)
        return status


def _tick_every(status: StreamStatus) -> None:
    while True:
        time.sleep(status.interval)
        status.tick()
