"""DropDuplicateIds: keep one record per id (the first by file and position); the rest become dead letters."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import apache_beam as beam
from apache_beam.metrics import Metrics

from semsim_core.records import DeadLetter, Record
from transforms import DEAD_LETTER, METRICS_NAMESPACE


class FirstRecordPerIdFn(beam.DoFn):
    def __init__(self) -> None:
        self._dead_letters = Metrics.counter(METRICS_NAMESPACE, "dead_letters")

    def process(self, element: tuple[str, Iterable[Record]]) -> Iterator:
        record_id, records = element
        first, *others = sorted(records, key=lambda r: (r.source, r.position))
        yield first
        for other in others:
            self._dead_letters.inc()
            yield beam.pvalue.TaggedOutput(
                DEAD_LETTER,
                DeadLetter(other.locator, other.raw, f"duplicate id {record_id!r} (first seen at {first.locator})"),
            )


class DropDuplicateIds(beam.PTransform):
    """Returns ``records`` with distinct ids and ``dead_letter`` for every later record that reuses an id.

    Works on :class:`Record` and :class:`EmbeddedRecord` (anything with ``id``, ``source``, ``position``, ``raw``).
    """

    def expand(self, records):
        return (
            records
            | "KeyById" >> beam.Map(lambda r: (r.id, r))
            | "GroupById" >> beam.GroupByKey()
            | "FirstPerId" >> beam.ParDo(FirstRecordPerIdFn()).with_outputs(DEAD_LETTER, main="records")
        )
