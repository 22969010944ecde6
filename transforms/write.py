"""Writers: a PCollection of NamedTuples to a Parquet folder, and the run's summary.json."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io import fileio
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.parquetio import WriteToParquet
from apache_beam.transforms import window
from apache_beam.utils.timestamp import Timestamp

from semsim_core.run_layout import Summary


class ParquetSink(fileio.FileSink):
    """A :mod:`fileio` sink writing one Parquet file (snappy) in row groups: ``to_table`` turns a list of elements
    into an Arrow table, so the schema may depend on the data (e.g. the embedding dimension)."""

    def __init__(self, to_table: Callable[[list], pa.Table], rows_per_group: int = 8192):
        self._to_table = to_table
        self._rows_per_group = rows_per_group

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
            self._writer = pq.ParquetWriter(self._fh, table.schema, compression="snappy")
        self._writer.write_table(table)
        self._items = []

    def flush(self) -> None:
        if self._items:
            self._write_group()
        if self._writer is not None:
            self._writer.close()


def rows_table(schema: pa.Schema, rows: list[NamedTuple]) -> pa.Table:
    """NamedTuple rows as an Arrow table of ``schema``."""
    return pa.Table.from_pylist([row._asdict() for row in rows], schema=schema)


def write_table(path: str, table: pa.Table) -> None:
    """Write ``table`` to ``path`` (snappy Parquet, any Beam filesystem) under a temporary name and rename it, so
    readers never see a partial file and a retried bundle rewrites the same file."""
    with FileSystems.create(path + ".tmp") as f:
        pq.write_table(table, f, compression="snappy")
    FileSystems.rename([path + ".tmp"], [path])


def _stamp_now(row: NamedTuple) -> window.TimestampedValue:
    return window.TimestampedValue((0, row), Timestamp.now())


def _window_time(at: Timestamp) -> str:
    return at.to_utc_datetime().strftime("%Y%m%dT%H%M%S%fZ")


class _WriteWindowFn(beam.DoFn):
    """One window's rows -> one Parquet file named by the window and pane (:func:`write_table`)."""

    def __init__(self, folder: str, schema: pa.Schema):
        self._folder = folder
        self._schema = schema

    def process(self, keyed_rows, window=beam.DoFn.WindowParam, pane=beam.DoFn.PaneInfoParam) -> Iterator[str]:
        _, rows = keyed_rows
        name = f"part-{_window_time(window.start)}-{_window_time(window.end)}-{pane.index}.parquet"
        path = FileSystems.join(self._folder, name)
        write_table(path, rows_table(self._schema, list(rows)))
        yield path


class WriteWindowedRows(beam.PTransform):
    """Streaming: NamedTuple rows to ``folder``, one Parquet file per fixed window of ``window_seconds``, so results
    are on disk seconds after they happen. Rows are windowed by when they are written (processing time): a result is
    known only after its post was matched, later than the post's publish time, and event-time windows would already
    be closed for it."""

    def __init__(self, folder: str, schema: pa.Schema, window_seconds: float):
        super().__init__()
        self._folder = folder
        self._schema = schema
        self._window_seconds = window_seconds

    def expand(self, rows):
        return (
            rows
            | "StampNow" >> beam.Map(_stamp_now)
            | "Window" >> beam.WindowInto(window.FixedWindows(self._window_seconds))
            | "GroupWindow" >> beam.GroupByKey()
            | "WriteFile" >> beam.ParDo(_WriteWindowFn(self._folder, self._schema))
        )


class WriteRows(beam.PTransform):
    """Writes NamedTuple rows to ``folder/part-SSSSS-of-NNNNN.parquet`` (snappy) with the given Arrow schema."""

    def __init__(self, folder: str, schema: pa.Schema):
        super().__init__()
        self._folder = folder
        self._schema = schema

    def expand(self, rows):
        return (
            rows
            | "ToDict" >> beam.Map(lambda row: row._asdict())
            | "Parquet"
            >> WriteToParquet(
                FileSystems.join(self._folder, "part"), self._schema, codec="snappy", file_name_suffix=".parquet"
            )
        )


def _write_summary(_, path: str, settings: Summary, *written: list, **measured) -> Summary:
    summary = settings.measured(**measured)
    with FileSystems.create(path) as f:
        f.write(summary.to_json())
    return summary


class CountEach(beam.PTransform):
    """``{name: PCollection}`` -> ``{name: one-element PCollection with its size}``."""

    def expand(self, named):
        return {name: pcoll | f"Count_{name}" >> beam.combiners.Count.Globally() for name, pcoll in named.items()}


class WriteSummary(beam.PTransform):
    """Writes ``settings`` (a :class:`Summary`) to ``path`` with each named one-element PCollection's value in the
    field of that name, once they are all known and every PCollection of ``after`` (the other writers' results) is
    complete: the summary is the run's success marker."""

    def __init__(self, path: str, settings: Summary, after: Sequence = ()):
        super().__init__()
        self._path = path
        self._settings = settings
        self._after = after

    def expand(self, named):
        values = {name: beam.pvalue.AsSingleton(pcoll) for name, pcoll in named.items()}
        written = [beam.pvalue.AsList(pcoll) for pcoll in self._after]
        return (
            named[next(iter(named))].pipeline
            | "Once" >> beam.Create([None])
            | "Write" >> beam.Map(_write_summary, self._path, self._settings, *written, **values)
        )
