"""Exact threshold search: every unordered pair of unit vectors whose cosine similarity reaches a threshold."""

from __future__ import annotations

from collections.abc import Sequence

import faiss
import numpy as np

from semsim_core.records import SEMANTIC, Pair, make_pair

DEFAULT_THRESHOLD = 0.80  # the cosine at which two texts are paraphrases unless told otherwise (--threshold)


def range_search_at_least(index: faiss.IndexFlatIP, queries: np.ndarray, threshold: float):
    """``index.range_search(queries, radius)`` with the radius one float below ``threshold``: FAISS keeps inner
    products strictly above the radius, so every stored vector with a product ``>= threshold`` is returned (callers
    drop the few in between). Returns FAISS's ``(lims, scores, rows)``."""
    radius = float(np.nextafter(np.float32(threshold), np.float32(-np.inf)))
    return index.range_search(queries, radius)


def threshold_pairs(ids: Sequence[str], vectors: np.ndarray, threshold: float, block_size: int = 1024) -> list[Pair]:
    """Return every pair ``(i, j)`` with ``cos(vectors[i], vectors[j]) >= threshold`` as ``semantic`` pairs.

    ``vectors`` must be L2-normalised float32 rows aligned with ``ids`` (distinct ids). The search is exact:
    ``faiss.IndexFlatIP.range_search`` of each block of ``block_size`` rows against the rows from that block on, so
    each pair is scored once (about half the products of searching every row against all) and one call's memory
    stays bounded. Blocks much under 1,024 rows leave FAISS's BLAS path and run slower.
    """
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n = len(ids)
    if vectors.shape[0] != n:
        raise ValueError(f"{n} ids but {vectors.shape[0]} vectors")
    pairs: list[Pair] = []
    for start in range(0, n - 1, block_size):
        index = faiss.IndexFlatIP(vectors.shape[1])
        index.add(vectors[start:])
        lims, scores, rows = range_search_at_least(index, vectors[start : start + block_size], threshold)
        queries = np.repeat(np.arange(start, start + len(lims) - 1), np.diff(lims).astype(np.int64))
        others = rows + start
        keep = (others > queries) & (scores >= np.float32(threshold))
        for q, d, s in zip(queries[keep], others[keep], scores[keep], strict=True):
            pairs.append(make_pair(ids[q], ids[d], min(float(s), 1.0), SEMANTIC))
    return pairs
