"""LogProgress: count a PCollection's elements into this worker process's progress; LogStreamStatus: the same for a
stream's status line."""

from __future__ import annotations

import time
from collections.abc import Callable

import apache_beam as beam

from semsim_core.progress import ProgressSpec, stream_status


class ProgressFn(beam.DoFn):
    """Counts each element as ``step``; a bundle's start marks the step as running, so its rate includes the time
    spent before its first element."""

    def __init__(self, step: str, spec: ProgressSpec):
        self._step = step
        self._spec = spec

    def setup(self) -> None:
        self._progress = self._spec.open()

    def start_bundle(self) -> None:
        self._progress.add(self._step, 0)

    def process(self, element) -> None:
        self._progress.add(self._step, 1)


class LogProgress(beam.PTransform):
    """A leaf step that counts the input's elements as ``step`` in the progress of the run ``spec`` names. It fuses
    with the step that makes its input, so it counts while that step works."""

    def __init__(self, step: str, spec: ProgressSpec):
        super().__init__()
        self._fn = ProgressFn(step, spec)

    def expand(self, pcoll):
        return pcoll | "Count" >> beam.ParDo(self._fn)


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
