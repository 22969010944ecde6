"""Cells as Beam keys: train (or load) spherical k-means centroids and key every vector by each of its cells."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Sequence

import apache_beam as beam
import numpy as np

from semsim_core.cells import assign_cells, split_oversized, train_centroids
from transforms.vector_coder import CellMember

Member = tuple[str, np.ndarray, tuple[int, ...]]  # (id, unit vector, all cells of the vector)


def id_hash(item: tuple[str, np.ndarray]) -> int:
    """A stable 64-bit hash of an ``(id, vector)`` item's id: samples taken by smallest hash are the same every run."""
    return int.from_bytes(hashlib.blake2b(item[0].encode("utf-8"), digest_size=8).digest(), "big")


class TrainCentroids(beam.PTransform):
    """Returns a one-element PCollection: the ``(K, dim)`` float32 centroids for ``(id, vector)`` input.

    ``cells`` = 0 picks K = ceil(count / ``target_cell_size``); K = 1 (small inputs) is exact all-pairs. The training
    sample is the ``sample_size`` vectors with the smallest id hashes, so reruns train the same centroids. Cells the
    sample predicts to exceed ``max_cell_size`` are split again (:func:`split_oversized`).
    """

    def __init__(
        self, cells: int, target_cell_size: int, max_cell_size: int, margin: float, sample_size: int, seed: int = 0
    ):
        super().__init__()
        self._cells = cells
        self._margin = margin
        self._target = target_cell_size
        self._max = max_cell_size
        self._sample_size = sample_size
        self._seed = seed

    def _train(self, sample: list[tuple[str, np.ndarray]], total: int) -> np.ndarray:
        vectors = np.stack([v for _, v in sorted(sample, key=lambda item: item[0])])
        k = self._cells or math.ceil(total / self._target)
        centroids = train_centroids(vectors, k, seed=self._seed)
        return split_oversized(vectors, centroids, total, self._max, self._margin, seed=self._seed)

    def expand(self, vectors):
        total = vectors | "Count" >> beam.combiners.Count.Globally()
        return (
            vectors
            | "Sample" >> beam.combiners.Top.Smallest(self._sample_size, key=id_hash)
            | "Train" >> beam.Map(self._train, beam.pvalue.AsSingleton(total))
        )


class AssignCellsFn(beam.DoFn):
    """Keys each vector of a batch by every cell it belongs to: ``(cell, (id, vector, cells))``."""

    def __init__(self, margin: float):
        self._margin = margin

    def process(self, batch: Sequence[tuple[str, np.ndarray]], centroids: np.ndarray) -> Iterator[tuple[int, Member]]:
        vectors = np.stack([v for _, v in batch])
        for (record_id, vector), cells in zip(batch, assign_cells(vectors, centroids, self._margin), strict=True):
            for cell in cells:
                yield cell, (record_id, vector, cells)


class AssignCells(beam.PTransform):
    """``(id, vector)`` -> ``(cell, member)`` for each of the vector's cells (nearest, plus those within margin)."""

    def __init__(self, centroids, margin: float):
        super().__init__()
        self._centroids = centroids
        self._margin = margin

    def expand(self, vectors):
        return (
            vectors
            | "Batch" >> beam.BatchElements(min_batch_size=256, max_batch_size=1024)
            | "Assign"
            >> beam.ParDo(AssignCellsFn(self._margin), beam.pvalue.AsSingleton(self._centroids)).with_output_types(
                CellMember
            )
        )
