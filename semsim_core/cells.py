"""k-means cells over unit vectors: train centroids, split oversized cells, assign vectors to cells with a margin,
and find threshold pairs inside a cell of bounded size.

A vector belongs to its nearest cell and to every other cell whose centroid similarity is within ``margin`` of the
nearest one (SemDeDup / NeMo Curator partition, plus multi-assignment so that pairs straddling a border are kept).
A pair found in several cells is reported by one of them only: the smallest cell the two vectors share.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import faiss
import numpy as np

from semsim_core.pairs import range_search_at_least, threshold_pairs
from semsim_core.records import Pair

DEFAULT_TARGET_RECALL = 0.995  # the share of the pairs the cells keep unless told otherwise (--target-recall)
MIN_POINTS_PER_CENTROID = 39  # FAISS warns below this many training points per centroid


def train_centroids(sample: np.ndarray, k: int, seed: int = 0, niter: int = 20) -> np.ndarray:
    """Train ``k`` spherical k-means centroids (unit float32 rows) on the unit vectors ``sample``.

    ``k`` is lowered to what the sample supports (at least one point per centroid).
    """
    sample = np.ascontiguousarray(sample, dtype=np.float32)
    k = max(1, min(k, len(sample)))
    if k == 1:
        centroid = sample.mean(axis=0, keepdims=True)
        return centroid / max(float(np.linalg.norm(centroid)), 1e-12)
    kmeans = faiss.Kmeans(sample.shape[1], k, niter=niter, seed=seed, spherical=True, max_points_per_centroid=1 << 20)
    kmeans.cp.min_points_per_centroid = 1
    kmeans.train(sample)
    return np.ascontiguousarray(kmeans.centroids, dtype=np.float32)


def split_oversized(
    sample: np.ndarray,
    centroids: np.ndarray,
    total: int,
    max_cell_size: int,
    margin: float,
    seed: int = 0,
    rounds: int = 4,
) -> np.ndarray:
    """Replace each cell that the sample says will hold more than ``max_cell_size`` of ``total`` vectors (counting
    the vectors it gets through the margin) by sub-centroids trained on the sample points nearest to it; repeat until
    no cell is estimated oversized or ``rounds`` are done.

    Dense regions of skewed data so get more, smaller cells instead of one huge cell on one worker.
    """
    scale = total / max(len(sample), 1)
    for _ in range(rounds):
        cells = assign_cells(sample, centroids, margin)
        counts = np.bincount([c for vector_cells in cells for c in vector_cells], minlength=len(centroids))
        oversized = np.flatnonzero(counts * scale > max_cell_size)
        if len(oversized) == 0:
            break
        nearest = np.array([vector_cells[0] for vector_cells in cells])
        parts = [centroids[np.setdiff1d(np.arange(len(centroids)), oversized)]]
        for cell in oversized:
            members = sample[nearest == cell]
            parts.append(train_centroids(members, math.ceil(2 * counts[cell] * scale / max_cell_size), seed=seed))
        centroids = np.ascontiguousarray(np.vstack(parts), dtype=np.float32)
    return centroids


def nearest_cell(vectors: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index of the most similar centroid for each vector."""
    return np.argmax(np.asarray(vectors, np.float32) @ centroids.T, axis=1)


def assign_cells(
    vectors: np.ndarray, centroids: np.ndarray, margin: float, max_cells: int = 8
) -> list[tuple[int, ...]]:
    """The cells of each vector: its nearest cell first, then every cell whose centroid similarity is within
    ``margin`` of the nearest, most similar first, at most ``max_cells`` in all."""
    sims = np.asarray(vectors, np.float32) @ centroids.T
    order = np.argsort(-sims, axis=1, kind="stable")[:, :max_cells]
    best = sims[np.arange(len(sims)), order[:, 0]]
    cells = []
    for row, ranked in enumerate(order):
        close = sims[row, ranked] >= best[row] - margin
        cells.append(tuple(int(c) for c in ranked[close]))
    return cells


def rows_by_cell(cells_of: Sequence[Sequence[int]]) -> dict[int, list[int]]:
    """Each cell's member rows, in row order, from the cells of each row (:func:`assign_cells`)."""
    members: dict[int, list[int]] = {}
    for row, cells in enumerate(cells_of):
        for cell in cells:
            members.setdefault(cell, []).append(row)
    return members


class MarginEstimate(NamedTuple):
    """A margin tuned on a sample (:func:`tune_margin`): the ``margin``, the ``threshold`` its sample pairs were
    taken at, and how many sample vectors had such a pair (``pairs``; each gives one)."""

    margin: float
    threshold: float
    pairs: int


MIN_ESTIMATE_PAIRS = 300  # sample vectors with a pair needed to trust a quantile near 0.995; else the threshold drops
SPARSE_MARGIN = 0.1  # the least margin when the sample has too few pairs to tune on (semsim's fixed margin before)
ESTIMATE_QUERIES = 10_000  # sample vectors searched against the sample: ~1.4 s at 50,000 x 384 on 2 cores


def margins_needed(vectors: np.ndarray, centroids: np.ndarray, pairs: np.ndarray, max_cells: int = 8) -> np.ndarray:
    """For each row ``(a, b)`` of ``pairs``, the smallest margin at which vectors ``a`` and ``b`` share a cell
    (:func:`assign_cells`: a vector is in each of its ``max_cells`` most similar cells whose similarity is within the
    margin of its nearest); ``inf`` when no margin makes them share one."""
    sims = np.asarray(vectors, np.float32) @ centroids.T
    gaps = sims.max(axis=1, keepdims=True) - sims
    if centroids.shape[0] > max_cells:
        beyond = np.argsort(-sims, axis=1, kind="stable")[:, max_cells:]
        np.put_along_axis(gaps, beyond, np.inf, axis=1)
    return np.maximum(gaps[pairs[:, 0]], gaps[pairs[:, 1]]).min(axis=1)


def tune_margin(
    sample: np.ndarray,
    centroids: np.ndarray,
    threshold: float,
    target_recall: float,
    queries: int = ESTIMATE_QUERIES,
    min_pairs: int = MIN_ESTIMATE_PAIRS,
) -> MarginEstimate:
    """The smallest margin at which the cells keep ``target_recall`` of the pairs at ``threshold``, estimated on the
    unit vectors ``sample``.

    The first ``queries`` sample vectors are searched against the whole sample. Each that has a neighbour at or above
    the threshold (exact copies left out: the exact pre-pass finds them) gives one pair: its *least* similar such
    neighbour, the pair that needs the widest margin. One pair per vector keeps a group of near-copies from
    outvoting the rest, and the hardest one errs on the side of recall. The margin is the ``target_recall`` quantile
    of what those pairs need (:func:`margins_needed`). With fewer than ``min_pairs`` such vectors the threshold
    drops in steps of 0.02 (pairs further apart need wider margins: again on the side of recall), at most by 0.1;
    still fewer, and the margin is at least :data:`SPARSE_MARGIN`. One cell needs no margin."""
    if len(centroids) <= 1:
        return MarginEstimate(0.0, threshold, 0)
    sample = np.ascontiguousarray(sample, dtype=np.float32)
    steps = [threshold - 0.02 * step for step in range(6)]
    partner = np.full((len(steps), min(queries, len(sample))), -1)  # per threshold, each query's least similar
    index = faiss.IndexFlatIP(sample.shape[1])
    index.add(sample)
    for start in range(0, partner.shape[1], 2_000):  # a bounded share of the neighbours at a time
        lims, scores, cols = range_search_at_least(index, sample[start : start + 2_000], steps[-1])
        rows = np.repeat(np.arange(start, start + len(lims) - 1), np.diff(lims).astype(np.int64))
        keep = (cols != rows) & (scores >= np.float32(steps[-1])) & (scores < 1 - 1e-4)  # not itself, no exact copy
        rows, cols, scores = rows[keep], cols[keep], scores[keep]
        for i, at in enumerate(steps):
            above = scores >= at
            order = np.lexsort((scores[above], rows[above]))  # by row, least similar first
            first = np.unique(rows[above][order], return_index=True)
            partner[i, first[0]] = cols[above][order][first[1]]
    i = next((i for i in range(len(steps)) if (partner[i] >= 0).sum() >= min_pairs), len(steps) - 1)
    at = steps[i]
    rows = np.flatnonzero(partner[i] >= 0)
    margin = 0.0
    if len(rows):
        needed = np.sort(margins_needed(sample, centroids, np.stack([rows, partner[i, rows]], axis=1)))
        quantile = float(needed[min(len(needed), math.ceil(target_recall * len(needed))) - 1])
        margin = min(quantile, 2.0)  # 2.0: every cell among a vector's top ones
    if len(rows) < min_pairs:  # too few to tell a quantile near the target: never narrower than the old fixed margin
        margin = max(margin, SPARSE_MARGIN)
    return MarginEstimate(round(margin + 1e-6, 6), at, len(rows))


def train_partition(
    sample: np.ndarray,
    k: int,
    total: int,
    max_cell_size: int,
    margin_for: Callable[[np.ndarray, np.ndarray], float],
    seed: int = 0,
) -> tuple[np.ndarray, float]:
    """``(centroids, margin)`` for ``total`` vectors from their unit ``sample``: ``k`` k-means centroids, the cells
    the sample predicts over ``max_cell_size`` split again (:func:`split_oversized`), and the margin
    ``margin_for(sample, centroids)`` gives (e.g. :func:`tune_margin`'s), asked again for the split centroids."""
    centroids = train_centroids(sample, k, seed=seed)
    margin = margin_for(sample, centroids)
    split = split_oversized(sample, centroids, total, max_cell_size, margin, seed=seed)
    return split, (margin_for(sample, split) if len(split) != len(centroids) else margin)


def bounded_cell_pairs(
    ids: Sequence[str],
    vectors: np.ndarray,
    threshold: float,
    max_cell_size: int,
    target_recall: float,
    seed: int = 0,
) -> list[Pair]:
    """Threshold pairs among one cell's members. A cell over ``max_cell_size`` is split by k-means into sub-cells
    that are searched one by one, so no exact search ever runs on more than the bound (unless k-means cannot split
    a group, e.g. identical vectors). The sub-cells get their own margin, tuned on the cell's vectors for
    ``target_recall`` of its pairs at ``threshold`` (:func:`tune_margin`): the cell's own margin says nothing of
    the borders between its sub-cells."""
    if len(ids) <= max_cell_size:
        return threshold_pairs(ids, vectors, threshold)
    parts = math.ceil(2 * len(ids) / max_cell_size)
    centroids = train_centroids(vectors, parts, seed=seed)
    spread = np.random.default_rng(seed).permutation(len(ids))  # tune_margin's first queries: from the whole cell
    margin = tune_margin(vectors[spread], centroids, threshold, target_recall).margin
    members = rows_by_cell(assign_cells(vectors, centroids, margin))
    if max(len(rows) for rows in members.values()) >= len(ids):
        return threshold_pairs(ids, vectors, threshold)
    pairs: dict[tuple[str, str], Pair] = {}  # a pair found in two sub-cells is kept once
    for rows in members.values():
        sub_ids = [ids[r] for r in rows]
        for pair in bounded_cell_pairs(sub_ids, vectors[rows], threshold, max_cell_size, target_recall, seed + 1):
            pairs.setdefault((pair.id_a, pair.id_b), pair)
    return list(pairs.values())


def owning_cell(cells_a: Sequence[int], cells_b: Sequence[int]) -> int | None:
    """The one cell that reports a pair: the smallest cell both vectors belong to (None if they share none)."""
    shared = set(cells_a).intersection(cells_b)
    return min(shared) if shared else None
