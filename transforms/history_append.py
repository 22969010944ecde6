"""AppendToHistory: a stream commits the posts it stored to its history store, a segment at a time."""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from collections.abc import Iterable, Iterator

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.transforms import trigger, window

from semsim_core.history import HistoryError
from semsim_core.stream_history import AcceptedPost, StreamHistory
from transforms import METRICS_NAMESPACE

_LOG = logging.getLogger(__name__)


class _AppendFn(beam.DoFn):
    """One pane of accepted posts -> one committed segment, named by the job's launch and the pane, so a retried
    bundle commits it once. While another writer holds the store's lock (a batch run, a compaction), waits and
    tries again, up to ``wait_seconds``; then the bundle fails and the runner retries it."""

    def __init__(self, history: StreamHistory, launch: str, wait_seconds: float):
        self._history = history
        self._launch = launch
        self._wait = wait_seconds
        self._committed = Metrics.counter(METRICS_NAMESPACE, "history_posts_committed")

    def process(self, element: tuple[None, Iterable[AcceptedPost]], pane=beam.DoFn.PaneInfoParam) -> Iterator[str]:
        _, posts = element
        posts = sorted({p.id: p for p in posts}.values(), key=lambda p: (p.timestamp, p.id))
        segment = f"{self._launch}-{pane.index:08d}"
        owner = f"semsim stream {self._launch}"
        deadline = time.monotonic() + self._wait
        while True:
            try:
                self._history.append(posts, segment, f"stream {self._launch}", owner)
                break
            except HistoryError as e:
                if "is locked by" not in str(e) or time.monotonic() > deadline:
                    raise
                _LOG.info("history %s: waiting to commit %d posts: %s", self._history.root, len(posts), e)
                time.sleep(2.0)
        self._committed.inc(len(posts))
        yield segment


DEFAULT_COMMIT_SECONDS = 60


class AppendToHistory(beam.PTransform):
    """:class:`AcceptedPost` values -> the ids of the segments committed to ``history``: everything that arrived in
    each ``commit_seconds`` of processing time (a processing-time trigger in the global window) is one segment: its
    cell parts and records, then the manifest, under the store's lock."""

    def __init__(self, history: StreamHistory, commit_seconds: int, wait_seconds: float = 600.0):
        super().__init__()
        self._history = history
        self._commit_seconds = commit_seconds
        self._wait = wait_seconds
        self._launch = f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"

    def expand(self, accepted):
        every = trigger.Repeatedly(trigger.AfterProcessingTime(self._commit_seconds))
        return (
            accepted
            | "OneKey" >> beam.Map(lambda post: (None, post))
            | "Panes"
            >> beam.WindowInto(
                window.GlobalWindows(), trigger=every, accumulation_mode=trigger.AccumulationMode.DISCARDING
            )
            | "GroupPane" >> beam.GroupByKey()
            | "Commit" >> beam.ParDo(_AppendFn(self._history, self._launch, self._wait))
        )
