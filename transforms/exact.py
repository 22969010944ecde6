"""ExactPrepass: group records by the hash of their normalised text; only one representative per group is embedded."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator

import apache_beam as beam
from apache_beam.metrics import Metrics

from semsim_core.normalize import text_hash
from semsim_core.records import EXACT, EmbeddedRecord, Record, make_pair
from transforms import METRICS_NAMESPACE

EXACT_PAIRS = "exact_pairs"


class SplitExactGroupFn(beam.DoFn):
    """Emits the group's smallest id as representative and an ``exact`` pair (score 1.0) from it to each copy."""

    def __init__(self) -> None:
        self._pairs = Metrics.counter(METRICS_NAMESPACE, "exact_pairs")

    def process(self, element: tuple[str, Iterable[Record]]) -> Iterator:
        _, records = element
        representative, *copies = sorted(records, key=lambda r: r.id)
        yield representative
        for copy in copies:
            self._pairs.inc()
            yield beam.pvalue.TaggedOutput(EXACT_PAIRS, make_pair(representative.id, copy.id, 1.0, EXACT))


def text_key(record: Record) -> str:
    """Records are exact copies when their normalised texts are equal."""
    return text_hash(record.text)


def vector_key(record: EmbeddedRecord) -> str:
    """Saved embeddings are exact copies when their vectors are bit-identical (copies were saved with one vector)."""
    return hashlib.blake2b(record.vector.tobytes(), digest_size=16).hexdigest()


class ExactPrepass(beam.PTransform):
    """Returns ``representatives`` (one record per distinct ``key``) and ``exact_pairs``.

    Exact pairs form a star from each group's representative, not all n(n-1)/2 pairs of the group: the same clusters
    follow, and a text repeated 10,000 times costs 9,999 rows instead of 50 million.
    """

    def __init__(self, key: Callable[[Record | EmbeddedRecord], str] = text_key):
        super().__init__()
        self._key = key

    def expand(self, records):
        key = self._key
        return (
            records
            | "KeyByContent" >> beam.Map(lambda r: (key(r), r))
            | "GroupByContent" >> beam.GroupByKey()
            | "SplitGroups" >> beam.ParDo(SplitExactGroupFn()).with_outputs(EXACT_PAIRS, main="representatives")
        )
