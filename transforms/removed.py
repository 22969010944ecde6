"""ExplainRemovals: why each record that its cluster did not keep was removed (``removed/``)."""

from __future__ import annotations

from collections.abc import Iterator

import apache_beam as beam

from semsim_core.keep import Removal, removals
from transforms.cluster import PairsOfClusters, in_a_cluster


def _explain(element: tuple[str, dict[str, list]]) -> Iterator[Removal]:
    kept_id, joined = element
    yield from removals(kept_id, joined["member"], joined["pair"])


class ExplainRemovals(beam.PTransform):
    """Takes ``{"clusters", "pairs"}`` (:class:`ClusterAssignment`, :class:`Pair`) and returns one
    :class:`~semsim_core.keep.Removal` per record that is not its cluster's kept record: the widest chain of pairs
    to the kept record, found on the worker that holds the cluster's pairs (one cluster's pairs fit in memory)."""

    def expand(self, inputs):
        clustered = inputs["clusters"] | "InClusters" >> beam.Filter(in_a_cluster)
        removed = (
            clustered
            | "NotKept" >> beam.Filter(lambda c: not c.is_representative)
            | "MemberByCluster" >> beam.Map(lambda c: (c.cluster_id, c.id))
        )
        labels = clustered | "ClusterById" >> beam.Map(lambda c: (c.id, c.cluster_id))
        pairs_of_cluster = {"labels": labels, "pairs": inputs["pairs"]} | "PairsOfClusters" >> PairsOfClusters()
        return (
            {"member": removed, "pair": pairs_of_cluster}
            | "GroupClusters" >> beam.CoGroupByKey()
            | "Explain" >> beam.FlatMap(_explain)
        )
