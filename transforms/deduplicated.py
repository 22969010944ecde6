"""WriteDeduplicated: each cluster's kept record with every field of its input record (``deduplicated/``).

The records' fields are not carried through the pipeline: once the clusters are known, each input file that holds a
kept record is read again, by one worker, for the kept records' positions only (``formats.read_fields``). Tables of
several files, formats or schemas are unified into one schema (:mod:`semsim_core.tables`) before writing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems

from semsim_core.formats import ParseConfig, detect_format, read_fields
from semsim_core.tables import conform, unify
from transforms.read import open_input
from transforms.write import write_table

ROWS_PER_FILE = 100_000


def _kept_locator(element: tuple[str, dict[str, list]]) -> Iterator[tuple[str, int]]:
    _, joined = element
    if joined["kept"]:
        yield from joined["where"]


class _ReadKeptFieldsFn(beam.DoFn):
    """``(path, positions)`` -> ``(path, chunk, table)``: the file's kept records with all their fields, in
    chunks of at most :data:`ROWS_PER_FILE` rows. A file that no longer holds every position fails the run."""

    def __init__(self, config: ParseConfig, fmt: str | None):
        self._config = config
        self._format = fmt

    def process(self, element: tuple[str, Iterable[int]]) -> Iterator[tuple[str, int, pa.Table]]:
        path, positions = element
        positions = set(positions)
        with open_input(path) as file:
            table = read_fields(path, file, self._format or detect_format(path), self._config, positions)
        if table.num_rows != len(positions):
            raise RuntimeError(
                f"{path} changed while the run read it: {len(positions) - table.num_rows} of its {len(positions)} "
                "kept records are not there any more"
            )
        for chunk, start in enumerate(range(0, table.num_rows, ROWS_PER_FILE)):
            yield path, chunk, table.slice(start, ROWS_PER_FILE)


class _UnifySchemas(beam.CombineFn):
    """The schemas of every table, in input path order, unified into one (:func:`semsim_core.tables.unify`)."""

    def create_accumulator(self) -> dict[str, pa.Schema]:
        return {}

    def add_input(self, accumulator: dict, element: tuple[str, pa.Schema]) -> dict:
        path, schema = element
        accumulator.setdefault(path, schema)
        return accumulator

    def merge_accumulators(self, accumulators: Iterable[dict]) -> dict:
        merged: dict[str, pa.Schema] = {}
        for accumulator in accumulators:
            for path, schema in accumulator.items():
                merged.setdefault(path, schema)
        return merged

    def extract_output(self, accumulator: dict) -> pa.Schema:
        return unify([accumulator[path] for path in sorted(accumulator)])


def _write_chunk(element: tuple[str, int, pa.Table], folder: str, schema: pa.Schema) -> tuple[str, int]:
    """One chunk as ``folder/part-<hash of its input path>-<chunk>.parquet``; returns the path and its row count."""
    source, chunk, table = element
    name = f"part-{hashlib.sha256(source.encode()).hexdigest()[:16]}-{chunk:05d}.parquet"
    path = FileSystems.join(folder, name)
    write_table(path, conform(table, schema))
    return path, table.num_rows


class WriteDeduplicated(beam.PTransform):
    """Takes ``{"clusters", "records"}`` (``ClusterAssignment``, the accepted ``Record`` values) and
    writes the kept records' input fields to ``folder``; returns ``(path, rows)`` per file written."""

    def __init__(self, folder: str, config: ParseConfig, fmt: str | None = None):
        super().__init__()
        self._folder = folder
        self._config = config
        self._format = fmt

    def expand(self, inputs):
        kept = (
            inputs["clusters"]
            | "Kept" >> beam.Filter(lambda c: c.is_representative)
            | "KeptIds" >> beam.Map(lambda c: (c.id, None))
        )
        where = inputs["records"] | "Locators" >> beam.Map(lambda r: (r.id, (r.source, r.position)))
        tables = (
            {"kept": kept, "where": where}
            | "JoinKept" >> beam.CoGroupByKey()
            | "KeptLocators" >> beam.FlatMap(_kept_locator)
            | "ByFile" >> beam.GroupByKey()
            | "ReadFields" >> beam.ParDo(_ReadKeptFieldsFn(self._config, self._format))
        )
        schema = (
            tables
            | "Schemas" >> beam.Map(lambda t: (t[0], t[2].schema))
            | "Unify" >> beam.CombineGlobally(_UnifySchemas())
        )
        return tables | "Write" >> beam.Map(_write_chunk, self._folder, beam.pvalue.AsSingleton(schema))
