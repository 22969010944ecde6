"""LogProgress: count a PCollection's elements into this worker process's periodic progress line; LogStreamStatus:
the same for a stream's status line."""

from __future__ import annotations

import time
from collections.abc import Callable

import apache_beam as beam

from semsim_core.progress import run_progress, stream_status


class ProgressFn(beam.DoFn):
    """Counts each element as ``step``; a bundle's start marks the step as running, so its rate includes the time
    spent before its first element (e.g. encoding the first window)."""

    def __init__(self, step: str, seconds: float, run: str):
        self._step = step
        self._seconds = seconds
        self._run = run

    def setup(self) -> None:
        self._progress = run_progress(self._run, self._seconds)

    def start_bundle(self) -> None:
        self._progress.add(self._step, 0)

    def process(self, element, total: int | None = None) -> None:
        self._progress.add(self._step, 1, total)


class LogProgress(beam.PTransform):
    """A leaf step that counts the input's elements as ``step`` in the progress line of pipeline run ``run`` (any id
    shared by the run's LogProgress steps), logged (logger ``semsim.progress``, INFO) at most every ``seconds`` per
    worker process; with ``total`` (a one-element PCollection of the expected count) the line shows the share done
    and an ETA."""

    def __init__(self, step: str, seconds: float, run: str, total=None):
        super().__init__()
        self._step = step
        self._seconds = seconds
        self._run = run
        self._total = total

    def expand(self, pcoll):
        side = {} if self._total is None else {"total": beam.pvalue.AsSingleton(self._total)}
        return pcoll | "Count" >> beam.ParDo(ProgressFn(self._step, self._seconds, self._run), **side)


class StreamStatusFn(beam.DoFn):
    """Counts each element as ``kind`` in the stream's status line; with ``latency``, also the time since the
    element's event time (a post's publish time) as its publish-to-result latency."""

    def __init__(self, kind: str, seconds: float, run: str, held: Callable[[], str], latency: bool):
        self._kind = kind
        self._seconds = seconds
        self._run = run
        self._held = held
        self._latency = latency

    def setup(self) -> None:
        self._status = stream_status(self._run, self._seconds, self._held)

    def process(self, element, timestamp=beam.DoFn.TimestampParam) -> None:
        self._status.add(self._kind, time.time() - float(timestamp) if self._latency else None)


class LogStreamStatus(beam.PTransform):
    """A leaf step that counts the input's elements as ``kind`` in the status line of streaming run ``run``, logged
    (logger ``semsim.progress``, INFO) at most every ``seconds`` per worker process; ``held`` (a module-level
    function) adds what the process holds; ``latency``: the elements are results, timestamped with their post's
    publish time."""

    def __init__(self, kind: str, seconds: float, run: str, held: Callable[[], str], latency: bool = False):
        super().__init__()
        self._fn = StreamStatusFn(kind, seconds, run, held, latency)

    def expand(self, pcoll):
        return pcoll | "Count" >> beam.ParDo(self._fn)
