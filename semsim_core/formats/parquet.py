"""Parquet (``.parquet``, ``.pq``): one record per row, read whole-file by column (only the id, text and time
columns); ``deduplicated/`` rows keep every column with the file's own types."""

from __future__ import annotations

import io
import json
from collections.abc import Collection, Iterator
from typing import IO

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from semsim_core.formats.base import Format, ParseConfig, Parsed, compression_suffix, record_from_mapping
from semsim_core.records import DeadLetter


def _opened(path: str, file: IO[bytes]) -> pq.ParquetFile:
    """``file`` as a Parquet file; a compressed one (``x.parquet.gz``) is read whole first, as Parquet needs to seek."""
    return pq.ParquetFile(io.BytesIO(file.read()) if compression_suffix(path) else file)


def _rows(batch: pa.RecordBatch) -> Iterator[tuple[dict | None, str]]:
    """``(row, "")`` per row of ``batch``, or ``(None, reason)`` for a row with a value Python cannot hold (a string
    that is not UTF-8, a timestamp outside the years 1-9999)."""
    try:
        rows = batch.to_pylist()
    except (ValueError, OverflowError):  # UnicodeDecodeError is a ValueError
        rows = None
    if rows is not None:
        yield from ((row, "") for row in rows)
        return
    for i in range(batch.num_rows):
        row, reasons = {}, []
        for name, column in zip(batch.schema.names, batch.columns, strict=True):
            try:
                row[name] = column[i].as_py()
            except (ValueError, OverflowError) as e:
                reasons.append(f"column '{name}': {type(e).__name__}: {e}")
        yield (None, "; ".join(reasons)) if reasons else (row, "")


def parse_parquet(path: str, file: IO[bytes], config: ParseConfig) -> Iterator[Parsed]:
    """One record per Parquet row, positioned at its 1-based row number; only the id, text and time columns are
    read. A row holding a value that cannot be read is a dead letter; a file that cannot be read (from some row on)
    is one dead letter for the rest."""
    number = 0
    try:
        parquet = _opened(path, file)
        names = set(parquet.schema_arrow.names)
        wanted = (config.id_field, config.text_field, config.time_field)
        columns = [c for c in dict.fromkeys(wanted) if c in names] or None
        batches = (
            b
            for group in range(parquet.num_row_groups)
            for b in parquet.iter_batches(row_groups=[group], columns=columns)
        )
        for batch in batches:  # row group by row group: a damaged one costs the rows from there on, not those before
            for row, reason in _rows(batch):
                number += 1
                if row is None:
                    yield DeadLetter(f"{path}:{number}", "", f"unreadable value: {reason}")
                    continue
                raw = json.dumps(row, ensure_ascii=False, default=str)
                yield record_from_mapping(row, path, number, raw, config)
    except Exception as e:  # noqa: BLE001 - a corrupt file becomes a dead letter, never a crashed job
        where = f"rows after row {number}" if number else "any row"
        yield DeadLetter(path, "", f"cannot read Parquet file ({where}): {type(e).__name__}: {e}")


def read_parquet_fields(path: str, file: IO[bytes], config: ParseConfig, positions: Collection[int]) -> pa.Table:
    """Every column of the rows at ``positions`` (1-based row numbers, as :func:`parse_parquet` numbers them), with
    the file's types."""
    parquet = _opened(path, file)
    wanted = np.sort(np.fromiter(positions, dtype=np.int64, count=len(positions))) - 1
    pieces, start = [], 0
    for group in range(parquet.num_row_groups):
        if not len(wanted) or start > wanted[-1]:  # read no further: a damaged row group past them stays unread
            break
        for batch in parquet.iter_batches(row_groups=[group]):
            end = start + batch.num_rows
            inside = wanted[(wanted >= start) & (wanted < end)] - start
            if len(inside):
                pieces.append(pa.Table.from_batches([batch]).take(inside))
            start = end
    return pa.concat_tables(pieces) if pieces else parquet.schema_arrow.empty_table()


FORMAT = Format("parquet", (".parquet", ".pq"), parse_parquet, read_fields=read_parquet_fields)
