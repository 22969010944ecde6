"""Adding a run to its history store: the records and merges tables of the new segment, and the commit that makes the
segment (with the cell parts written during the search) visible, after the run's outputs and summary."""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from semsim_core.history import (
    MERGES,
    MERGES_SCHEMA,
    RECORDS,
    RECORDS_SCHEMA,
    History,
    Manifest,
    Segment,
    record_row,
)
from semsim_core.run_layout import Summary
from transforms.cells import Partition
from transforms.write import Table

_LOG = logging.getLogger(__name__)

RECORDS_TABLE, MERGES_TABLE = "stored_records", "stored_merges"  # the segment's tables, as WriteTables names them
FAIL_BEFORE_COMMIT = "SEMSIM_FAIL_BEFORE_COMMIT"  # fault injection for the commit-safety tests: set to 1 to fail there


def _utc(micros: int) -> dt.datetime:
    return dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=micros)


def _stored_row(element: tuple[str, dict[str, Iterable]], seen: dt.datetime) -> Iterator[dict]:
    record_id, joined = element
    for record in joined["record"]:
        cluster = next(iter(joined["cluster"]))
        event_time = seen if record.time is None else _utc(record.time)
        yield record_row(record_id, record.text, event_time, cluster.cluster_id, bool(list(joined["embedded"])))


class StoredRecordRows(beam.PTransform):
    """``{"records", "clusters", "embedded"}`` (new Records, their ClusterAssignments, the ids that were embedded) ->
    the new segment's ``records/`` rows (:data:`~semsim_core.history.RECORDS_SCHEMA`, as dicts). A record's event
    time is its own (from ``--time-field``), else ``seen`` (when this run first saw it)."""

    def __init__(self, seen: dt.datetime):
        super().__init__()
        self._seen = seen

    def expand(self, inputs):
        joined = {
            "record": inputs["records"] | "RecordById" >> beam.Map(lambda r: (r.id, r)),
            "cluster": inputs["clusters"] | "ClusterById" >> beam.Map(lambda c: (c.id, c)),
            "embedded": inputs["embedded"] | "EmbeddedId" >> beam.Map(lambda record_id: (record_id, True)),
        } | "Join" >> beam.CoGroupByKey()
        return joined | "Row" >> beam.FlatMap(_stored_row, self._seen)


def merge_row(from_cluster_id: str, to_cluster_id: str) -> dict:
    """One row of ``merges/`` (:data:`~semsim_core.history.MERGES_SCHEMA`): a stored cluster id merged into another."""
    return {"from_cluster_id": from_cluster_id, "to_cluster_id": to_cluster_id}


def segment_tables(root: str, segment: str) -> dict[str, Table]:
    """The new segment's ``records/`` and ``merges/`` tables in the store, as :class:`WriteTables` writes them."""
    return {
        RECORDS_TABLE: Table(FileSystems.join(root, RECORDS), RECORDS_SCHEMA, "zstd", segment),
        MERGES_TABLE: Table(FileSystems.join(root, MERGES), MERGES_SCHEMA, "zstd", segment),
    }


@dataclass(frozen=True)
class CommitPlan:
    """What the commit needs to know from the start of the run."""

    root: str
    segment: str
    owner: str  # the lock owner this run took the store as
    run: str  # what the segment records as its origin (the output folder)
    manifest: Manifest | None  # the store as the run found it; None: the run creates it
    created: Manifest | None  # the manifest to create (centroids name filled in at commit); None when it exists


def _relative(root: str, path: str) -> str:
    """``path`` relative to the store (Beam's writers return full paths, the cell writer relative ones)."""
    if "://" not in path and not os.path.isabs(path):
        return path
    root = root.rstrip("/") + "/"
    return path[len(root) :] if path.startswith(root) else os.path.relpath(path, root)


def _commit(summary: Summary, plan: CommitPlan, partition: Partition, *written: list) -> Manifest | None:
    if os.environ.get(FAIL_BEFORE_COMMIT) == "1":
        raise RuntimeError(f"{FAIL_BEFORE_COMMIT}=1: failing before the history commit")
    history = History(plan.root)
    files = sorted(_relative(plan.root, path) for paths in written for path in paths)
    rows = summary.history.records_added if summary.history else 0
    if plan.manifest is None and not rows:  # as the summary says (history.created false): nothing to store yet
        _LOG.warning("history %s: not created, this run accepted no record (the next run creates it)", plan.root)
        history.discard(files)
        history.unlock(plan.owner)
        return None
    committed = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    segment = Segment(plan.segment, committed, rows, plan.run, tuple(files))
    if plan.manifest is None:
        created = replace(plan.created, cells=len(partition.centroids), margin=partition.margin)
        manifest = history.commit(created, segment, None, partition.centroids)
    else:
        manifest = history.commit(plan.manifest, segment, plan.manifest.version)
    history.unlock(plan.owner)
    return manifest


class CommitSegment(beam.PTransform):
    """Commits the run's segment to the store once ``summary`` (the one-element PCollection WriteSummary returns)
    exists, which is after every output: a crash before leaves the store as it was, with the lock of a dead process
    (taken over by the next run on this host). ``files``: PCollections of written paths (cell parts as
    ``(cell, path)``). A store this run creates takes the run's :class:`Partition` (centroids and margin); a run
    that accepted no record creates none (it would have no centroids)."""

    def __init__(self, plan: CommitPlan, partition, files: Iterable):
        super().__init__()
        self._plan = plan
        self._partition = partition
        self._files = files

    def expand(self, summary):
        written = [beam.pvalue.AsList(paths) for paths in self._files]
        partition = beam.pvalue.AsSingleton(self._partition)
        return summary | "Commit" >> beam.Map(_commit, self._plan, partition, *written)
