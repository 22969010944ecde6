"""MeasureRecall: how many of the true threshold pairs of a sample of queries the cell-based search found."""

from __future__ import annotations

from collections.abc import Iterator

import apache_beam as beam
import numpy as np

from semsim_core.records import Pair
from transforms.vector_blocks import SmallestIdHashes, VectorBlock
from transforms.write import SumByKey


def _true_pairs(block: VectorBlock, queries: VectorBlock, threshold: float) -> Iterator[tuple[tuple[str, str], str]]:
    """Exact pairs between a block of vectors and the queries (brute force), each pair once."""
    query_ids = queries.ids
    sims = block.vectors @ queries.vectors.T
    query_set = set(query_ids)
    for row, col in zip(*np.nonzero(sims >= np.float32(threshold)), strict=True):
        record_id, query_id = block.ids[row], query_ids[col]
        if record_id != query_id and (record_id not in query_set or record_id > query_id):
            yield (min(record_id, query_id), max(record_id, query_id)), "truth"


def _touches_queries(pair: Pair, query_ids: set[str]) -> Iterator[tuple[tuple[str, str], str]]:
    if pair.id_a in query_ids or pair.id_b in query_ids:
        yield (pair.id_a, pair.id_b), "found"


def _outcome(tags: set[str]) -> str:
    if "truth" in tags:
        return "found" if "found" in tags else "missed"
    return "not_in_truth"  # reported by the pipeline, below the threshold by brute force (float rounding at the edge)


def _recall(counts: dict[str, int], queries: VectorBlock) -> dict:
    found, missed = counts.get("found", 0), counts.get("missed", 0)
    true_pairs = found + missed
    return {
        "queries": len(queries),
        "true_pairs": true_pairs,
        "found": found,
        "recall": found / true_pairs if true_pairs else 1.0,
    }


class MeasureRecall(beam.PTransform):
    """Takes ``{"vectors": VectorBlock, "pairs": semantic Pair}``; returns one dict: ``queries``, ``true_pairs`` (pairs
    at or above ``threshold`` that involve a query, by brute force against every vector), ``found`` (those the
    pipeline reported) and ``recall`` = found / true_pairs. Queries are the ``sample_size`` smallest id hashes."""

    def __init__(self, sample_size: int, threshold: float):
        super().__init__()
        self._sample_size = sample_size
        self._threshold = threshold

    def expand(self, inputs):
        blocks = inputs["vectors"]
        queries = beam.pvalue.AsSingleton(
            blocks | "Queries" >> beam.CombineGlobally(SmallestIdHashes(self._sample_size))
        )
        truth = blocks | "BruteForce" >> beam.FlatMap(_true_pairs, queries, self._threshold)
        query_ids = beam.pvalue.AsSingleton(queries.pvalue | "QueryIds" >> beam.Map(lambda block: set(block.ids)))
        found = inputs["pairs"] | "TouchingQueries" >> beam.FlatMap(_touches_queries, query_ids)
        return (
            (truth, found)
            | "Both" >> beam.Flatten()
            | "ByPair" >> beam.GroupByKey()
            | "Outcome" >> beam.MapTuple(lambda pair, tags: (_outcome(set(tags)), 1))
            | "CountOutcomes" >> beam.CombineGlobally(SumByKey())
            | "Recall" >> beam.Map(_recall, queries)
        )
