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
    """Emits the group's smallest id as representative and an ``exact`` pair (score 1.0) from it to each copy.

    With a history store (the element is ``(key, {"records": ..., "history": stored ids})``), a group whose text the
    store already holds has no new representative: each record is an exact pair with the stored record, counted in
    ``history_exact``, and is not embedded.
    """

    def __init__(self) -> None:
        self._pairs = Metrics.counter(METRICS_NAMESPACE, "exact_pairs")
        self._history_exact = Metrics.counter(METRICS_NAMESPACE, "history_exact")

    def _star(self, representative: str, copies: Iterable[Record]) -> Iterator:
        for copy in copies:
            self._pairs.inc()
            yield beam.pvalue.TaggedOutput(EXACT_PAIRS, make_pair(representative, copy.id, 1.0, EXACT))

    def process(self, element: tuple[str, Iterable[Record] | dict[str, Iterable]]) -> Iterator:
        _, group = element
        stored = list(group["history"]) if isinstance(group, dict) else []
        records = sorted(group["records"] if isinstance(group, dict) else group, key=lambda r: r.id)
        if not records:
            return
        if stored:
            self._history_exact.inc(len(records))
            yield from self._star(min(stored), records)
            return
        yield records[0]
        yield from self._star(records[0].id, records[1:])


def text_key(record: Record) -> str:
    """Records are exact copies when their normalised texts are equal."""
    return text_hash(record.text)


def vector_key(record: EmbeddedRecord) -> str:
    """Saved embeddings are exact copies when their vectors are bit-identical (copies were saved with one vector)."""
    return hashlib.blake2b(record.vector.tobytes(), digest_size=16).hexdigest()


class ExactPrepass(beam.PTransform):
    """Returns ``representatives`` (one record per distinct ``key``) and ``exact_pairs``.

    Exact pairs form a star from each group's representative, not all n(n-1)/2 pairs of the group: the same clusters
    follow, and a text repeated 10,000 times costs 9,999 rows instead of 50 million. ``history``: ``(key, stored id)``
    of a history store's embedded records; a group with a stored id is paired with it instead (an earlier run's
    record represents its text).
    """

    def __init__(self, key: Callable[[Record | EmbeddedRecord], str] = text_key, history=None):
        super().__init__()
        self._key = key
        self._history = history

    def expand(self, records):
        key = self._key
        keyed = records | "KeyByContent" >> beam.Map(lambda r: (key(r), r))
        if self._history is None:
            grouped = keyed | "GroupByContent" >> beam.GroupByKey()
        else:
            grouped = {"records": keyed, "history": self._history} | "GroupByContent" >> beam.CoGroupByKey()
        return grouped | "SplitGroups" >> beam.ParDo(SplitExactGroupFn()).with_outputs(
            EXACT_PAIRS, main="representatives"
        )
