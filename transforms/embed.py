"""EmbedRecords: batched sentence-transformers inference with one model per worker process."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.utils.shared import Shared

from semsim_core.embedder import DEFAULT_MODEL, Embedder
from semsim_core.records import Record
from transforms import METRICS_NAMESPACE


class EmbedBatchFn(beam.DoFn):
    """Embeds a batch of records into ``(id, vector)`` pairs.

    The model lives in a :class:`Shared` handle, so every DoFn instance and thread of one worker process uses the same
    copy; it is loaded on first use and counted in the ``model_loads`` counter.
    """

    def __init__(self, shared: Shared, model: str, backend: str, batch_size: int):
        self._shared = shared
        self._model = model
        self._backend = backend
        self._batch_size = batch_size
        self._embedder: Embedder | None = None
        self._loads = Metrics.counter(METRICS_NAMESPACE, "model_loads")
        self._embedded = Metrics.counter(METRICS_NAMESPACE, "embedded")
        self._truncated = Metrics.counter(METRICS_NAMESPACE, "truncated_texts")

    def _load(self) -> Embedder:
        self._loads.inc()
        return Embedder.load(self._model, self._backend, self._batch_size)

    def start_bundle(self) -> None:
        if self._embedder is None:
            self._embedder = self._shared.acquire(self._load, tag=(self._model, self._backend, self._batch_size))

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit vectors of ``texts``, counted in ``embedded`` and ``truncated_texts``."""
        vectors = self._embedder.encode(texts)
        self._embedded.inc(len(texts))
        self._truncated.inc(self._embedder.count_truncated(texts))
        return vectors

    def process(self, batch: Sequence[Record]) -> Iterator[tuple[str, np.ndarray]]:
        vectors = self.embed([r.text for r in batch])
        for record, vector in zip(batch, vectors, strict=True):
            yield record.id, vector


class EmbedRecords(beam.PTransform):
    """Turns :class:`Record` values into ``(id, unit float32 vector)``.

    Records are cut into windows of ``window`` texts; the embedder sorts each window by length before batching it in
    ``batch_size`` texts, so padding stays small.
    """

    def __init__(self, model: str = DEFAULT_MODEL, backend: str = "torch", batch_size: int = 32, window: int = 256):
        super().__init__()
        self._model = model
        self._backend = backend
        self._batch_size = batch_size
        self._window = window

    def expand(self, records):
        return (
            records
            | "Window" >> beam.BatchElements(min_batch_size=self._window, max_batch_size=self._window)
            | "Embed" >> beam.ParDo(EmbedBatchFn(Shared(), self._model, self._backend, self._batch_size))
        )
