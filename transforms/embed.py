"""EmbedRecords: batched sentence-transformers inference with one model per worker process."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.utils.shared import Shared

from semsim_core.embedder import EmbedConfig, Embedder
from semsim_core.records import Record
from transforms import METRICS_NAMESPACE
from transforms.vector_coder import IdVector


class EmbedBatchFn(beam.DoFn):
    """Embeds a batch of records into ``(id, vector)`` pairs.

    The model lives in a :class:`Shared` handle, so every DoFn instance and thread of one worker process uses the same
    copy; it is loaded on first use and counted in the ``model_loads`` counter.
    """

    def __init__(self, shared: Shared, config: EmbedConfig):
        self._shared = shared
        self._config = config
        self._embedder: Embedder | None = None
        self._loads = Metrics.counter(METRICS_NAMESPACE, "model_loads")
        self._embedded = Metrics.counter(METRICS_NAMESPACE, "embedded")
        self._truncated = Metrics.counter(METRICS_NAMESPACE, "truncated_texts")
        self._encode_ms = Metrics.counter(METRICS_NAMESPACE, "encode_ms")

    def _load(self) -> Embedder:
        self._loads.inc()
        return self._config.load()

    def start_bundle(self) -> None:
        if self._embedder is None:
            self._embedder = self._shared.acquire(self._load, tag=self._config)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit vectors of ``texts``, counted in ``embedded``, ``truncated_texts`` and ``encode_ms``."""
        started = time.perf_counter()
        vectors = self._embedder.encode(texts)
        self._encode_ms.inc(round((time.perf_counter() - started) * 1000))
        self._embedded.inc(len(texts))
        self._truncated.inc(self._embedder.count_truncated(texts))
        return vectors

    def process(self, batch: Sequence[Record]) -> Iterator[tuple[str, np.ndarray]]:
        vectors = self.embed([r.text for r in batch])
        for record, vector in zip(batch, vectors, strict=True):
            yield record.id, vector


DEFAULT_WINDOW = 8192


class EmbedRecords(beam.PTransform):
    """Turns :class:`Record` values into ``(id, unit float32 vector)``.

    Records are cut into windows of ``window`` texts (fewer at the end of a bundle); the embedder sorts each window by
    token length before cutting it into batches, so padding stays small. A larger window pads less and leaves fewer
    short end-of-bundle windows, at the cost of holding its texts and token ids in memory.
    """

    def __init__(self, config: EmbedConfig = EmbedConfig(), window: int = DEFAULT_WINDOW):
        super().__init__()
        self._config = config
        self._window = window

    def expand(self, records):
        return (
            records
            | "Window" >> beam.BatchElements(min_batch_size=self._window, max_batch_size=self._window)
            | "Embed" >> beam.ParDo(EmbedBatchFn(Shared(), self._config)).with_output_types(IdVector)
        )
