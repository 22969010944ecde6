"""k-means cells over unit vectors: train centroids, split oversized cells, assign vectors to cells with a margin,
and find threshold pairs inside a cell of bounded size.

A vector belongs to its nearest cell and to every other cell whose centroid similarity is within ``margin`` of the
nearest one (SemDeDup / NeMo Curator partition, plus multi-assignment so that pairs straddling a border are kept).
A pair found in several cells is reported by one of them only: the smallest cell the two vectors share.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import faiss
import numpy as np

from semsim_core.pairs import threshold_pairs
from semsim_core.records import Pair

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


def bounded_cell_pairs(
    ids: Sequence[str], vectors: np.ndarray, threshold: float, max_cell_size: int, margin: float, seed: int = 0
) -> list[Pair]:
    """Threshold pairs among one cell's members; a cell over ``max_cell_size`` is split by k-means (with the same
    margin) into sub-cells that are searched one by one, so no exact search ever runs on more than the bound
    (unless k-means cannot split a group, e.g. identical vectors)."""
    if len(ids) <= max_cell_size:
        return threshold_pairs(ids, vectors, threshold)
    parts = math.ceil(2 * len(ids) / max_cell_size)
    centroids = train_centroids(vectors, parts, seed=seed)
    members: dict[int, list[int]] = {}
    for row, cells in enumerate(assign_cells(vectors, centroids, margin)):
        for cell in cells:
            members.setdefault(cell, []).append(row)
    if max(len(rows) for rows in members.values()) >= len(ids):
        return threshold_pairs(ids, vectors, threshold)
    pairs: dict[tuple[str, str], Pair] = {}  # a pair found in two sub-cells is kept once
    for rows in members.values():
        sub_ids = [ids[r] for r in rows]
        for pair in bounded_cell_pairs(sub_ids, vectors[rows], threshold, max_cell_size, margin, seed + 1):
            pairs.setdefault((pair.id_a, pair.id_b), pair)
    return list(pairs.values())


def owning_cell(cells_a: Sequence[int], cells_b: Sequence[int]) -> int | None:
    """The one cell that reports a pair: the smallest cell both vectors belong to (None if they share none)."""
    shared = set(cells_a).intersection(cells_b)
    return min(shared) if shared else None
