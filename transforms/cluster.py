"""ClusterRecords: one cluster assignment per accepted record, from duplicate edges (connected components)."""

from __future__ import annotations

from collections.abc import Iterable

import apache_beam as beam
import numpy as np

from semsim_core.clustering import connected_components, hdbscan_edges, singleton
from semsim_core.records import ClusterAssignment, Record

CLUSTER_METHODS = ("components", "hdbscan")


def _assign(record: Record, components: dict[str, ClusterAssignment]) -> ClusterAssignment:
    return components.get(record.id) or singleton(record.id)


class ClusterRecords(beam.PTransform):
    """Takes ``{"records", "edges"}`` and returns one :class:`ClusterAssignment` per record.

    ``edges`` are ``(id, id)`` links. The components are computed on one worker from the edges alone (only records
    with a duplicate take memory there); every other record is its own cluster of size 1.
    """

    def expand(self, inputs):
        components = (
            inputs["edges"] | "AllEdges" >> beam.combiners.ToList() | "Components" >> beam.Map(connected_components)
        )
        return inputs["records"] | "Assign" >> beam.Map(_assign, beam.pvalue.AsSingleton(components))


class HdbscanEdges(beam.PTransform):
    """Clusters all ``(id, vector)`` with HDBSCAN on PCA-reduced vectors and returns edges joining each cluster."""

    def __init__(self, pca_dims: int = 32, min_cluster_size: int = 2):
        super().__init__()
        self._pca_dims = pca_dims
        self._min_cluster_size = min_cluster_size

    def _edges(self, members: Iterable[tuple[str, np.ndarray]]) -> list[tuple[str, str]]:
        members = sorted(members, key=lambda m: m[0])
        if not members:
            return []
        ids = [record_id for record_id, _ in members]
        return hdbscan_edges(ids, np.stack([v for _, v in members]), self._pca_dims, self._min_cluster_size)

    def expand(self, vectors):
        return vectors | "AllVectors" >> beam.combiners.ToList() | "Hdbscan" >> beam.FlatMap(self._edges)
