"""Grouping duplicates into clusters: connected components (union-find) and the HDBSCAN option."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

from semsim_core.records import ClusterAssignment


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


def hdbscan_edges(
    ids: list[str], vectors: np.ndarray, pca_dims: int = 32, min_cluster_size: int = 2, min_samples: int = 1
) -> list[tuple[str, str]]:
    """Cluster unit vectors with HDBSCAN after PCA to ``pca_dims`` and return edges that join each cluster's members.

    Noise points get no edge, so they stay singletons. The edges feed :func:`connected_components` together with the
    exact-duplicate pairs. HDBSCAN on PCA-reduced vectors took 6 s where raw 384-d embeddings took 207 s (20k points on
    2 cores).
    """
    if len(ids) < max(2, min_cluster_size):
        return []
    import hdbscan
    from sklearn.decomposition import PCA

    dims = min(pca_dims, vectors.shape[1], len(ids))
    reduced = PCA(n_components=dims, random_state=0).fit_transform(vectors) if dims < vectors.shape[1] else vectors
    labels = hdbscan.HDBSCAN(
        min_cluster_size=min_cluster_size, min_samples=min_samples, cluster_selection_method="leaf"
    ).fit_predict(reduced.astype(np.float64))
    first: dict[int, str] = {}
    edges = []
    for record_id, label in zip(ids, labels, strict=True):
        if label < 0:
            continue
        if label in first:
            edges.append((first[label], record_id))
        else:
            first[label] = record_id
    return edges
