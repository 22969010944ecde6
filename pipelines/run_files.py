"""Reading and writing a run's files (:mod:`semsim_core.run_layout`) on any Beam filesystem: local, ``gs://``, ..."""

from __future__ import annotations

import io
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from semsim_core.history import History, HistoryError, new_segment_id
from semsim_core.run_layout import PROMOTING, RUN_ENTRIES, STAGED_RUN_PREFIX, SUMMARY, WORK, Summary
from transforms.embeddings_io import embeddings_pattern
from transforms.write import files_under, remove_folder


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


def remove_run(folder: str) -> None:
    """Delete the entries of an earlier semsim batch run in ``folder`` (and nothing else of it)."""
    for path in run_entries(folder):
        remove_folder(path)


def staging_folder(folder: str) -> str:
    """A new hidden folder of ``folder`` for a run that replaces the run in it (``--overwrite``): the run writes its
    entries there, and :func:`promote` moves them into ``folder`` once it has finished."""
    return FileSystems.join(folder, f"{STAGED_RUN_PREFIX}{new_segment_id()}")


def _move(source: str, target: str) -> None:
    """Rename a file or a folder: a local folder at once, on an object store each object under the prefix."""
    objects = files_under(source) if "://" in source else []
    if objects:
        FileSystems.rename(objects, [target + path[len(source) :] for path in objects])
    else:
        FileSystems.rename([source], [target])


def promote(staging: str, folder: str) -> None:
    """Replace the run in ``folder`` with the finished run in ``staging`` (its ``summary.json`` written last).

    First the earlier run is retired: its ``summary.json`` (the success marker) is deleted, then its other entries,
    and the staged summary is renamed :data:`~semsim_core.run_layout.PROMOTING`. Then each staged entry moves into
    ``folder``, the summary last, and ``staging`` is deleted. Every step can be done again, so a promotion
    interrupted anywhere is finished by calling this again (:func:`finish_promotions`): up to the first deletion
    the earlier run is whole, after it the new run is whole, and a ``summary.json`` never stands over a mix."""
    summary, promoting = FileSystems.join(staging, SUMMARY), FileSystems.join(staging, PROMOTING)
    if FileSystems.exists(summary):
        remove_folder(FileSystems.join(folder, SUMMARY))
        remove_run(folder)
        FileSystems.rename([summary], [promoting])
    if FileSystems.exists(promoting):
        for name in RUN_ENTRIES:
            staged = FileSystems.join(staging, name)
            if name not in (SUMMARY, WORK) and (FileSystems.exists(staged) or files_under(staged)):
                _move(staged, FileSystems.join(folder, name))
        if leftovers := [path for path in files_under(staging) if path != promoting]:
            FileSystems.delete(leftovers)  # its work: once the summary has moved, the staging folder holds nothing
        FileSystems.rename([promoting], [FileSystems.join(folder, SUMMARY)])
    remove_folder(staging)


def staged_runs(folder: str) -> list[str]:
    """The staging folders (:func:`staging_folder`) in ``folder``, oldest first."""
    prefix = FileSystems.join(folder, STAGED_RUN_PREFIX)
    found = {path[len(prefix) :].split("/", 1)[0] for path in files_under(prefix + "*") if path.startswith(prefix)}
    if "://" not in folder and os.path.isdir(folder):  # a local one may hold no file yet
        found |= {e.name[len(STAGED_RUN_PREFIX) :] for e in os.scandir(folder) if e.name.startswith(STAGED_RUN_PREFIX)}
    return [prefix + name for name in sorted(found)]


def _finished(staging: str) -> bool | None:
    """Whether the run staged in ``staging`` finished: its summary is written (or already moving in) and, with a
    ``--history`` store, its segment committed there (the summary comes first: killed in between, the run is not
    finished, and its rerun must find the store without it). None when its store cannot be read now."""
    if FileSystems.exists(FileSystems.join(staging, PROMOTING)):
        return True  # a promotion starts after the commit
    if not FileSystems.exists(FileSystems.join(staging, SUMMARY)):
        return False
    stored = read_summary(staging).history
    if stored is None:
        return True
    try:
        store = History(stored.path)
        return store.exists() and any(segment.id == stored.segment for segment in store.manifest().segments)
    except (HistoryError, OSError):
        return None


def finish_promotions(folder: str, discard_unfinished: bool) -> None:
    """Finish the promotions (:func:`promote`) an interrupted run left in ``folder`` and delete empty staging
    folders; with ``discard_unfinished``, also the staging folders of runs that never finished (killed: the run
    they were to replace stays). A staged run whose history store cannot be read now is left as it is."""
    for staging in staged_runs(folder):
        finished = _finished(staging)
        if finished:
            promote(staging, folder)
        elif finished is False and (discard_unfinished or not files_under(staging)):
            remove_folder(staging)
