"""EmbedRecords: batched sentence-transformers inference with one model per worker process."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.utils.shared import Shared

from semsim_core.embedder import EmbedConfig, Embedder
from semsim_core.progress import ProgressSpec
from semsim_core.records import Record
from transforms import METRICS_NAMESPACE
from transforms.vector_blocks import VectorBlock

BACKEND_USED = "backend_used"
_KEPT_MODELS = 4  # a worker process embeds with one or two (the run's, and the fp32 model that rescores)
_kept: OrderedDict[EmbedConfig, Embedder] = OrderedDict()  # the latest used, by config
_kept_lock = threading.Lock()


def keep_for_process(config: EmbedConfig, embedder: Embedder) -> None:
    """Hold the worker's model for its process: Beam's ``Shared`` keeps only the one object last released alive, so
    where a runner drops DoFn instances after each bundle (the local streaming runner does) two models used in turn
    were each loaded again for every bundle."""
    with _kept_lock:
        _kept[config] = embedder
        _kept.move_to_end(config)
        while len(_kept) > _KEPT_MODELS:
            _kept.popitem(last=False)


class EmbedBatchFn(beam.DoFn):
    """Embeds a batch of records into one :class:`VectorBlock`, and names the backend that ran them on
    ``backend_used`` once per bundle (``auto`` is decided by each worker for its own CPU).

    The model lives in a :class:`Shared` handle, so every DoFn instance and thread of one worker process uses the same
    copy; it is loaded on first use and counted in the ``model_loads`` counter. With ``progress``, each window counts
    as ``embedded`` once encoded (of ``total``, a side input, when given); the step's rate starts after the load.
    """

    def __init__(
        self,
        shared: Shared,
        config: EmbedConfig,
        metrics_prefix: str = "",
        progress: ProgressSpec | None = None,
    ):
        self._shared = shared
        self._config = config
        self._progress_spec = progress
        self._embedder: Embedder | None = None
        self._loads = Metrics.counter(METRICS_NAMESPACE, f"{metrics_prefix}model_loads")
        self._embedded = Metrics.counter(METRICS_NAMESPACE, f"{metrics_prefix}embedded")
        self._truncated = Metrics.counter(METRICS_NAMESPACE, f"{metrics_prefix}truncated_texts")
        self._encode_ms = Metrics.counter(METRICS_NAMESPACE, f"{metrics_prefix}encode_ms")

    def _load(self) -> Embedder:
        self._loads.inc()
        return self._config.load()

    def setup(self) -> None:
        self._progress = self._progress_spec.open() if self._progress_spec else None

    def start_bundle(self) -> None:
        self._backend_reported = False

    def _model(self) -> Embedder:
        """The worker's shared model, acquired on first use (a bundle with nothing to embed loads nothing)."""
        if self._embedder is None:
            self._embedder = self._shared.acquire(self._load, tag=self._config)
            keep_for_process(self._config, self._embedder)
        return self._embedder

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit vectors of ``texts``, counted in ``embedded``, ``truncated_texts`` and ``encode_ms`` (the encoder's
        own time: the model's load is not in it)."""
        model = self._model()
        started = time.perf_counter()
        vectors = model.encode(texts)
        self._encode_ms.inc(round((time.perf_counter() - started) * 1000))
        self._embedded.inc(len(texts))
        self._truncated.inc(model.count_truncated(texts))
        return vectors

    def process(self, batch: Sequence[Record], total: int | None = None) -> Iterator[VectorBlock]:
        if self._progress:
            self._model()
            self._progress.add("embedded", 0, total)
        vectors = self.embed([r.text for r in batch])
        if self._progress:
            self._progress.add("embedded", len(batch), total)
        if not self._backend_reported:
            self._backend_reported = True
            yield beam.pvalue.TaggedOutput(BACKEND_USED, self._embedder.backend)
        yield VectorBlock([r.id for r in batch], vectors, [r.text for r in batch])


DEFAULT_WINDOW = 8192


class EmbedRecords(beam.PTransform):
    """Turns :class:`Record` values into ``vectors`` (:class:`VectorBlock` values, one per window) and
    ``backend_used`` (the name of the backend each bundle ran on).

    Records are cut into windows of ``window`` texts (fewer at the end of a bundle); the embedder sorts each window by
    token length before cutting it into batches, so padding stays small. A larger window pads less and leaves fewer
    short end-of-bundle windows, at the cost of holding its texts and token ids in memory. Counters are named with
    ``metrics_prefix`` (e.g. ``rescore_embedded``), so a second model's work is counted apart. ``progress``: the
    records are counted first, then windows count as they are encoded, against that total.
    """

    def __init__(
        self,
        config: EmbedConfig = EmbedConfig(),
        window: int = DEFAULT_WINDOW,
        metrics_prefix: str = "",
        progress: ProgressSpec | None = None,
    ):
        super().__init__()
        self._config = config
        self._window = window
        self._metrics_prefix = metrics_prefix
        self._progress = progress

    def expand(self, records):
        side = {}
        if self._progress:
            side["total"] = beam.pvalue.AsSingleton(records | "CountRecords" >> beam.combiners.Count.Globally())
        fn = EmbedBatchFn(Shared(), self._config, self._metrics_prefix, self._progress)
        return (
            records
            | "Window" >> beam.BatchElements(min_batch_size=self._window, max_batch_size=self._window)
            | "Embed"
            >> beam.ParDo(fn, **side).with_output_types(VectorBlock).with_outputs(BACKEND_USED, main="vectors")
        )
