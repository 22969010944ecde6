"""Search against a history store: new vectors are written into the store's cells as uncommitted parts, then each
cell is searched by one worker that reads that cell's files (the new parts and the committed history), so vectors
are never grouped in the runner's memory."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import apache_beam as beam
import faiss
import numpy as np
import pyarrow as pa
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from semsim_core.cells import assign_cells, bounded_cell_pairs, owning_cell
from semsim_core.history import History, Manifest, cell_schema
from semsim_core.pairs import range_search_at_least
from semsim_core.records import SEMANTIC, make_pair
from semsim_core.rescore import ScoreBand
from transforms import METRICS_NAMESPACE
from transforms.history_read import as_record
from transforms.pairs import CELL_SIZES

STORED_TEXTS = "stored_texts"  # stored records in a rescore-band pair: their texts are embedded again


def embeddings(table: pa.Table) -> np.ndarray:
    """The ``embedding`` column of a cell table as a ``(rows, dim)`` float32 array."""
    column = table.column("embedding").combine_chunks()
    dim = column.type.list_size
    return np.asarray(column.flatten(), dtype=np.float32).reshape(-1, dim)


class WriteCellPartsFn(beam.DoFn):
    """``(id, vector, text)`` batches -> one Parquet part per cell per flush under the store's ``cell=NNNNN/``, for
    each cell of each vector (nearest plus margin); emits ``(cell, part path)``. Parts are flushed every
    ``flush_rows`` buffered rows and at the end of the bundle, so a worker holds at most that many. A retried bundle
    writes new parts; those of the failed attempt are never emitted, so no reader sees them."""

    def __init__(self, root: str, segment: str, margin: float, dim: int, dtype: str, flush_rows: int = 50_000):
        self._root = root
        self._segment = segment
        self._margin = margin
        self._schema = cell_schema(dim, dtype)
        self._dtype = np.dtype(dtype)
        self._flush_rows = flush_rows

    def setup(self) -> None:
        self._history = History(self._root)

    def start_bundle(self) -> None:
        self._buffer: dict[int, list] = {}
        self._buffered = 0

    def process(self, batch: Sequence[tuple[str, np.ndarray, str]], centroids: np.ndarray) -> Iterator:
        vectors = np.stack([vector for _, vector, _ in batch])
        for (record_id, vector, text), cells in zip(batch, assign_cells(vectors, centroids, self._margin), strict=True):
            for cell in cells:
                self._buffer.setdefault(cell, []).append((record_id, text, list(cells), vector))
            self._buffered += len(cells)
        if self._buffered >= self._flush_rows:
            yield from self._flush()

    def _flush(self) -> Iterator[tuple[int, str]]:
        for cell, rows in sorted(self._buffer.items()):
            ids, texts, cells, vectors = zip(*rows, strict=True)
            flat = pa.array(np.stack(vectors).astype(self._dtype).ravel())
            columns = [
                pa.array(ids, pa.string()),
                pa.array(texts, pa.string()),
                pa.array(cells, self._schema.field("cells").type),
                pa.FixedSizeListArray.from_arrays(flat, self._schema.field("embedding").type.list_size),
            ]
            table = pa.Table.from_arrays(columns, schema=self._schema)
            yield cell, self._history.write_table(self._history.cell_part_path(self._segment, cell), table)
        self._buffer = {}
        self._buffered = 0

    def finish_bundle(self) -> Iterator[WindowedValue]:
        for part in self._flush():
            yield WindowedValue(part, MIN_TIMESTAMP, [GlobalWindow()])


class SearchCellFn(beam.DoFn):
    """``(cell, new part paths)`` -> the semantic pairs this cell owns (the smallest cell both records belong to):
    new against new (:func:`bounded_cell_pairs`) and new against the cell's committed history (an exact FAISS range
    search of the new vectors over the stored ones). Also emits the cell's size on ``cell_sizes`` and, for pairs in
    the rescore band, the stored record's text on ``stored_texts``."""

    def __init__(self, root: str, manifest: Manifest | None, band: ScoreBand, max_cell_size: int, margin: float):
        self._root = root
        self._manifest = manifest
        self._band = band
        self._max_cell_size = max_cell_size
        self._margin = margin
        self._pairs = Metrics.counter(METRICS_NAMESPACE, "candidate_pairs")
        self._history_pairs = Metrics.counter(METRICS_NAMESPACE, "history_candidate_pairs")

    def setup(self) -> None:
        self._history = History(self._root)

    def process(self, element: tuple[int, Iterable[str]]) -> Iterator:
        cell, parts = element
        new = self._history.read_files(sorted(parts), ["id", "cells", "embedding"]).sort_by("id")
        ids = new.column("id").to_pylist()
        cells = new.column("cells").to_pylist()
        vectors = embeddings(new)
        cells_of = dict(zip(ids, cells, strict=True))
        stored = self._stored(cell)
        yield beam.pvalue.TaggedOutput(CELL_SIZES, len(ids) + stored.num_rows)
        search = self._band.search_threshold
        for pair in bounded_cell_pairs(ids, vectors, search, self._max_cell_size, self._margin):
            if owning_cell(cells_of[pair.id_a], cells_of[pair.id_b]) == cell:
                self._pairs.inc()
                yield pair
        if stored.num_rows:
            yield from self._against_stored(cell, ids, cells, vectors, stored)

    def _stored(self, cell: int) -> pa.Table:
        if self._manifest is None:
            return pa.table({"id": pa.array([], pa.string())})
        return self._history.read_cell(self._manifest, cell)

    def _against_stored(self, cell: int, ids, cells, vectors: np.ndarray, stored: pa.Table) -> Iterator:
        stored_ids = stored.column("id").to_pylist()
        stored_cells = stored.column("cells").to_pylist()
        texts = stored.column("text")
        index = faiss.IndexFlatIP(vectors.shape[1])
        index.add(embeddings(stored))
        lims, scores, rows = range_search_at_least(index, vectors, self._band.search_threshold)
        queries = np.repeat(np.arange(len(ids)), np.diff(lims).astype(np.int64))
        keep = scores >= np.float32(self._band.search_threshold)
        for query, row, score in zip(queries[keep], rows[keep], scores[keep], strict=True):
            if owning_cell(cells[query], stored_cells[row]) != cell:
                continue
            self._history_pairs.inc()
            yield make_pair(ids[query], stored_ids[row], min(float(score), 1.0), SEMANTIC)
            if self._band.band and self._band.in_band(float(score)):
                yield beam.pvalue.TaggedOutput(STORED_TEXTS, as_record(stored_ids[row], texts[int(row)].as_py()))


def _first(element: tuple[str, Iterable]) -> object:
    return next(iter(element[1]))


class SearchWithHistory(beam.PTransform):
    """``(id, vector, text)`` -> ``pairs`` (semantic :class:`Pair` at or above ``band.search_threshold``),
    ``parts`` (``(cell, part path)``: the new vectors written into the store, uncommitted), ``cell_sizes`` and
    ``stored_texts`` (distinct stored :class:`Record` values in rescore-band pairs)."""

    def __init__(
        self,
        root: str,
        manifest: Manifest | None,
        segment: str,
        centroids,
        band: ScoreBand,
        margin: float,
        max_cell_size: int,
        dim: int,
        dtype: str,
    ):
        super().__init__()
        self._root = root
        self._manifest = manifest
        self._segment = segment
        self._centroids = centroids
        self._band = band
        self._margin = margin
        self._max_cell_size = max_cell_size
        self._dim = dim
        self._dtype = dtype

    def expand(self, vectors):
        write = WriteCellPartsFn(self._root, self._segment, self._margin, self._dim, self._dtype)
        parts = (
            vectors
            | "Batch" >> beam.BatchElements(min_batch_size=256, max_batch_size=1024)
            | "WriteParts" >> beam.ParDo(write, beam.pvalue.AsSingleton(self._centroids))
        )
        search = SearchCellFn(self._root, self._manifest, self._band, self._max_cell_size, self._margin)
        found = (
            parts
            | "GroupPartsByCell" >> beam.GroupByKey()
            | "SearchCell" >> beam.ParDo(search).with_outputs(CELL_SIZES, STORED_TEXTS, main="pairs")
        )
        texts = (
            found[STORED_TEXTS]
            | "KeyStoredText" >> beam.Map(lambda r: (r.id, r))
            | "GroupStoredText" >> beam.GroupByKey()
            | "OneStoredText" >> beam.Map(_first)
        )
        return {"pairs": found.pairs, "parts": parts, CELL_SIZES: found[CELL_SIZES], STORED_TEXTS: texts}
