"""Parquet (``.parquet``, ``.pq``): one record per row, read whole-file by column (only the id and text columns)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import IO

import pyarrow.parquet as pq

from semsim_core.formats.base import Format, ParseConfig, Parsed, record_from_mapping
from semsim_core.records import DeadLetter


def parse_parquet(path: str, file: IO[bytes], config: ParseConfig) -> Iterator[Parsed]:
    """One record per Parquet row, positioned at its 1-based row number; only the id and text columns are read."""
    number = 0
    try:
        parquet = pq.ParquetFile(file)
        names = set(parquet.schema_arrow.names)
        columns = [c for c in dict.fromkeys((config.id_field, config.text_field)) if c in names] or None
        for batch in parquet.iter_batches(columns=columns):
            for row in batch.to_pylist():
                number += 1
                raw = json.dumps(row, ensure_ascii=False, default=str)
                yield record_from_mapping(row, path, number, raw, config)
    except Exception as e:  # noqa: BLE001 - a corrupt file becomes a dead letter, never a crashed job
        where = f"after row {number}" if number else "at open"
        yield DeadLetter(path, "", f"cannot read Parquet file ({where}): {type(e).__name__}: {e}")


FORMAT = Format("parquet", (".parquet", ".pq"), parse_parquet)
