"""Writers: a PCollection of NamedTuples to a Parquet folder, and the run's summary.json."""

from __future__ import annotations

import json

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.parquetio import WriteToParquet


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
