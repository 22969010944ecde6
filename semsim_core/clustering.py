"""Grouping duplicates into clusters: connected components (union-find) and the HDBSCAN option."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from semsim_core.records import EXACT, ClusterAssignment, Pair

_EXACT_DISTANCE = 1e-6  # an exact pair's distance for HDBSCAN: a sparse graph takes a zero for no edge


class UnionFind:
    """Disjoint sets over string ids, with path halving; the root of each set is its smallest id."""

    def __init__(self) -> None:
        self._parent: dict[str, str] = {}

    def find(self, item: str) -> str:
        parent = self._parent.setdefault(item, item)
        while parent != item:
            grandparent = self._parent[parent]
            self._parent[item] = grandparent
            item, parent = grandparent, self._parent[grandparent]
        return item

    def union(self, a: str, b: str) -> None:
        root_a, root_b = self.find(a), self.find(b)
        if root_a != root_b:
            low, high = (root_a, root_b) if root_a < root_b else (root_b, root_a)
            self._parent[high] = low

    def items(self) -> Iterable[str]:
        return self._parent.keys()


def connected_components(edges: Iterable[tuple[str, str]]) -> dict[str, ClusterAssignment]:
    """Return the cluster of every id that appears in ``edges``.

    Clusters are the connected components of the graph (A~B and B~C put A, B, C together); each cluster's
    representative, and so its ``cluster_id``, is its smallest id, a choice that does not depend on edge order.
    """
    sets = UnionFind()
    for a, b in edges:
        sets.union(a, b)
    roots = {item: sets.find(item) for item in sets.items()}
    sizes: dict[str, int] = {}
    for root in roots.values():
        sizes[root] = sizes.get(root, 0) + 1
    return {item: ClusterAssignment(item, root, item == root, sizes[root]) for item, root in roots.items()}


def large_star(node: str, neighbours: Iterable[str]) -> Iterator[tuple[str, str]]:
    """Large-star step of Kiveris et al., "Connected Components in MapReduce and Beyond" (SoCC 2014): link every
    neighbour larger than ``node`` to the smallest of ``node`` and its neighbours."""
    neighbours = set(neighbours)
    neighbours.discard(node)
    smallest = min(neighbours, default=node)
    smallest = min(smallest, node)
    for other in neighbours:
        if other > node:
            yield other, smallest


def small_star(node: str, smaller_neighbours: Iterable[str]) -> Iterator[tuple[str, str]]:
    """Small-star step (same paper): link ``node`` and each of its smaller neighbours to the smallest of them."""
    group = set(smaller_neighbours) | {node}
    smallest = min(group)
    for other in group:
        if other != smallest:
            yield other, smallest


def singleton(record_id: str) -> ClusterAssignment:
    """The cluster of a record with no duplicate: itself, size 1."""
    return ClusterAssignment(record_id, record_id, True, 1)


def hdbscan_split(pairs: Sequence[Pair], min_cluster_size: int = 2, min_samples: int = 1) -> list[tuple[str, str]]:
    """Split one connected component of duplicate ``pairs`` along its HDBSCAN clusters; return the edges that keep
    each part together.

    HDBSCAN (leaf clusters) runs on the component's pair graph: each pair is a distance of ``1 - score`` (an exact
    pair almost 0), records without a pair are infinitely far apart. Where it finds two clusters or more, the edges are
    the pairs inside each cluster, every exact pair (copies stay together) and each noise record's best pair (highest
    score, then smaller id), so a part never holds records that no chain of pairs joins and every record keeps a
    duplicate of its own; elsewhere the component stays whole (all its pairs). Chains of pairs (A~B~C with A and C far
    apart) are what this splits, which connected components cannot.
    """
    edges = [(p.id_a, p.id_b) for p in pairs]
    ids = sorted({i for edge in edges for i in edge})
    if len(ids) < 2 * max(2, min_cluster_size):  # too few records for two clusters
        return edges
    import hdbscan
    from scipy.sparse import coo_matrix

    row = {record_id: i for i, record_id in enumerate(ids)}
    a = np.array([row[p.id_a] for p in pairs])
    b = np.array([row[p.id_b] for p in pairs])
    distance = np.maximum(1.0 - np.array([p.score for p in pairs], dtype=np.float64), _EXACT_DISTANCE)
    graph = coo_matrix((np.r_[distance, distance], (np.r_[a, b], np.r_[b, a])), shape=(len(ids), len(ids))).tocsr()
    labels = hdbscan.HDBSCAN(
        metric="precomputed",
        min_cluster_size=min_cluster_size,
        min_samples=min_samples,
        cluster_selection_method="leaf",
    ).fit_predict(graph)
    if len(set(labels) - {-1}) < 2:
        return edges
    label = dict(zip(ids, labels.tolist(), strict=True))
    kept = {(p.id_a, p.id_b) for p in pairs if p.kind == EXACT or label[p.id_a] == label[p.id_b] != -1}
    best: dict[str, tuple[float, str, tuple[str, str]]] = {}
    for p in pairs:
        for record, other in ((p.id_a, p.id_b), (p.id_b, p.id_a)):
            if label[record] == -1 and (-p.score, other) < best.get(record, (np.inf, ""))[:2]:
                best[record] = (-p.score, other, (p.id_a, p.id_b))
    kept |= {edge for _, _, edge in best.values()}
    return sorted(kept)
