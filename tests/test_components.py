"""Connected components in Beam (large-star / small-star rounds plus an exact merge) against union-find."""

from __future__ import annotations

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.util import assert_that, equal_to

from semsim_core.clustering import connected_components, large_star, singleton, small_star
from semsim_core.pairs import threshold_pairs
from semsim_core.records import ClusterAssignment, Record
from tests.conftest import stsb_unique_sentences
from transforms.cluster import ClusterRecords


def test_star_steps():
    assert sorted(large_star("c", ["a", "d", "e", "c"])) == [("d", "a"), ("e", "a")]
    assert sorted(large_star("a", ["b", "c"])) == [("b", "a"), ("c", "a")]
    assert sorted(small_star("d", ["b", "c"])) == [("c", "b"), ("d", "b")]
    assert list(small_star("a", [])) == []


def assert_clusters(ids: list[str], edges: list[tuple[str, str]], rounds: int, expected: list) -> None:
    with beam.Pipeline("FnApiRunner", options=PipelineOptions([])) as p:
        records = p | "Records" >> beam.Create([Record(i, "text", "test", n) for n, i in enumerate(ids)])
        edge_pcoll = p | "Edges" >> beam.Create(edges)
        clusters = {"records": records, "edges": edge_pcoll} | ClusterRecords(rounds=rounds)
        assert_that(clusters, equal_to(expected))


@pytest.fixture(scope="module")
def stsb_graph(embedder):
    sentences = stsb_unique_sentences()[:1500]
    ids = [f"s{i:05d}" for i in range(len(sentences))]
    pairs = threshold_pairs(ids, embedder.encode(sentences), 0.55)
    return ids, [(p.id_b, p.id_a) for p in pairs]


@pytest.mark.parametrize("rounds", [0, 1, 6])
def test_components_equal_union_find_on_real_pairs(stsb_graph, rounds):
    ids, edges = stsb_graph
    components = connected_components(edges)
    assert max(c.cluster_size for c in components.values()) > 20, "a large component, so the rounds matter"
    assert_clusters(ids, edges, rounds, [components.get(i) or singleton(i) for i in ids])


def test_long_chain_left_unfinished_by_the_rounds_is_merged_exactly():
    ids = [f"n{i:04d}" for i in range(400)]
    chain = [(ids[i + 1], ids[i]) for i in range(0, 399, 2)] + [(ids[i], ids[i + 1]) for i in range(1, 399, 2)]
    expected = [ClusterAssignment(i, "n0000", i == "n0000", 400) for i in ids] + [singleton("lonely")]
    assert_clusters(ids + ["lonely"], chain, 1, expected)
