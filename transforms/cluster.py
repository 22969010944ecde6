"""ClusterRecords: one cluster assignment per accepted record, from duplicate edges, computed without gathering the
edges on one worker; SplitByHdbscan: the HDBSCAN option, which splits those clusters along their pairs."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import apache_beam as beam

from semsim_core.clustering import UnionFind, hdbscan_split, large_star, singleton, small_star
from semsim_core.keep import FIRST_ID, KeepKey, keep_key
from semsim_core.progress import ProgressSpec
from semsim_core.records import ClusterAssignment, Pair

CLUSTER_METHODS = ("components", "hdbscan")
SINGLETONS = "singletons"
# Large-star / small-star rounds before the exact merge. On the STSb test sentences at cosine 0.5 (7,218 edges, one
# component of 1,178 records) the edges left disagreeing after rounds 1-6 were 2,670, 1,748, 252, 17, 0, 0; at 0.6
# (3,215 edges) 913, 274, 78, 34, 0, 0. Each round is two shuffles of every edge (and two runner stages).
DEFAULT_ROUNDS = 4


def _both_directions(edge: tuple[str, str]) -> Iterator[tuple[str, str]]:
    yield edge
    yield edge[1], edge[0]


def _larger_first(edge: tuple[str, str]) -> tuple[str, str]:
    return (edge[0], edge[1]) if edge[0] > edge[1] else (edge[1], edge[0])


def _label(node: str, neighbours: Iterable[str]) -> tuple[str, str]:
    return node, min(min(neighbours), node)


def _label_pairs(element: tuple[str, dict[str, list]]) -> Iterator[tuple[str, tuple[str, str]]]:
    """Join step: for each original edge (a, b) keyed by a, pass a's label on to b."""
    _, joined = element
    for label in joined["label"]:
        for other in joined["edge"]:
            yield other, label


def _disagreements(element: tuple[str, dict[str, list]]) -> Iterator[tuple[str, str]]:
    _, joined = element
    for label in joined["label"]:
        for other_label in joined["other_label"]:
            if other_label != label:
                yield label, other_label


def _merge_labels(disagreements: list[tuple[str, str]]) -> dict[str, str]:
    """Labels that the rounds left apart but an edge joins: map each to the smallest label of its group."""
    sets = UnionFind()
    for a, b in disagreements:
        sets.union(a, b)
    return {label: sets.find(label) for label in sets.items() if sets.find(label) != label}


def _relabel(labelled: tuple[str, str], merged: dict[str, str]) -> tuple[str, str]:
    node, label = labelled
    return node, merged.get(label, label)


def keyed_member(record, keep: str) -> tuple[str, KeepKey]:
    """``(id, keep key)`` of a :class:`Record` (or, keeping first ids, of an embedded record, which has no text)."""
    text = getattr(record, "text", None)
    return record.id, keep_key(keep, record.id, None if text is None else len(text), getattr(record, "time", None))


def _by_label(element: tuple[str, dict[str, list]]) -> Iterator:
    """A record on an edge as ``(label, (id, keep key))``; a record on none as its own cluster (``singletons``),
    which needs no grouping."""
    record_id, joined = element
    for key in joined["key"]:
        label = next(iter(joined["label"]), None)
        if label is None:
            yield beam.pvalue.TaggedOutput(SINGLETONS, singleton(record_id))
        else:
            yield label, (record_id, key)


def _assign(label: str, members: Iterable[tuple[str, KeepKey]]) -> Iterator[ClusterAssignment]:
    members = list(members)
    kept = min(members, key=lambda member: member[1])[0]
    for record_id, _ in members:
        yield ClusterAssignment(record_id, kept, record_id == kept, len(members))


class LargeStarFn(beam.DoFn):
    """The large-star step of clustering round ``round`` (from 1) of ``rounds``; with ``progress``, a bundle's start
    marks that round as under way (``clustering round``)."""

    def __init__(self, round: int, rounds: int, progress: ProgressSpec | None):
        self._round = round
        self._rounds = rounds
        self._progress_spec = progress

    def setup(self) -> None:
        self._progress = self._progress_spec.open() if self._progress_spec else None

    def start_bundle(self) -> None:
        if self._progress is not None:
            self._progress.reach("clustering round", self._round, self._rounds)

    def process(self, element: tuple[str, Iterable[str]]) -> Iterator[tuple[str, str]]:
        yield from large_star(*element)


class ConnectedComponents(beam.PTransform):
    """``(id, id)`` edges -> ``(id, label)`` for every id on an edge; the label is the smallest id of its component.

    Runs ``rounds`` alternating large-star / small-star rounds (Kiveris et al. 2014, O(log^2 n) rounds to converge),
    each two GroupByKeys, so no worker holds more than one node's neighbours. Edges whose endpoints still disagree
    afterwards (components the rounds did not finish) are merged exactly on one worker; they are few or none.
    ``progress``: each round reports when it starts.
    """

    def __init__(self, rounds: int = DEFAULT_ROUNDS, progress: ProgressSpec | None = None):
        super().__init__()
        self._rounds = rounds
        self._progress = progress

    def expand(self, edges):
        current = edges
        for r in range(self._rounds):
            current = (
                current
                | f"LargeStarOut{r}" >> beam.FlatMap(_both_directions)
                | f"LargeStarGroup{r}" >> beam.GroupByKey()
                | f"LargeStar{r}" >> beam.ParDo(LargeStarFn(r + 1, self._rounds, self._progress))
                | f"SmallStarOut{r}" >> beam.Map(_larger_first)
                | f"SmallStarGroup{r}" >> beam.GroupByKey()
                | f"SmallStar{r}" >> beam.FlatMapTuple(small_star)
            )
        labels = (
            current
            | "LabelOut" >> beam.FlatMap(_both_directions)
            | "LabelGroup" >> beam.GroupByKey()
            | "Label" >> beam.MapTuple(_label)
        )
        from_a = {"edge": edges, "label": labels} | "JoinA" >> beam.CoGroupByKey()
        passed = from_a | "PassLabel" >> beam.FlatMap(_label_pairs)
        merges = (
            {"other_label": passed, "label": labels}
            | "JoinB" >> beam.CoGroupByKey()
            | "Disagreements" >> beam.FlatMap(_disagreements)
            | "CollectDisagreements" >> beam.combiners.ToList()
            | "MergeLabels" >> beam.Map(_merge_labels)
        )
        return labels | "FinalLabel" >> beam.Map(_relabel, beam.pvalue.AsSingleton(merges))


class ClusterRecords(beam.PTransform):
    """Takes ``{"records", "edges"}`` and returns one :class:`ClusterAssignment` per record: connected components of
    the ``(id, id)`` edges, each represented by the record its ``keep`` policy keeps (:mod:`semsim_core.keep`),
    whose id is the ``cluster_id``; a record on no edge is its own cluster of size 1. ``progress``: the rounds
    report when they start."""

    def __init__(self, keep: str = FIRST_ID, rounds: int = DEFAULT_ROUNDS, progress: ProgressSpec | None = None):
        super().__init__()
        self._keep = keep
        self._rounds = rounds
        self._progress = progress

    def expand(self, inputs):
        labels = inputs["edges"] | "Components" >> ConnectedComponents(self._rounds, self._progress)
        keys = inputs["records"] | "KeepKeys" >> beam.Map(keyed_member, self._keep)
        members = (
            {"key": keys, "label": labels}
            | "JoinLabels" >> beam.CoGroupByKey()
            | "ByLabel" >> beam.FlatMap(_by_label).with_outputs(SINGLETONS, main="members")
        )
        clustered = members.members | "GroupClusters" >> beam.GroupByKey() | "Assign" >> beam.FlatMapTuple(_assign)
        return (clustered, members[SINGLETONS]) | "AllAssignments" >> beam.Flatten()


def _pairs_by_cluster(element: tuple[str, dict[str, list]]) -> Iterator[tuple[str, Pair]]:
    _, joined = element
    for cluster_id in joined["cluster"]:
        for pair in joined["pair"]:
            yield cluster_id, pair


def in_a_cluster(assignment: ClusterAssignment) -> bool:
    """Whether the record shares its cluster with another."""
    return assignment.cluster_size > 1


class PairsOfClusters(beam.PTransform):
    """Takes ``{"labels", "pairs"}`` (``(id, cluster_id)`` of every record that shares its cluster, :class:`Pair`) and
    returns ``(cluster_id, pair)`` for the pairs of every such cluster (joined on each pair's first id)."""

    def expand(self, inputs):
        pairs = inputs["pairs"] | "PairByFirstId" >> beam.Map(lambda p: (p.id_a, p))
        return (
            {"cluster": inputs["labels"], "pair": pairs}
            | "JoinPairClusters" >> beam.CoGroupByKey()
            | "PairByCluster" >> beam.FlatMap(_pairs_by_cluster)
        )


def _split(element: tuple[str, Iterable[Pair]], min_cluster_size: int) -> list[tuple[str, str]]:
    return hdbscan_split(sorted(element[1]), min_cluster_size)


def pair_edge(pair: Pair) -> tuple[str, str]:
    """The ``(id, id)`` edge of a pair, as :class:`ClusterRecords` takes it."""
    return pair.id_a, pair.id_b


class SplitByHdbscan(beam.PTransform):
    """Takes :class:`Pair` values and returns the edges that join the connected components of the pairs, each split
    along its HDBSCAN clusters (:func:`~semsim_core.clustering.hdbscan_split`) on the worker that holds the
    component's pairs."""

    def __init__(self, min_cluster_size: int = 2):
        super().__init__()
        self._min_cluster_size = min_cluster_size

    def expand(self, pairs):
        labels = pairs | "Edges" >> beam.Map(pair_edge) | "Components" >> ConnectedComponents()
        return (
            {"labels": labels, "pairs": pairs}
            | "PairsOfClusters" >> PairsOfClusters()
            | "GroupByCluster" >> beam.GroupByKey()
            | "Split" >> beam.FlatMap(_split, self._min_cluster_size)
        )
