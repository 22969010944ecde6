"""MeasureRecall: how many of the true threshold pairs of a sample of queries the cell-based search found."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import apache_beam as beam
import numpy as np

from semsim_core.records import Pair
from transforms.cells import id_hash


def _true_pairs(
    batch: Sequence[tuple[str, np.ndarray]], queries: list[tuple[str, np.ndarray]], threshold: float
) -> Iterator[tuple[tuple[str, str], str]]:
    """Exact pairs between a batch of vectors and the queries (brute force), each pair once."""
    query_ids = [q for q, _ in queries]
    sims = np.stack([v for _, v in batch]) @ np.stack([v for _, v in queries]).T
    query_set = set(query_ids)
    for row, col in zip(*np.nonzero(sims >= np.float32(threshold)), strict=True):
        record_id, query_id = batch[row][0], query_ids[col]
        if record_id != query_id and (record_id not in query_set or record_id > query_id):
            yield (min(record_id, query_id), max(record_id, query_id)), "truth"


def _touches_queries(pair: Pair, query_ids: set[str]) -> Iterator[tuple[tuple[str, str], str]]:
    if pair.id_a in query_ids or pair.id_b in query_ids:
        yield (pair.id_a, pair.id_b), "found"


def _outcome(tags: set[str]) -> str:
    if "truth" in tags:
        return "found" if "found" in tags else "missed"
    return "not_in_truth"  # reported by the pipeline, below the threshold by brute force (float rounding at the edge)


def _recall(outcomes: list[tuple[str, int]], queries: list[tuple[str, np.ndarray]]) -> dict:
    counts = dict(outcomes)
    found, missed = counts.get("found", 0), counts.get("missed", 0)
    true_pairs = found + missed
    return {
        "queries": len(queries),
        "true_pairs": true_pairs,
        "found": found,
        "recall": found / true_pairs if true_pairs else 1.0,
    }


class MeasureRecall(beam.PTransform):
    """Takes ``{"vectors": (id, vector), "pairs": semantic Pair}``; returns one dict: ``queries``, ``true_pairs`` (pairs
    at or above ``threshold`` that involve a query, by brute force against every vector), ``found`` (those the
    pipeline reported) and ``recall`` = found / true_pairs. Queries are the ``sample_size`` smallest id hashes."""

    def __init__(self, sample_size: int, threshold: float):
        super().__init__()
        self._sample_size = sample_size
        self._threshold = threshold

    def expand(self, inputs):
        queries = beam.pvalue.AsSingleton(
            inputs["vectors"] | "Queries" >> beam.combiners.Top.Smallest(self._sample_size, key=id_hash)
        )
        truth = (
            inputs["vectors"]
            | "Batch" >> beam.BatchElements(min_batch_size=512, max_batch_size=4096)
            | "BruteForce" >> beam.FlatMap(_true_pairs, queries, self._threshold)
        )
        query_ids = beam.pvalue.AsSingleton(
            queries.pvalue | "QueryIds" >> beam.Map(lambda items: {record_id for record_id, _ in items})
        )
        found = inputs["pairs"] | "TouchingQueries" >> beam.FlatMap(_touches_queries, query_ids)
        return (
            (truth, found)
            | "Both" >> beam.Flatten()
            | "ByPair" >> beam.GroupByKey()
            | "Outcome" >> beam.MapTuple(lambda pair, tags: _outcome(set(tags)))
            | "CountOutcomes" >> beam.combiners.Count.PerElement()
            | "Outcomes" >> beam.combiners.ToList()
            | "Recall" >> beam.Map(_recall, queries)
        )
