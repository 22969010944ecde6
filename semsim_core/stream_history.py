"""A stream's view of a history store (:mod:`semsim_core.history`): each cell's stored records as stream entries,
read when a worker first serves the cell, and the segments a stream appends.

Nothing of the store travels inside the job: a :class:`StreamHistory` holds the store's root and reads its manifest
on first use, in the worker. A cell's entries are the stored records the store holds in that cell (their nearest and
the cells within the margin, where the stream stores its posts too), with their cells, text hash (exact copies of
stored texts are found by hash), event time (retention counts from it) and cluster id (after the store's merges). A
compaction that replaces files between the manifest's read and a cell's read is met by reading the manifest again.

A cell's rows at one manifest version never change, so a process keeps the cells it read (most recently used first,
within :data:`CACHE_BYTES`) for every DoFn instance it runs: runners may create instances often (the local runner
makes one per bundle), and reading a cell means reading its files and scanning the store's records.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import pyarrow as pa

from semsim_core.history import (
    MERGES,
    MERGES_SCHEMA,
    RECORDS,
    RECORDS_SCHEMA,
    History,
    HistoryError,
    Manifest,
    Segment,
    cell_table,
    record_row,
)
from semsim_core.normalize import text_hash
from semsim_core.streaming import Entry

CACHE_BYTES = 1 << 30
# (root, manifest version, cell, with texts) -> (entries, their bytes)
_read_cells: OrderedDict[tuple, tuple[list[Entry], int]] = OrderedDict()
_cache_lock = threading.Lock()


def _cached_cell(key: tuple, read) -> list[Entry]:
    with _cache_lock:
        if key in _read_cells:
            _read_cells.move_to_end(key)
            return _read_cells[key][0]
    entries = read()
    size = sum(e.nbytes() for e in entries)
    with _cache_lock:
        _read_cells[key] = (entries, size)
        total = sum(size for _, size in _read_cells.values())
        while total > CACHE_BYTES and len(_read_cells) > 1:
            total -= _read_cells.popitem(last=False)[1][1]
    return entries


class StoredIds(NamedTuple):
    """Every id a store holds, with its text hash, compactly: Python's 64-bit hash of each id (sorted) and the first
    64 bits of its text hash; 16 bytes a record (a store of 10 million ids takes 160 MB of a worker's memory)."""

    ids: np.ndarray  # uint64, sorted
    texts: np.ndarray  # uint64, in the order of ``ids``

    @classmethod
    def of(cls, tables: Sequence[pa.Table]) -> StoredIds:
        ids = np.fromiter((hash(i) for t in tables for i in t["id"].to_pylist()), dtype=np.int64).view(np.uint64)
        texts = np.fromiter((_text_key(h) for t in tables for h in t["text_hash"].to_pylist()), dtype=np.uint64)
        order = np.argsort(ids, kind="stable")
        return cls(ids[order], texts[order])

    def text_keys(self, record_id: str) -> set[int]:
        """The text keys stored under ``record_id`` (an id stored twice has two); empty when it is not stored."""
        key = np.int64(hash(record_id)).view(np.uint64)
        start, end = np.searchsorted(self.ids, key, "left"), np.searchsorted(self.ids, key, "right")
        return set(self.texts[start:end].tolist())


def _text_key(hashed: str) -> int:
    return int(hashed[:16], 16)


_stored_ids: dict[tuple[str, str], StoredIds] = {}  # (root, manifest version) -> the ids it held
_stored_ids_lock = threading.Lock()


class AcceptedPost(NamedTuple):
    """A post the stream stored, as the store keeps it: ``cells`` nearest first (with the store's margin), its
    ``cluster_id`` as decided, ``copy`` when it is an exact copy of a stored post (no vector of its own), and the
    cluster ids its arrival ``merged`` into its cluster (the store's merges)."""

    id: str
    text: str
    timestamp: float
    cells: tuple[int, ...]
    vector: np.ndarray
    cluster_id: str
    copy: bool
    merged: tuple[str, ...] = ()


class StreamHistory:
    """The store at ``root`` as a stream reads and appends it. ``keep_text``: entries keep their stored text (for
    rescoring near-threshold matches with fp32). ``centroids``: the store's centroids file when the stream started
    (its cells); a store whose centroids changed since is refused, for reading and appending."""

    def __init__(self, root: str, keep_text: bool = False, centroids: str | None = None):
        self.root = root
        self._keep_text = keep_text
        self._centroids = centroids
        self._manifest: Manifest | None = None
        self._merges: dict[str, str] = {}

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_manifest": None, "_merges": {}}

    def _checked(self, manifest: Manifest) -> Manifest:
        if self._centroids is not None and manifest.centroids != self._centroids:
            raise HistoryError(
                f"history {self.root} has other centroids ({manifest.centroids}) than when this stream started "
                f"({self._centroids}): its cells changed; restart the stream"
            )
        return manifest

    def manifest(self, fresh: bool = False) -> Manifest:
        """The manifest this worker reads by (read once; again when ``fresh``)."""
        if self._manifest is None or fresh:
            history = History(self.root)
            self._manifest = self._checked(history.manifest())
            self._merges = history.cluster_merges(self._manifest)
        return self._manifest

    def cell_entries(self, cell: int, after: float | None = None) -> list[Entry]:
        """The records stored in ``cell`` whose event time (seconds) is later than ``after``, as entries, oldest
        first."""
        try:
            return self._cell_entries(cell, after)
        except HistoryError:
            self.manifest(fresh=True)  # files replaced by a compaction since this worker read the manifest
            return self._cell_entries(cell, after)

    def _cell_entries(self, cell: int, after: float | None) -> list[Entry]:
        manifest = self.manifest()
        key = (self.root, manifest.version, cell, self._keep_text)
        entries = _cached_cell(key, lambda: self._read_cell(manifest, cell))
        return [e for e in entries if after is None or e.timestamp > after]

    def _read_cell(self, manifest: Manifest, cell: int) -> list[Entry]:
        history = History(self.root)
        rows = history.read_cell(manifest, cell, ["id", "text", "cells", "embedding"])
        if not rows.num_rows:
            return []
        ids, texts, cells = rows["id"].to_pylist(), rows["text"].to_pylist(), rows["cells"].to_pylist()
        hashes = [text_hash(text) for text in texts]
        cells_of = dict(zip(hashes, map(tuple, cells), strict=True))
        found: dict[tuple[str, str], tuple[float, str]] = {}  # (id, text hash) of an embedded record -> time, cluster
        copies: dict[str, tuple[str, float, str]] = {}  # exact copies of this cell's texts, by id
        columns = ["id", "text_hash", "event_time", "cluster_id", "embedded"]
        for relative in manifest.files(RECORDS):
            table = history.find_records(relative, {"id": ids, "text_hash": cells_of}, self._merges, columns)
            times = table["event_time"].cast(pa.int64()).to_pylist()
            for record_id, hashed, micros, cluster, embedded in zip(
                table["id"].to_pylist(), table["text_hash"].to_pylist(), times, table["cluster_id"].to_pylist(),
                table["embedded"].to_pylist(), strict=True,
            ):  # fmt: skip
                if embedded:
                    found[record_id, hashed] = (micros / 1e6, cluster)
                elif hashed in cells_of:
                    copies[record_id] = (hashed, micros / 1e6, cluster)
        vectors = np.stack(rows["embedding"].to_numpy(zero_copy_only=False)).astype(np.float32)
        kept = texts if self._keep_text else [""] * len(ids)
        entries = []
        for record_id, vector, hashed, text, row_cells in zip(ids, vectors, hashes, kept, cells, strict=True):
            seconds, cluster = found[record_id, hashed]
            vector = np.ascontiguousarray(vector)
            entries.append(Entry(record_id, vector, hashed, seconds, cluster, text, tuple(row_cells)))
        held = set(ids)
        for record_id, (hashed, seconds, cluster) in copies.items():  # exact copies of this cell's texts: their ids
            if record_id not in held:
                entries.append(Entry(record_id, None, hashed, seconds, cluster, cells=cells_of[hashed]))
        return sorted(entries, key=lambda e: (e.timestamp, e.id))

    def names_another_text(self, record_id: str, hashed: str) -> bool:
        """Whether the store, as this worker first read it, holds ``record_id`` with a text of another hash than
        ``hashed`` (and not with that one): a message reusing a stored id for another post. The store's ids are read
        once per process (:class:`StoredIds`); ids the stream appends later are the stream's own to check."""
        stored = self._stored_ids().text_keys(record_id)
        return bool(stored) and _text_key(hashed) not in stored

    def _stored_ids(self) -> StoredIds:
        try:
            manifest = self.manifest()
            return self._read_ids(manifest)
        except HistoryError:
            return self._read_ids(self.manifest(fresh=True))  # files replaced by a compaction since

    def _read_ids(self, manifest: Manifest) -> StoredIds:
        key = (self.root, manifest.version)
        with _stored_ids_lock:
            if key not in _stored_ids:
                tables = list(History(self.root).read_records(manifest, ["id", "text_hash"]))
                _stored_ids.clear()  # one store's ids per process: the newest manifest read
                _stored_ids[key] = StoredIds.of(tables)
            return _stored_ids[key]

    def append(self, posts: Sequence[AcceptedPost], segment_id: str, run: str, owner: str) -> Manifest:
        """Commit ``posts`` as segment ``segment_id`` (cell parts for the posts with a vector, one records file),
        under the store's lock; committing a segment id again changes nothing (a retried bundle). A store locked by
        another writer raises :class:`HistoryError` (the caller retries later)."""
        history = History(self.root)
        manifest = self._checked(history.manifest())
        if any(segment.id == segment_id for segment in manifest.segments):
            return manifest
        files = []
        stored = [p for p in posts if not p.copy]
        for cell in sorted({c for p in stored for c in p.cells}):
            members = [p for p in stored if cell in p.cells]
            vectors = np.stack([p.vector for p in members])
            table = cell_table([p.id for p in members], [p.text for p in members], [p.cells for p in members],
                               vectors, manifest.dtype)  # fmt: skip
            files.append(history.write_table(history.cell_part_path(segment_id, cell), table))
        rows = [
            record_row(p.id, p.text, dt.datetime.fromtimestamp(p.timestamp, dt.UTC), p.cluster_id, not p.copy)
            for p in posts
        ]
        records = pa.Table.from_pylist(rows, schema=RECORDS_SCHEMA)
        files.append(history.write_table(f"{RECORDS}{segment_id}-0.parquet", records))
        merges = [{"from_cluster_id": old, "to_cluster_id": p.cluster_id} for p in posts for old in p.merged]
        if merges:
            table = pa.Table.from_pylist(merges, schema=MERGES_SCHEMA)
            files.append(history.write_table(f"{MERGES}{segment_id}-0.parquet", table))
        history.lock(owner)
        try:
            current = self._checked(history.manifest())
            segment = Segment(segment_id, "", len(posts), run, tuple(files))
            return history.commit(current, segment, current.version)
        finally:
            history.unlock(owner)
