"""FindPairs: exact threshold search over embedded records, one search per cell."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from semsim_core.pairs import threshold_pairs
from semsim_core.records import Pair
from transforms import METRICS_NAMESPACE


class PairsInCellFn(beam.DoFn):
    """Finds every pair at or above the threshold among one cell's ``(id, vector)`` members."""

    def __init__(self, threshold: float):
        self._threshold = threshold
        self._pairs = Metrics.counter(METRICS_NAMESPACE, "semantic_pairs")

    def process(self, element: tuple[int, Iterable[tuple[str, np.ndarray]]]) -> Iterator[Pair]:
        _, members = element
        members = list(members)
        ids = [record_id for record_id, _ in members]
        vectors = np.stack([vector for _, vector in members]) if members else np.zeros((0, 1), np.float32)
        pairs = threshold_pairs(ids, vectors, self._threshold)
        self._pairs.inc(len(pairs))
        yield from pairs


class FindPairs(beam.PTransform):
    """Returns the ``semantic`` :class:`Pair` of every two records whose cosine similarity is ``>= threshold``.

    Vectors are keyed by cell and searched exactly inside each cell. For now every vector is in cell 0, so the
    search is exact all-pairs.
    """

    def __init__(self, threshold: float):
        super().__init__()
        self._threshold = threshold

    def expand(self, vectors):
        return (
            vectors
            | "AssignCell" >> beam.Map(lambda item: (0, item))
            | "GroupByCell" >> beam.GroupByKey()
            | "PairsInCell" >> beam.ParDo(PairsInCellFn(self._threshold))
        )
