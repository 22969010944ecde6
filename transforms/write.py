"""Writers: a PCollection of NamedTuples to a Parquet folder, and the run's summary.json."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import NamedTuple

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io import fileio
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.parquetio import WriteToParquet
from apache_beam.transforms import window
from apache_beam.utils.timestamp import Timestamp


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


class WriteWindowedRows(beam.PTransform):
    """Streaming: NamedTuple rows to ``folder``, one set of Parquet files per fixed window of ``window_seconds``, so
    results are on disk seconds after they happen. Rows are windowed by when they are written (processing time):
    a result is known only after its post was matched, later than the post's publish time, and event-time windows
    would already be closed for it."""

    def __init__(self, folder: str, schema: pa.Schema, window_seconds: float):
        super().__init__()
        self._folder = folder
        self._schema = schema
        self._window_seconds = window_seconds

    def expand(self, rows):
        schema = self._schema
        return (
            rows
            | "StampNow" >> beam.Map(lambda row: window.TimestampedValue(row, Timestamp.now()))
            | "Window" >> beam.WindowInto(window.FixedWindows(self._window_seconds))
            | "Parquet"
            >> fileio.WriteToFiles(
                self._folder,
                file_naming=fileio.default_file_naming("part", ".parquet"),
                sink=lambda _: ParquetSink(functools.partial(rows_table, schema)),
            )
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


def _write_summary(_, path: str, fixed: dict, **measured: int) -> dict:
    summary = {**measured, **fixed}
    with FileSystems.create(path) as f:
        f.write(json.dumps(summary, indent=2, sort_keys=True).encode("utf-8") + b"\n")
    return summary


class CountEach(beam.PTransform):
    """``{name: PCollection}`` -> ``{name: one-element PCollection with its size}``."""

    def expand(self, named):
        return {name: pcoll | f"Count_{name}" >> beam.combiners.Count.Globally() for name, pcoll in named.items()}


class WriteSummary(beam.PTransform):
    """Writes the value of each named one-element PCollection plus the ``fixed`` fields as JSON to ``path``."""

    def __init__(self, path: str, fixed: dict):
        super().__init__()
        self._path = path
        self._fixed = fixed

    def expand(self, named):
        values = {name: beam.pvalue.AsSingleton(pcoll) for name, pcoll in named.items()}
        return (
            named[next(iter(named))].pipeline
            | "Once" >> beam.Create([None])
            | "Write" >> beam.Map(_write_summary, self._path, self._fixed, **values)
        )
