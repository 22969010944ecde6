"""Reading and writing a run's files (:mod:`semsim_core.run_layout`) on any Beam filesystem: local, ``gs://``, ..."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from semsim_core.run_layout import RUN_ENTRIES, SUMMARY, Summary
from transforms.embeddings_io import embeddings_pattern


def read_summary(folder: str) -> Summary:
    """``summary.json`` of the batch run whose ``--output`` is ``folder``."""
    with FileSystems.open(FileSystems.join(folder, SUMMARY), compression_type="uncompressed") as f:
        return Summary.from_json(f.read())


def read_parquet_folder(folder: str, schema: pa.Schema | None = None) -> pa.Table:
    """Every Parquet file of an output folder (or glob) as one table, read as ``schema`` when given (which an empty
    folder then yields)."""
    tables = []
    for match in FileSystems.match([embeddings_pattern(folder)])[0].metadata_list:
        with FileSystems.open(match.path, compression_type="uncompressed") as f:
            tables.append(pq.read_table(f, schema=schema))
    return pa.concat_tables(tables) if tables or schema is None else schema.empty_table()


def load_centroids(path: str) -> np.ndarray:
    """Read centroids saved by a previous run (``centroids.npy``) as unit float32 rows."""
    with FileSystems.open(path, compression_type="uncompressed") as f:
        centroids = np.load(io.BytesIO(f.read()), allow_pickle=False)
    if centroids.ndim != 2 or len(centroids) == 0:
        raise ValueError(f"{path} holds an array of shape {centroids.shape}, expected (cells, dim)")
    centroids = centroids.astype(np.float32)
    return centroids / np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)


def partition_margin(centroids_path: str) -> float | None:
    """The margin the batch run that wrote ``centroids_path`` (``OUT/centroids.npy``) assigned its cells with, from
    its ``summary.json``; None when there is no such summary (centroids from elsewhere)."""
    try:
        return read_summary(FileSystems.split(centroids_path)[0]).cell_margin
    except (OSError, ValueError):
        return None


def save_centroids(centroids: np.ndarray, path: str) -> str:
    """Write ``centroids`` as ``.npy`` to ``path``; returns the path."""
    buffer = io.BytesIO()
    np.save(buffer, centroids)
    with FileSystems.create(path) as f:
        f.write(buffer.getvalue())
    return path


def run_entries(folder: str) -> list[str]:
    """The paths of the entries of a semsim batch run (:data:`RUN_ENTRIES`) already in ``folder``, finished or not."""
    found = []
    for name in RUN_ENTRIES:
        path = FileSystems.join(folder, name)
        if any(result.metadata_list for result in FileSystems.match([path, FileSystems.join(path, "*")])):
            found.append(path)
    return found


def remove_folder(path: str) -> None:
    """Delete ``path``, a file or a folder with everything under it, when it exists."""
    children = [m.path for m in FileSystems.match([FileSystems.join(path, "*")])[0].metadata_list]
    if children:
        FileSystems.delete(children)
    if FileSystems.exists(path):  # a file, or a local folder (object stores have no folders)
        FileSystems.delete([path])


def remove_run(folder: str) -> None:
    """Delete the entries of an earlier semsim batch run in ``folder`` (and nothing else of it)."""
    for path in run_entries(folder):
        remove_folder(path)
