"""Parquet (``.parquet``, ``.pq``): one record per row, read whole-file by column (only the id, text and time
columns); ``deduplicated/`` rows keep every column with the file's own types."""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator
from typing import IO

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from semsim_core.formats.base import Format, ParseConfig, Parsed, record_from_mapping
from semsim_core.records import DeadLetter


def parse_parquet(path: str, file: IO[bytes], config: ParseConfig) -> Iterator[Parsed]:
    """One record per Parquet row, positioned at its 1-based row number; only the id, text and time columns are
    read."""
    number = 0
    try:
        parquet = pq.ParquetFile(file)
        names = set(parquet.schema_arrow.names)
        wanted = (config.id_field, config.text_field, config.time_field)
        columns = [c for c in dict.fromkeys(wanted) if c in names] or None
        for batch in parquet.iter_batches(columns=columns):
            for row in batch.to_pylist():
                number += 1
                raw = json.dumps(row, ensure_ascii=False, default=str)
                yield record_from_mapping(row, path, number, raw, config)
    except Exception as e:  # noqa: BLE001 - a corrupt file becomes a dead letter, never a crashed job
        where = f"after row {number}" if number else "at open"
        yield DeadLetter(path, "", f"cannot read Parquet file ({where}): {type(e).__name__}: {e}")


def read_parquet_fields(path: str, file: IO[bytes], config: ParseConfig, positions: Collection[int]) -> pa.Table:
    """Every column of the rows at ``positions`` (1-based row numbers, as :func:`parse_parquet` numbers them), with
    the file's types."""
    parquet = pq.ParquetFile(file)
    wanted = np.sort(np.fromiter(positions, dtype=np.int64, count=len(positions))) - 1
    pieces, start = [], 0
    for batch in parquet.iter_batches():
        end = start + batch.num_rows
        inside = wanted[(wanted >= start) & (wanted < end)] - start
        if len(inside):
            pieces.append(pa.Table.from_batches([batch]).take(inside))
        start = end
    return pa.concat_tables(pieces) if pieces else parquet.schema_arrow.empty_table()


FORMAT = Format("parquet", (".parquet", ".pq"), parse_parquet, read_fields=read_parquet_fields)
