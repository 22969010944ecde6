"""Reading a history store into a run by lookup: the stored records whose id, text hash or cluster a run's new data
names. Each committed ``records/`` file is read by one worker, which keeps the matching rows only (the keys are a
side input), so what crosses the shuffle follows the new data, not the size of the store."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import NamedTuple

import apache_beam as beam
import pyarrow as pa
from apache_beam.metrics import Metrics

from semsim_core.history import RECORDS, History, Manifest
from semsim_core.keep import KeepKey, keep_key
from semsim_core.normalize import text_hash
from semsim_core.records import DeadLetter, Record
from transforms import DEAD_LETTER, METRICS_NAMESPACE


class StoredRecord(NamedTuple):
    """One accepted record of an earlier run, as a history store holds it (cluster id after the store's merges)."""

    id: str
    text_hash: str
    cluster_id: str
    embedded: bool


class _FindStoredFn(beam.DoFn):
    def __init__(self, root: str, manifest: Manifest, column: str):
        self._root = root
        self._manifest = manifest
        self._column = column

    def setup(self) -> None:
        self._history = History(self._root)
        self._merges = self._history.cluster_merges(self._manifest) if self._manifest else {}

    def process(self, relative: str, keys: list[str]) -> Iterator[StoredRecord]:
        table = self._history.find_records(
            relative, {self._column: set(keys)}, self._merges, list(StoredRecord._fields)
        )
        yield from (StoredRecord(*row.values()) for row in table.to_pylist())


def _per_records_file(keys, manifest: Manifest | None, fn: beam.DoFn):
    """``fn`` applied to each committed ``records/`` file of ``manifest``, with every key as a side input."""
    files = manifest.files(RECORDS) if manifest else []
    return (
        keys.pipeline
        | "RecordsFiles" >> beam.Create(files, reshuffle=False)
        | "Spread" >> beam.Reshuffle()
        | "PerFile" >> beam.ParDo(fn, beam.pvalue.AsList(keys))
    )


class FindStored(beam.PTransform):
    """Keys (strings) -> the :class:`StoredRecord` values whose ``column`` (``id``, ``text_hash`` or ``cluster_id``,
    resolved) is one of them, in the committed segments of ``manifest`` (the store as the run found it)."""

    def __init__(self, root: str, manifest: Manifest | None, column: str):
        super().__init__()
        self._root = root
        self._manifest = manifest
        self._column = column

    def expand(self, keys):
        return _per_records_file(keys, self._manifest, _FindStoredFn(self._root, self._manifest, self._column))


class _SummarizeStoredFn(_FindStoredFn):
    def __init__(self, root: str, manifest: Manifest, keep: str):
        super().__init__(root, manifest, "cluster_id")
        self._keep = keep

    def process(self, relative: str, keys: list[str]) -> Iterator[tuple[str, tuple[int, KeepKey]]]:
        columns = ["id", "cluster_id", "event_time", "text_length"]
        table = self._history.find_records(relative, {"cluster_id": set(keys)}, self._merges, columns)
        rows = zip(
            table["id"].to_pylist(),
            table["cluster_id"].to_pylist(),
            table["event_time"].cast(pa.int64()).to_pylist(),
            table["text_length"].to_pylist(),
            strict=True,
        )
        found: dict[str, tuple[int, KeepKey]] = {}
        for record_id, cluster_id, time, length in rows:
            count, kept = found.get(cluster_id, (0, None))
            key = keep_key(self._keep, record_id, length, time)
            found[cluster_id] = (count + 1, key if kept is None else min(kept, key))
        yield from found.items()


def _merge_summaries(summaries: Iterable[tuple[int, KeepKey]]) -> tuple[int, KeepKey]:
    summaries = list(summaries)
    return sum(count for count, _ in summaries), min(kept for _, kept in summaries)


class SummarizeStored(beam.PTransform):
    """Cluster ids -> ``(cluster id, (stored records in it, keep key of the one ``keep`` keeps))`` for each of them
    the store holds (:mod:`semsim_core.keep`; the stored event time orders ``earliest``, the stored text length
    ``longest``)."""

    def __init__(self, root: str, manifest: Manifest | None, keep: str):
        super().__init__()
        self._root = root
        self._manifest = manifest
        self._keep = keep

    def expand(self, keys):
        summarize = _SummarizeStoredFn(self._root, self._manifest, self._keep)
        return _per_records_file(keys, self._manifest, summarize) | "Merge" >> beam.CombinePerKey(_merge_summaries)


class _DropStoredIdFn(beam.DoFn):
    def __init__(self, root: str):
        self._root = root
        self._dead_letters = Metrics.counter(METRICS_NAMESPACE, "dead_letters")

    def process(self, record: Record, stored: dict[str, str]) -> Iterator:
        if record.id not in stored:
            yield record
            return
        self._dead_letters.inc()
        error = f"id {record.id!r} is already in history {self._root} (an earlier run accepted it)"
        yield beam.pvalue.TaggedOutput(DEAD_LETTER, DeadLetter(record.locator, record.raw, error))


class DropStoredIds(beam.PTransform):
    """Records with distinct ids -> ``records`` whose id the store does not hold, and a ``dead_letter`` for each
    record whose id it does (an id names one record across runs)."""

    def __init__(self, root: str, manifest: Manifest | None):
        super().__init__()
        self._root = root
        self._manifest = manifest

    def expand(self, records):
        ids = records | "Ids" >> beam.Map(lambda r: r.id)
        stored = ids | "FindIds" >> FindStored(self._root, self._manifest, "id")
        taken = stored | "TakenIds" >> beam.Map(lambda s: (s.id, s.cluster_id))
        return records | "Split" >> beam.ParDo(_DropStoredIdFn(self._root), beam.pvalue.AsDict(taken)).with_outputs(
            DEAD_LETTER, main="records"
        )


class StoredTexts(beam.PTransform):
    """Records -> ``(text hash, stored id)`` of the embedded stored records with the text of one of them: what
    :class:`ExactPrepass` pairs new copies to."""

    def __init__(self, root: str, manifest: Manifest | None):
        super().__init__()
        self._root = root
        self._manifest = manifest

    def expand(self, records):
        hashes = records | "Hashes" >> beam.Map(lambda r: text_hash(r.text))
        stored = hashes | "FindTexts" >> FindStored(self._root, self._manifest, "text_hash")
        return stored | "Embedded" >> beam.FlatMap(lambda s: [(s.text_hash, s.id)] if s.embedded else [])


def as_record(record_id: str, text: str) -> Record:
    """A stored record's text as a :class:`Record` (for rescoring a pair with it)."""
    return Record(record_id, text, "history", 0)
