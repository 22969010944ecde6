"""SearchCells: exact threshold search inside each k-means cell, each pair reported once, with vectors read from
files instead of grouped in the runner's memory.

Vectors are staged to Parquet as they are embedded (no side input, so the step fuses with the embedding), then each
staged file is read once the centroids are known and split into one part per cell (a vector goes to its nearest
cell and every cell within the margin); centroids known before the run (a history store's, or given) split each
block as it is embedded, with no staged copy. Each cell is searched by one worker that reads that cell's parts
and, with a history store, the cell's committed history: a worker holds about one cell at a time.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import apache_beam as beam
import faiss
import numpy as np
import pyarrow as pa
from apache_beam.metrics import Metrics

from semsim_core.cells import assign_cells, bounded_cell_pairs, owning_cell, rows_by_cell
from semsim_core.history import History, Manifest, cell_table
from semsim_core.pairs import range_search_at_least
from semsim_core.progress import ProgressSpec
from semsim_core.records import SEMANTIC, Pair, make_pair
from semsim_core.rescore import ScoreBand
from transforms import METRICS_NAMESPACE
from transforms.cells import Partition
from transforms.history_read import as_record
from transforms.vector_blocks import VectorBlock

CELL_SIZES = "cell_sizes"
STORED_TEXTS = "stored_texts"  # stored records in a rescore-band pair: their texts are embedded again


def largest(sizes: Iterable[int]) -> int:
    """The largest cell size (0 when there are no cells); combine ``cell_sizes`` with it."""
    return max(sizes, default=0)


def embeddings(table: pa.Table) -> np.ndarray:
    """The ``embedding`` column of a cell table as a ``(rows, dim)`` float32 array."""
    column = table.column("embedding").combine_chunks()
    return np.asarray(column.flatten(), dtype=np.float32).reshape(-1, column.type.list_size)


class StageVectorsFn(beam.DoFn):
    """:class:`VectorBlock` -> a staged Parquet file of its rows (a cell file with no cells yet) under
    ``work/staged/``; emits its path. A retried bundle stages new files; the failed attempt's are never emitted, so
    nothing reads them."""

    def __init__(self, work: str, segment: str):
        self._work = work
        self._segment = segment

    def setup(self) -> None:
        self._folder = History(self._work)

    def process(self, block: VectorBlock) -> Iterator[str]:
        table = cell_table(block.ids, block.texts, [[]] * len(block), block.vectors)
        yield self._folder.write_table(f"staged/{self._segment}-{uuid.uuid4().hex[:8]}.parquet", table)


class SplitByCellFn(beam.DoFn):
    """A staged file (or a :class:`VectorBlock`) -> one part per cell under ``store``'s ``cell=NNNNN/`` (rows for
    every cell of each vector, stored as ``dtype``); emits ``(cell, part path)``."""

    def __init__(self, work: str, store: str, segment: str, dtype: str):
        self._work = work
        self._store = store
        self._segment = segment
        self._dtype = dtype

    def setup(self) -> None:
        self._staged = History(self._work)
        self._cells = History(self._store)

    def _staged_block(self, path: str) -> VectorBlock:
        table = self._staged.read_files([path], ["id", "text", "embedding"])
        return VectorBlock(table.column("id").to_pylist(), embeddings(table), table.column("text").to_pylist())

    def process(self, staged: str | VectorBlock, partition: Partition) -> Iterator[tuple[int, str]]:
        block = staged if isinstance(staged, VectorBlock) else self._staged_block(staged)
        cells_of = assign_cells(block.vectors, partition.centroids, partition.margin)
        for cell, members in sorted(rows_by_cell(cells_of).items()):
            part = block.take(members)
            cells = [list(cells_of[r]) for r in members]
            table = cell_table(part.ids, part.texts, cells, part.vectors, self._dtype)
            yield cell, self._cells.write_table(self._cells.cell_part_path(self._segment, cell), table)


class SearchCellFn(beam.DoFn):
    """``(cell, new part paths)`` -> the semantic pairs this cell owns (the smallest cell both records belong to):
    new against new (:func:`bounded_cell_pairs`) and, with a history ``manifest``, new against the cell's committed
    records (an exact FAISS range search of the new vectors over the stored ones). Also emits the cell's size on
    ``cell_sizes`` and, for pairs in the rescore band, the stored record's text on ``stored_texts``. With
    ``progress``, each cell counts as ``cells searched`` (of the partition's cells) and its pairs as ``pairs``."""

    def __init__(
        self,
        store: str,
        manifest: Manifest | None,
        band: ScoreBand,
        max_cell_size: int,
        target_recall: float,
        progress: ProgressSpec | None = None,
    ):
        self._store = store
        self._manifest = manifest
        self._band = band
        self._max_cell_size = max_cell_size
        self._target_recall = target_recall
        self._progress_spec = progress
        self._pairs = Metrics.counter(METRICS_NAMESPACE, "candidate_pairs")
        self._history_pairs = Metrics.counter(METRICS_NAMESPACE, "history_candidate_pairs")
        self._sizes = Metrics.distribution(METRICS_NAMESPACE, "cell_size")

    def setup(self) -> None:
        self._history = History(self._store)
        self._progress = self._progress_spec.open() if self._progress_spec else None

    def process(self, element: tuple[int, Iterable[str]], partition: Partition) -> Iterator:
        self._report("cells searched", 0, len(partition.centroids))  # both steps' rates count from here
        self._report("pairs", 0)
        pairs = 0
        for output in self._search(element, partition):
            pairs += isinstance(output, Pair)
            yield output
        self._report("cells searched", 1, len(partition.centroids))
        self._report("pairs", pairs)

    def _report(self, step: str, count: int, total: int | None = None) -> None:
        if self._progress is not None:
            self._progress.add(step, count, total)

    def _search(self, element: tuple[int, Iterable[str]], partition: Partition) -> Iterator:
        cell, parts = element
        new = self._history.read_files(sorted(parts), ["id", "cells", "embedding"]).sort_by("id")
        ids = new.column("id").to_pylist()
        cells = new.column("cells").to_pylist()
        vectors = embeddings(new)
        cells_of = dict(zip(ids, cells, strict=True))
        stored = self._history.read_cell(self._manifest, cell) if self._manifest else None
        size = len(ids) + (stored.num_rows if stored is not None else 0)
        self._sizes.update(size)
        yield beam.pvalue.TaggedOutput(CELL_SIZES, size)
        threshold = self._band.search_threshold
        for pair in bounded_cell_pairs(ids, vectors, threshold, self._max_cell_size, self._target_recall):
            if owning_cell(cells_of[pair.id_a], cells_of[pair.id_b]) == cell:
                self._pairs.inc()
                yield pair
        if stored is not None and stored.num_rows:
            yield from self._against_stored(cell, ids, cells, vectors, stored)

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


@dataclass(frozen=True)
class CellFiles:
    """Where a run's vectors go: ``work``, a folder of the run, for staged vectors; ``store``, for the cell parts (a
    history store, or a folder of the run); the store's committed ``manifest`` (searched too; None: nothing stored
    yet); the ``segment`` that names the parts; ``dtype``, how embeddings are stored."""

    work: str
    store: str
    manifest: Manifest | None
    segment: str
    dtype: str = "float32"


class SearchCells(beam.PTransform):
    """:class:`VectorBlock` values -> ``pairs`` (semantic :class:`Pair` at or above ``band.search_threshold``),
    ``parts`` (``(cell, part path)``: the new vectors, written under ``files.store``), ``cell_sizes`` and
    ``stored_texts`` (distinct stored :class:`Record` values in rescore-band pairs).

    ``staged``: the blocks are staged to files first, so that splitting them, which waits for ``partition``, does
    not hold them in the runner; False when ``partition`` does not depend on these vectors (a store's or given
    centroids): each block is then split into cell parts as it comes, with no staged copy."""

    def __init__(
        self,
        files: CellFiles,
        partition,
        band: ScoreBand,
        max_cell_size: int,
        target_recall: float,
        progress: ProgressSpec | None = None,
        staged: bool = True,
    ):
        super().__init__()
        self._files = files
        self._partition = partition
        self._band = band
        self._max_cell_size = max_cell_size
        self._target_recall = target_recall
        self._progress = progress
        self._staged = staged

    def expand(self, blocks):
        files = self._files
        partition = beam.pvalue.AsSingleton(self._partition)
        split = SplitByCellFn(files.work, files.store, files.segment, files.dtype)
        if self._staged:
            blocks = blocks | "Stage" >> beam.ParDo(StageVectorsFn(files.work, files.segment))
        parts = blocks | "SplitByCell" >> beam.ParDo(split, partition)
        search = SearchCellFn(
            files.store, files.manifest, self._band, self._max_cell_size, self._target_recall, self._progress
        )
        found = (
            parts
            | "GroupPartsByCell" >> beam.GroupByKey()
            | "SearchCell" >> beam.ParDo(search, partition).with_outputs(CELL_SIZES, STORED_TEXTS, main="pairs")
        )
        texts = (
            found[STORED_TEXTS]
            | "KeyStoredText" >> beam.Map(lambda r: (r.id, r))
            | "GroupStoredText" >> beam.GroupByKey()
            | "OneStoredText" >> beam.Map(_first)
        )
        return {"pairs": found.pairs, "parts": parts, CELL_SIZES: found[CELL_SIZES], STORED_TEXTS: texts}
