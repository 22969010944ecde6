"""Cells as Beam keys: train (or load) spherical k-means centroids and key every vector by each of its cells."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from typing import NamedTuple

import apache_beam as beam
import numpy as np

from semsim_core.cells import assign_cells, train_partition, tune_margin
from transforms.vector_blocks import SmallestIdHashes, VectorBlock
from transforms.vector_coder import CellMember

_LOG = logging.getLogger(__name__)
Member = tuple[str, np.ndarray, tuple[int, ...]]  # (id, unit vector, all cells of the vector)


class Partition(NamedTuple):
    """A run's cells: the ``(K, dim)`` float32 ``centroids``, and the ``margin`` within which a vector also joins a
    cell other than its nearest (:func:`~semsim_core.cells.assign_cells`)."""

    centroids: np.ndarray
    margin: float


class TrainCentroids(beam.PTransform):
    """Returns a one-element PCollection: the :class:`Partition` for :class:`VectorBlock` input.

    ``cells`` = 0 picks K = 1 (exact all-pairs) for an input of at most ``max_cell_size`` vectors, which a cell of
    that size costs anyway, else K = ceil(count / ``target_cell_size``). The training sample is the ``sample_size``
    vectors with the smallest id hashes, so reruns train the same centroids. Cells the sample predicts to exceed
    ``max_cell_size`` are split again (:func:`split_oversized`). Without a fixed ``margin``, the margin is tuned on the
    sample for ``target_recall`` of the pairs at ``threshold`` (:func:`tune_margin`). ``centroids`` given: only the
    margin is tuned (when not fixed).
    """

    def __init__(
        self,
        cells: int,
        target_cell_size: int,
        max_cell_size: int,
        sample_size: int,
        threshold: float,
        target_recall: float,
        margin: float | None = None,
        centroids: np.ndarray | None = None,
        seed: int = 0,
    ):
        super().__init__()
        self._cells = cells
        self._target = target_cell_size
        self._max = max_cell_size
        self._sample_size = sample_size
        self._threshold = threshold
        self._target_recall = target_recall
        self._margin = margin
        self._given = centroids
        self._seed = seed

    def _tuned(self, vectors: np.ndarray, centroids: np.ndarray) -> float:
        if self._margin is not None:
            return self._margin
        estimate = tune_margin(vectors, centroids, self._threshold, self._target_recall)
        _LOG.info(
            "cells: %d; margin %.4f, tuned for recall %.3f on %d sample pairs at %.2f",
            len(centroids), estimate.margin, self._target_recall, estimate.pairs, estimate.threshold,
        )  # fmt: skip
        return estimate.margin

    def _train(self, sample: VectorBlock, total: int) -> Partition:
        if not len(sample):  # nothing was embedded (every record a dead letter or an exact copy): no cells
            given = self._given if self._given is not None else np.zeros((0, 0), np.float32)
            return Partition(given, self._margin or 0.0)
        vectors = sample.vectors  # in id-hash order: tune_margin's first queries are spread over the input
        if self._given is not None:
            return Partition(self._given, self._tuned(vectors, self._given))
        k = self._cells or (1 if total <= self._max else math.ceil(total / self._target))
        return Partition(*train_partition(vectors, k, total, self._max, self._tuned, seed=self._seed))

    def expand(self, blocks):
        sample_and_total = beam.combiners.TupleCombineFn(SmallestIdHashes(self._sample_size), sum)
        return (
            blocks
            | "WithSizes" >> beam.Map(lambda block: (block, len(block)))
            | "SampleAndCount" >> beam.CombineGlobally(sample_and_total)  # one combine: one shuffle
            | "Train" >> beam.MapTuple(self._train)
        )


class AssignCellsFn(beam.DoFn):
    """Keys each vector of a :class:`VectorBlock` by every cell it belongs to: ``(cell, (id, vector, cells))``."""

    def __init__(self, margin: float):
        self._margin = margin

    def process(self, block: VectorBlock, centroids: np.ndarray) -> Iterator[tuple[int, Member]]:
        cells_of = assign_cells(block.vectors, centroids, self._margin)
        for (record_id, vector), cells in zip(block.id_vectors(), cells_of, strict=True):
            for cell in cells:
                yield cell, (record_id, vector, cells)


class AssignCells(beam.PTransform):
    """:class:`VectorBlock` values -> ``(cell, member)`` for each vector's cells (nearest, plus those within
    margin)."""

    def __init__(self, centroids, margin: float):
        super().__init__()
        self._centroids = centroids
        self._margin = margin

    def expand(self, blocks):
        assign = AssignCellsFn(self._margin)
        centroids = beam.pvalue.AsSingleton(self._centroids)
        return blocks | "Assign" >> beam.ParDo(assign, centroids).with_output_types(CellMember)
