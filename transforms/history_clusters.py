"""ClusterWithHistory: new records join the clusters of a history store, whose ids stay stable.

The graph's nodes are the new records and the stored clusters (a stored cluster is one node, whatever its size):
``(NEW, id)`` and ``(STORED, cluster id)``. Its components are labelled by their smallest node, and STORED sorts
first, so a component keeps the smallest stored cluster id it holds; other stored clusters in it are merged into
that one and their records are listed as cluster changes. A component of new records only takes its kept record's
id, as in a run without history. The kept record (``is_representative``) is the component's smallest keep key
(:mod:`semsim_core.keep`) over its new records and every stored record of its stored clusters, so under ``earliest``
it is the earliest across days, whichever run saw it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import apache_beam as beam

from semsim_core.clustering import singleton
from semsim_core.history import Manifest
from semsim_core.keep import FIRST_ID, KeepKey, removals
from semsim_core.progress import ProgressSpec
from semsim_core.records import ClusterAssignment, ClusterChange, Pair
from transforms.cluster import ConnectedComponents, keyed_member
from transforms.history_read import FindStored, SummarizeStored

STORED, NEW = 0, 1
MERGES = "merges"  # (stored cluster id, the stored cluster id it was merged into)
STORED_PAIRS = "stored_pairs"  # the kind of each pair with a stored record
REMOVED = "removed"  # a Removal per new record its cluster does not keep
DEMOTED = "demoted"  # a Removal per stored record that its cluster kept until this run
_ENDS = "ends"


def _ends(pair: Pair) -> Iterator[tuple[str, Pair]]:
    yield pair.id_a, pair
    yield pair.id_b, pair


def _node_of_end(element: tuple[str, dict[str, Iterable]]) -> Iterator:
    """Each end of a pair as ``(pair key, node)``, and as ``(node, (record id, pair))`` for the removals."""
    record_id, joined = element
    cluster = next(iter(joined["stored"]), None)
    node = (NEW, record_id) if cluster is None else (STORED, cluster)
    for pair in joined["end"]:
        if cluster is not None:
            yield beam.pvalue.TaggedOutput(STORED_PAIRS, pair.kind)
        yield beam.pvalue.TaggedOutput(_ENDS, (node, (record_id, pair)))
        yield (pair.id_a, pair.id_b, pair.kind), node


def _edge(element: tuple[tuple, Iterable[tuple[int, str]]]) -> Iterator[tuple[tuple[int, str], tuple[int, str]]]:
    _, nodes = element
    a, b = sorted(set(nodes))
    yield a, b


def _weighted(element: tuple[tuple[int, str], dict[str, Iterable]]) -> Iterator:
    """A labelled node as ``(label, (node, records it stands for, keep key of the record it would keep, its pair
    ends))``."""
    node, joined = element
    for label in joined["label"]:  # a labelled node is on a pair: a record of this run, or a stored cluster
        count, key = next(iter(joined["stored"])) if node[0] == STORED else (1, next(iter(joined["key"])))
        yield label, (node, count, key, list(joined["ends"]))


def _assign(element: tuple[tuple[int, str], Iterable[tuple[tuple[int, str], int, KeepKey, list]]]) -> Iterator:
    """A component's assignments: its kept record is the one with the smallest keep key, stored or new; its
    ``cluster_id`` is its smallest stored cluster id (stable across runs), else the kept record's id. Also its
    removals: each new record it does not keep, and each stored cluster's kept record it keeps no longer (a
    demotion: an earlier run's ``deduplicated/`` holds it), each with its chain to the kept record."""
    label, members = element
    members = list(members)
    size = sum(weight for _, weight, _, _ in members)
    kept_id = min(key for _, _, key, _ in members)[-1]
    cluster_id = label[1] if label[0] == STORED else kept_id
    for (kind, name), _, _, _ in members:
        if kind == NEW:
            yield name, ClusterAssignment(name, cluster_id, name == kept_id, size)
        elif name != cluster_id:
            yield beam.pvalue.TaggedOutput(MERGES, (name, cluster_id))
    stored_kept = {key[-1] for (kind, _), _, key, _ in members if kind == STORED}
    pairs, links = set(), set()
    for (kind, _), _, key, ends in members:
        for record_id, pair in ends:
            pairs.add(pair)
            if kind == STORED and record_id != key[-1]:
                links.add((record_id, key[-1]))
    new_ids = [name for (kind, name), _, _, _ in members if kind == NEW]
    for removal in removals(kept_id, [*new_ids, *stored_kept], pairs, links):
        yield beam.pvalue.TaggedOutput(DEMOTED if removal.id in stored_kept else REMOVED, removal)


def _assign_or_singleton(element: tuple[str, dict[str, list]]) -> Iterator[ClusterAssignment]:
    record_id, joined = element
    if joined["record"]:
        yield next(iter(joined["cluster"]), None) or singleton(record_id)


def _changes(stored, merges: dict[str, str]) -> Iterator[ClusterChange]:
    if stored.cluster_id in merges:
        yield ClusterChange(stored.id, merges[stored.cluster_id], stored.cluster_id)


class ClusterWithHistory(beam.PTransform):
    """``{"records": new Records, "pairs": every pair of the run}`` -> ``clusters`` (one :class:`ClusterAssignment`
    per new record; sizes count the stored members), ``changes`` (a :class:`ClusterChange` per stored record whose
    cluster was merged into another), ``merges`` (``(from, to)`` stored cluster ids) and ``stored_pairs`` (the kind
    of each pair that has a stored record), ``removed`` and ``demoted`` (:class:`~semsim_core.keep.Removal`: a new
    record not kept; a stored record kept until this run). The store is read by lookup (:class:`FindStored`): the
    clusters of the stored records on pairs, the sizes and kept records of those clusters, and the members of merged
    ones. A removal's chain passes through a stored cluster by a link to its kept record (the store has no pairs).
    ``progress``: the clustering rounds report when they start."""

    def __init__(
        self, root: str, manifest: Manifest | None, keep: str = FIRST_ID, progress: ProgressSpec | None = None
    ):
        super().__init__()
        self._root = root
        self._manifest = manifest
        self._keep = keep
        self._progress = progress

    def expand(self, inputs):
        pairs = inputs["pairs"]
        ends = pairs | "Ends" >> beam.FlatMap(_ends)
        end_ids = pairs | "EndIds" >> beam.FlatMap(lambda p: (p.id_a, p.id_b))
        stored = end_ids | "FindEnds" >> FindStored(self._root, self._manifest, "id")
        stored_clusters = stored | "StoredCluster" >> beam.Map(lambda s: (s.id, s.cluster_id))
        nodes = (
            {"end": ends, "stored": stored_clusters}
            | "JoinEnds" >> beam.CoGroupByKey()
            | "NodeOfEnd" >> beam.FlatMap(_node_of_end).with_outputs(STORED_PAIRS, _ENDS, main="nodes")
        )
        edges = nodes.nodes | "GroupEnds" >> beam.GroupByKey() | "Edges" >> beam.FlatMap(_edge)
        labels = edges | "Components" >> ConnectedComponents(progress=self._progress)
        touched = stored_clusters | "TouchedClusters" >> beam.Values()
        stored_summaries = (
            touched
            | "SummarizeStored" >> SummarizeStored(self._root, self._manifest, self._keep)
            | "StoredNode" >> beam.MapTuple(lambda cluster, summary: ((STORED, cluster), summary))
        )
        keys = inputs["records"] | "NewNode" >> beam.Map(lambda r: ((NEW, r.id), keyed_member(r, self._keep)[1]))
        assigned = (
            {"label": labels, "stored": stored_summaries, "key": keys, "ends": nodes[_ENDS]}
            | "JoinSummaries" >> beam.CoGroupByKey()
            | "Weighted" >> beam.FlatMap(_weighted)
            | "GroupByLabel" >> beam.GroupByKey()
            | "Assign" >> beam.FlatMap(_assign).with_outputs(MERGES, REMOVED, DEMOTED, main="assigned")
        )
        records = inputs["records"] | "ById" >> beam.Map(lambda r: (r.id, None))
        clusters = (
            {"record": records, "cluster": assigned.assigned}
            | "JoinRecords" >> beam.CoGroupByKey()
            | "AssignOrSingleton" >> beam.FlatMap(_assign_or_singleton)
        )
        merges = assigned[MERGES]
        merged = merges | "MergedClusters" >> beam.Keys()
        members = merged | "FindMerged" >> FindStored(self._root, self._manifest, "cluster_id")
        changes = members | "Changes" >> beam.FlatMap(_changes, beam.pvalue.AsDict(merges))
        return {
            "clusters": clusters,
            "changes": changes,
            MERGES: merges,
            STORED_PAIRS: nodes[STORED_PAIRS],
            REMOVED: assigned[REMOVED],
            DEMOTED: assigned[DEMOTED],
        }
