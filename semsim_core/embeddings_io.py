"""Saved embeddings (``embeddings/``): build the Arrow table, and read a Parquet file back into records."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import IO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from semsim_core.records import DeadLetter, EmbeddedRecord, embeddings_schema


def embeddings_table(ids: Sequence[str], vectors: np.ndarray) -> pa.Table:
    """``id string, embedding fixed_size_list<float32>[dim]``, one row per id."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    dim = vectors.shape[1]
    embedding = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), dim)
    return pa.Table.from_arrays([pa.array(list(ids), pa.string()), embedding], schema=embeddings_schema(dim))


def _row_vectors(column: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Per-row value counts, and each non-null row's values flattened in order (float32)."""
    lengths = pc.fill_null(pc.list_value_length(column), 0).to_numpy(zero_copy_only=False)
    values = pc.list_flatten(column).cast(pa.float32()).fill_null(np.nan).to_numpy(zero_copy_only=False)
    return lengths, values


def first_dimension(file: IO[bytes]) -> int | None:
    """The number of values of the first non-empty ``embedding`` in a saved embeddings Parquet file; None when it
    has none (or no such column)."""
    parquet = pq.ParquetFile(file)
    if "embedding" not in parquet.schema_arrow.names:
        return None
    for batch in parquet.iter_batches(columns=["embedding"]):
        lengths = pc.list_value_length(batch.column("embedding")).drop_null().to_numpy(zero_copy_only=False)
        if np.any(lengths):
            return int(lengths[np.flatnonzero(lengths)[0]])
    return None


def parse_embeddings(path: str, file: IO[bytes], dim: int | None = None) -> Iterator[EmbeddedRecord | DeadLetter]:
    """One :class:`EmbeddedRecord` (vector scaled to unit length) or :class:`DeadLetter` per Parquet row.

    The file needs an ``id`` string column and an ``embedding`` list of numbers; every row must have ``dim`` values
    (else those of the file's first valid row: give the dimension of all the files read together, which one run's
    vectors share) and finite, non-zero values.
    """
    row = 0
    try:
        parquet = pq.ParquetFile(file)
        missing = {"id", "embedding"} - set(parquet.schema_arrow.names)
        if missing:
            yield DeadLetter(path, "", f"embeddings file lacks column(s) {', '.join(sorted(missing))}")
            return
        for batch in parquet.iter_batches(columns=["id", "embedding"]):
            ids = batch.column("id").to_pylist()
            column = batch.column("embedding")
            nulls = column.is_null().to_numpy(zero_copy_only=False)
            lengths, values = _row_vectors(column)
            offsets = np.concatenate([[0], np.cumsum(lengths)])
            for i, record_id in enumerate(ids):
                row += 1
                locator = f"{path}:{row}"
                vector = values[offsets[i] : offsets[i + 1]]
                dim = dim or (len(vector) if not nulls[i] and len(vector) else None)
                error = _embedding_error(record_id, vector, bool(nulls[i]), dim)
                if error:
                    yield DeadLetter(locator, saved_vector_label(record_id), error)
                else:
                    yield EmbeddedRecord(record_id, _unit(vector), path, row)
    except Exception as e:  # noqa: BLE001 - a corrupt file becomes a dead letter, never a crashed job
        where = f"after row {row}" if row else "at open"
        yield DeadLetter(path, "", f"cannot read embeddings file ({where}): {type(e).__name__}: {e}")


def saved_vector_label(record_id) -> str:
    """The ``raw`` of a saved embeddings row's dead letter: names the record whose vector it held."""
    return f"embedding of {record_id!r}"


def _unit(vector: np.ndarray) -> np.ndarray:
    """The vector scaled to unit length; saved unit vectors are kept bit for bit, so a round trip changes nothing."""
    norm = float(np.linalg.norm(vector))
    return vector if abs(norm - 1.0) < 1e-5 else (vector / norm).astype(np.float32)


def _embedding_error(record_id, vector: np.ndarray, is_null: bool, dim: int | None) -> str | None:
    if not isinstance(record_id, str) or not record_id.strip():
        return "field 'id' is missing or empty"
    if is_null or len(vector) == 0:
        return "field 'embedding' is null or empty"
    if len(vector) != dim:
        return f"embedding has {len(vector)} values, expected {dim}"
    if not np.all(np.isfinite(vector)):
        return "embedding has non-finite values"
    if not np.any(vector):
        return "embedding is all zeros"
    return None
