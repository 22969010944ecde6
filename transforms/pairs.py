"""FindPairs: exact threshold search inside each k-means cell, each pair reported once."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from semsim_core.cells import bounded_cell_pairs, owning_cell
from transforms import METRICS_NAMESPACE
from transforms.cells import AssignCells, Member

CELL_SIZES = "cell_sizes"


class PairsInCellFn(beam.DoFn):
    """Finds the pairs at or above the threshold among one cell's members and keeps those this cell owns (the
    smallest cell both members belong to). Also emits the cell's size on ``cell_sizes``."""

    def __init__(self, threshold: float, max_cell_size: int, margin: float):
        self._threshold = threshold
        self._max_cell_size = max_cell_size
        self._margin = margin
        self._pairs = Metrics.counter(METRICS_NAMESPACE, "candidate_pairs")
        self._largest = Metrics.distribution(METRICS_NAMESPACE, "cell_size")

    def process(self, element: tuple[int, Iterable[Member]]) -> Iterator:
        cell, members = element
        members = sorted(members, key=lambda m: m[0])
        cells_of = {record_id: cells for record_id, _, cells in members}
        self._largest.update(len(members))
        yield beam.pvalue.TaggedOutput(CELL_SIZES, len(members))
        vectors = np.stack([vector for _, vector, _ in members])
        found = bounded_cell_pairs(list(cells_of), vectors, self._threshold, self._max_cell_size, self._margin)
        for pair in found:
            if owning_cell(cells_of[pair.id_a], cells_of[pair.id_b]) == cell:
                self._pairs.inc()
                yield pair


def largest(sizes: Iterable[int]) -> int:
    """The largest cell size (0 when there are no cells); combine ``cell_sizes`` with it."""
    return max(sizes, default=0)


class FindPairs(beam.PTransform):
    """``(id, vector)`` -> ``pairs`` (semantic :class:`Pair` with cosine ``>= threshold``) and ``cell_sizes``.

    Vectors are keyed by every cell within ``margin`` of their nearest centroid (``centroids``: a one-element
    PCollection); each cell is searched exactly, split again above ``max_cell_size``.
    """

    def __init__(self, threshold: float, centroids, margin: float, max_cell_size: int):
        super().__init__()
        self._threshold = threshold
        self._centroids = centroids
        self._margin = margin
        self._max_cell_size = max_cell_size

    def expand(self, vectors):
        return (
            vectors
            | "AssignCells" >> AssignCells(self._centroids, self._margin)
            | "GroupByCell" >> beam.GroupByKey()
            | "PairsInCell"
            >> beam.ParDo(PairsInCellFn(self._threshold, self._max_cell_size, self._margin)).with_outputs(
                CELL_SIZES, main="pairs"
            )
        )
