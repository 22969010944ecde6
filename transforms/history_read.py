"""Reading a history store into a run: its records (id, text hash, cluster), and the new ids it already holds."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import NamedTuple

import apache_beam as beam
from apache_beam.metrics import Metrics

from semsim_core.history import History, Manifest
from semsim_core.records import DeadLetter, Record
from transforms import DEAD_LETTER, METRICS_NAMESPACE


class StoredRecord(NamedTuple):
    """One accepted record of an earlier run, as a history store holds it (cluster id after the store's merges)."""

    id: str
    text_hash: str
    cluster_id: str
    embedded: bool


def _stored_records(_, root: str, manifest: Manifest) -> Iterator[StoredRecord]:
    history = History(root)
    merges = history.cluster_merges(manifest)
    for table in history.read_records(manifest, ["id", "text_hash", "cluster_id", "embedded"]):
        columns = [table.column(name).to_pylist() for name in ("id", "text_hash", "cluster_id", "embedded")]
        for record_id, text_hash, cluster_id, embedded in zip(*columns, strict=True):
            yield StoredRecord(record_id, text_hash, merges.get(cluster_id, cluster_id), embedded)


class ReadStoredRecords(beam.PTransform):
    """PBegin -> every :class:`StoredRecord` of the committed segments of ``manifest`` (the store as the run found it
    when it started: a segment committed later is not read). Only the small columns are read, never vectors."""

    def __init__(self, root: str, manifest: Manifest):
        super().__init__()
        self._root = root
        self._manifest = manifest

    def expand(self, pbegin):
        return (
            pbegin
            | "Once" >> beam.Create([None])
            | "ReadRecords" >> beam.FlatMap(_stored_records, self._root, self._manifest)
            | "Spread" >> beam.Reshuffle()
        )


class _DropStoredIdFn(beam.DoFn):
    def __init__(self, root: str):
        self._root = root
        self._dead_letters = Metrics.counter(METRICS_NAMESPACE, "dead_letters")

    def process(self, element: tuple[str, dict[str, Iterable]]) -> Iterator:
        record_id, joined = element
        stored = list(joined["stored"])
        for record in joined["records"]:
            if not stored:
                yield record
                continue
            self._dead_letters.inc()
            error = f"id {record_id!r} is already in history {self._root} (an earlier run accepted it)"
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, DeadLetter(record.locator, record.raw, error))


class DropStoredIds(beam.PTransform):
    """``{"records": Records with distinct ids, "stored": StoredRecords}`` -> ``records`` whose id the store does
    not hold, and a ``dead_letter`` for each record whose id it does (an id names one record across runs)."""

    def __init__(self, root: str):
        super().__init__()
        self._root = root

    def expand(self, inputs):
        records = inputs["records"] | "KeyById" >> beam.Map(lambda r: (r.id, r))
        stored = inputs["stored"] | "StoredIds" >> beam.Map(lambda s: (s.id, None))
        return (
            {"records": records, "stored": stored}
            | "JoinIds" >> beam.CoGroupByKey()
            | "Split" >> beam.ParDo(_DropStoredIdFn(self._root)).with_outputs(DEAD_LETTER, main="records")
        )


def stored_texts(stored) -> beam.PCollection:
    """``(text hash, id)`` of the stored records that were embedded: what :class:`ExactPrepass` pairs new copies to."""
    return stored | "EmbeddedTexts" >> beam.FlatMap(lambda s: [(s.text_hash, s.id)] if s.embedded else [])


def as_record(record_id: str, text: str) -> Record:
    """A stored record's text as a :class:`Record` (for rescoring a pair with it)."""
    return Record(record_id, text, "history", 0)
