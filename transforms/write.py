"""Writers: Parquet tables (a batch run's all in one step, a stream's per window) and the run's summary.json."""

from __future__ import annotations

import datetime as dt
import random
import uuid
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import Any, BinaryIO, NamedTuple

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io import fileio
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms import trigger, window

from semsim_core.run_layout import Summary


class ParquetSink(fileio.FileSink):
    """A :mod:`fileio` sink writing one Parquet file (``codec``, snappy by default) in row groups: ``to_table`` turns
    a list of elements into an Arrow table, so the schema may depend on the data (e.g. the embedding dimension)."""

    def __init__(self, to_table: Callable[[list], pa.Table], rows_per_group: int = 8192, codec: str = "snappy"):
        self._to_table = to_table
        self._rows_per_group = rows_per_group
        self._codec = codec

    def open(self, fh) -> None:
        self._fh = fh
        self._writer: pq.ParquetWriter | None = None
        self._items: list = []

    def write(self, item) -> None:
        self._items.append(item)
        if len(self._items) >= self._rows_per_group:
            self._write_group()

    def _write_group(self) -> None:
        table = self._to_table(self._items)
        if self._writer is None:
            self._writer = pq.ParquetWriter(self._fh, table.schema, compression=self._codec)
        self._writer.write_table(table)
        self._items = []

    def flush(self) -> None:
        if self._items:
            self._write_group()
        if self._writer is not None:
            self._writer.close()


def rows_table(schema: pa.Schema, rows: list[NamedTuple | dict]) -> pa.Table:
    """NamedTuple (or dict) rows as an Arrow table of ``schema``."""
    return pa.Table.from_pylist([row if isinstance(row, dict) else row._asdict() for row in rows], schema=schema)


def write_file(path: str, write: Callable[[BinaryIO], object]) -> None:
    """Write ``path`` (any Beam filesystem) with ``write`` under a temporary name of this attempt's own (hidden: a
    leading dot) and rename it, so readers never see a partial file, two attempts never write one temporary file,
    and a retried bundle rewrites the same file."""
    folder, slash, name = path.rpartition("/")
    temporary = f"{folder}{slash}.{name}.{uuid.uuid4().hex[:12]}.tmp"
    with FileSystems.create(temporary) as f:
        write(f)
    FileSystems.rename([temporary], [path])


def write_table(path: str, table: pa.Table) -> None:
    """Write ``table`` to ``path`` as snappy Parquet with :func:`write_file`."""
    write_file(path, lambda f: pq.write_table(table, f, compression="snappy"))


def write_summary(path: str, summary: Summary) -> None:
    """Write ``summary`` to ``path`` (``summary.json``) with :func:`write_file`."""
    write_file(path, lambda f: f.write(summary.to_json()))


def _by_hour_and_shard(row: NamedTuple, shards: int) -> tuple[tuple[str, int], NamedTuple]:
    """The row keyed by the folder of the hour it is written in (processing time, UTC) and a random shard."""
    hour = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d/%H")
    return (hour, random.randrange(shards)), row


class _WritePaneFn(beam.DoFn):
    """One pane of one hour's shard -> ``folder/<day>/<hour>/part-<run>-<shard>-<pane>.parquet``: the name is the
    same when a bundle is retried, and new for every launch of the job (``run``)."""

    def __init__(self, folder: str, schema: pa.Schema, run: str):
        self._folder = folder
        self._schema = schema
        self._run = run

    def process(self, keyed_rows, pane=beam.DoFn.PaneInfoParam) -> Iterator[str]:
        (hour, shard), rows = keyed_rows
        name = f"part-{self._run}-{shard:02d}-{pane.index:08d}.parquet"
        path = FileSystems.join(self._folder, *hour.split("/"), name)
        write_table(path, rows_table(self._schema, list(rows)))
        yield path


class WriteWindowedRows(beam.PTransform):
    """Streaming: NamedTuple rows to ``folder/YYYY-MM-DD/HH/`` (the UTC hour they are written in), a Parquet file
    per shard every ``window_seconds`` of processing time. The trigger is processing time in the global window:
    results reach disk seconds after they happen, during a backlog too (an event-time window would wait for the
    watermark), and no row is ever late. Rows spread over ``shards`` keys, so writing is not one worker's job."""

    def __init__(self, folder: str, schema: pa.Schema, window_seconds: float, shards: int = 4):
        super().__init__()
        self._folder = folder
        self._schema = schema
        self._window_seconds = window_seconds
        self._shards = shards
        self._run = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]

    def expand(self, rows):
        every = trigger.Repeatedly(trigger.AfterProcessingTime(self._window_seconds))
        return (
            rows
            | "ByHourAndShard" >> beam.Map(_by_hour_and_shard, self._shards)
            | "Panes"
            >> beam.WindowInto(
                window.GlobalWindows(), trigger=every, accumulation_mode=trigger.AccumulationMode.DISCARDING
            )
            | "GroupPane" >> beam.GroupByKey()
            | "WriteFile" >> beam.ParDo(_WritePaneFn(self._folder, self._schema, self._run))
        )


class Table(NamedTuple):
    """A Parquet output: its folder, the Arrow schema of its rows (NamedTuples or dicts), the codec, and what its
    files' names start with (``<prefix>-SSSSS-of-NNNNN.parquet``)."""

    folder: str
    schema: pa.Schema
    codec: str = "snappy"
    prefix: str = "part"


class _WriteBundleFilesFn(beam.DoFn):
    """Writes a bundle's ``(table, row)`` elements into one temporary file per table, of the bundle's own (a retried
    bundle writes new ones), and emits ``(table, temporary path)`` for each when the bundle finishes."""

    def __init__(self, tables: dict[str, Table], temp: dict[str, str], rows_per_group: int):
        self._tables = tables
        self._temp = temp
        self._rows_per_group = rows_per_group

    def start_bundle(self) -> None:
        self._open: dict[str, tuple[str, BinaryIO, ParquetSink]] = {}  # table -> temporary path, file, sink

    def process(self, element: tuple[str, NamedTuple | dict]) -> None:
        name, row = element
        if name not in self._open:
            table = self._tables[name]
            path = FileSystems.join(self._temp[name], f"{uuid.uuid4().hex}.parquet")
            sink = ParquetSink(partial(rows_table, table.schema), self._rows_per_group, table.codec)
            handle = FileSystems.create(path)
            sink.open(handle)
            self._open[name] = path, handle, sink
        self._open[name][2].write(row)

    def finish_bundle(self) -> Iterator[window.WindowedValue]:
        for name, (path, handle, sink) in self._open.items():
            sink.flush()
            handle.close()
            yield window.GlobalWindows.windowed_value((name, path))


def files_under(path: str) -> list[str]:
    """The files under ``path`` (a folder, or an object-store prefix), at any depth."""
    return [m.path for m in FileSystems.match([FileSystems.join(path, "**")])[0].metadata_list]


def remove_folder(path: str) -> None:
    """Delete ``path``, a file or a folder with everything under it, when it exists."""
    if children := files_under(path):
        FileSystems.delete(children)
    if FileSystems.exists(path):  # a file, or a local folder (object stores have no folders)
        FileSystems.delete([path])


def _finalize(_, tables: dict[str, Table], temp: dict[str, str], written: list[tuple[str, str]]) -> Iterator:
    """Moves the committed bundles' files into place as ``<prefix>-SSSSS-of-NNNNN.parquet`` (a table without rows
    gets one empty file), removes the temporary folders, and emits ``(table, path)`` per file. Repeatable: a file
    already moved is not moved again."""
    for name, table in tables.items():
        sources = sorted(path for table_name, path in written if table_name == name)
        shards = len(sources) or 1
        targets = [
            FileSystems.join(table.folder, f"{table.prefix}-{i:05d}-of-{shards:05d}.parquet") for i in range(shards)
        ]
        if sources:
            present = set(files_under(temp[name]))  # one listing, not a request per file on an object store
            pending = [i for i, source in enumerate(sources) if source in present]
            if pending:
                FileSystems.rename([sources[i] for i in pending], [targets[i] for i in pending])
        else:
            write_table(targets[0], table.schema.empty_table())
        remove_folder(temp[name])
        for target in targets:
            yield name, target


class WriteTables(beam.PTransform):
    """Writes ``{name: PCollection of rows}`` (NamedTuples or dicts) to the Parquet folders of ``tables`` (a
    :class:`Table` per name), all in one step: each bundle writes its rows of each table into a temporary file of its
    own (in a hidden folder of the table's, unique to this pipeline), and once every bundle has finished the files of
    those that committed are renamed to ``<prefix>-SSSSS-of-NNNNN.parquet``; a retried bundle's abandoned files go
    with the temporary folder. Returns ``(name, path)`` of every file written. Batch pipelines only (global window).

    One step for every table costs the runner a few stages in all, where a Beam file sink per table costs a few each.
    """

    def __init__(self, tables: dict[str, Table], rows_per_group: int = 8192):
        super().__init__()
        self._tables = tables
        self._rows_per_group = rows_per_group
        token = uuid.uuid4().hex[:12]
        self._temp = {name: FileSystems.join(table.folder, f".temp-{token}") for name, table in tables.items()}

    def expand(self, rows):
        tagged = [
            rows[name] | f"Tag_{name}" >> beam.Map(lambda row, n=name: (n, row)).with_output_types(tuple[str, Any])
            for name in self._tables
        ]
        written = (
            tagged
            | "AllRows" >> beam.Flatten()
            | "WriteBundleFiles" >> beam.ParDo(_WriteBundleFilesFn(self._tables, self._temp, self._rows_per_group))
        )
        return (
            rows[next(iter(self._tables))].pipeline
            | "Once" >> beam.Create([None])
            | "Finalize" >> beam.FlatMap(_finalize, self._tables, self._temp, beam.pvalue.AsList(written))
        )


def _write_summary(_, path: str, settings: Summary, counts: dict, *written: list, **measured) -> Summary:
    summary = settings.measured(**counts, **measured)
    write_summary(path, summary)
    return summary


class CountInBundleFn(beam.DoFn):
    """Counts a bundle's elements (``rows``: the rows of its :class:`~transforms.vector_blocks.VectorBlock`
    elements) and emits ``(name, count)`` once, when the bundle finishes: one element per bundle reaches the sum,
    not one per counted element. A retried bundle's count goes with its other outputs."""

    def __init__(self, name: str, rows: bool):
        self._name = name
        self._rows = rows

    def start_bundle(self) -> None:
        self._count = 0

    def process(self, element) -> None:
        self._count += len(element) if self._rows else 1

    def finish_bundle(self) -> Iterator[window.WindowedValue]:
        yield window.GlobalWindows.windowed_value((self._name, self._count))


class SumByKey(beam.CombineFn):
    """``(key, number)`` elements -> one ``{key: sum}`` dict: a per-key sum and its collection in one global combine
    (one shuffle, where ``CombinePerKey`` then ``ToDict`` take two)."""

    def create_accumulator(self) -> dict:
        return {}

    def add_input(self, sums: dict, element: tuple) -> dict:
        key, number = element
        sums[key] = sums.get(key, 0) + number
        return sums

    def merge_accumulators(self, accumulators) -> dict:
        merged: dict = {}
        for sums in accumulators:
            for key, number in sums.items():
                merged[key] = merged.get(key, 0) + number
        return merged

    def extract_output(self, sums: dict) -> dict:
        return sums


class CountEach(beam.PTransform):
    """``{name: PCollection, or a tuple of them}`` -> a one-element PCollection: ``{name: size}`` (a tuple's sizes
    summed), in one sum for all of them of one count per bundle and name (:class:`CountInBundleFn`), rather than
    one global count each, which would cost the runner a few stages per name. The PCollections named in
    ``blocks`` hold :class:`~transforms.vector_blocks.VectorBlock` values: their size is the blocks' rows. Batch
    pipelines only (global window)."""

    def __init__(self, blocks: tuple[str, ...] = ()):
        super().__init__()
        self._blocks = blocks

    def expand(self, named):
        counts = []
        for name, pcolls in named.items():
            pcolls = pcolls if isinstance(pcolls, tuple) else (pcolls,)
            for i, pcoll in enumerate(pcolls):
                label = f"Count_{name}" if len(pcolls) == 1 else f"Count_{name}_{i}"
                count = CountInBundleFn(name, name in self._blocks)
                counts.append(pcoll | label >> beam.ParDo(count).with_output_types(tuple[str, int]))
        totals = counts | "AllCounts" >> beam.Flatten() | "Totals" >> beam.CombineGlobally(SumByKey())
        return totals | "Sizes" >> beam.Map(lambda sums, names=tuple(named): {n: sums.get(n, 0) for n in names})


class WriteSummary(beam.PTransform):
    """Writes ``settings`` (a :class:`Summary`) to ``path`` with the fields of ``counts`` (a one-element PCollection
    of a ``{field: value}`` dict, as :class:`CountEach` gives) and each named one-element PCollection's value in the
    field of that name, once they are all known and every PCollection of ``after`` (the other writers' results) is
    complete: the summary is the run's success marker."""

    def __init__(self, path: str, settings: Summary, counts, after: Sequence = ()):
        super().__init__()
        self._path = path
        self._settings = settings
        self._counts = counts
        self._after = after

    def expand(self, named):
        values = {name: beam.pvalue.AsSingleton(pcoll) for name, pcoll in named.items()}
        written = [beam.pvalue.AsList(pcoll) for pcoll in self._after]
        counts = beam.pvalue.AsSingleton(self._counts)
        return (
            self._counts.pipeline
            | "Once" >> beam.Create([None])
            | "Write" >> beam.Map(_write_summary, self._path, self._settings, counts, *written, **values)
        )
