"""LogProgress: count a PCollection's elements into this worker process's periodic progress line."""

from __future__ import annotations

import apache_beam as beam

from semsim_core.progress import run_progress


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
