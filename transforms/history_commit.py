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
from apache_beam.io.parquetio import WriteToParquet

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

_LOG = logging.getLogger(__name__)

FAIL_BEFORE_COMMIT = "SEMSIM_FAIL_BEFORE_COMMIT"  # fault injection for the commit-safety tests: set to 1 to fail there


def _utc(micros: int) -> dt.datetime:
    return dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=micros)


def _stored_row(element: tuple[str, dict[str, Iterable]], seen: dt.datetime) -> Iterator[dict]:
    record_id, joined = element
    for record in joined["record"]:
        cluster = next(iter(joined["cluster"]))
        event_time = seen if record.time is None else _utc(record.time)
        yield record_row(record_id, record.text, event_time, cluster.cluster_id, bool(list(joined["embedded"])))


class WriteStoredRecords(beam.PTransform):
    """``{"records", "clusters", "embedded"}`` (new Records, their ClusterAssignments, the ids that were embedded) ->
    the new segment's ``records/`` Parquet files; returns their paths. A record's event time is its own (from
    ``--time-field``), else ``seen`` (when this run first saw it)."""

    def __init__(self, root: str, segment: str, seen: dt.datetime):
        super().__init__()
        self._prefix = FileSystems.join(root, RECORDS + segment)
        self._seen = seen

    def expand(self, inputs):
        joined = {
            "record": inputs["records"] | "RecordById" >> beam.Map(lambda r: (r.id, r)),
            "cluster": inputs["clusters"] | "ClusterById" >> beam.Map(lambda c: (c.id, c)),
            "embedded": inputs["embedded"] | "EmbeddedId" >> beam.Map(lambda record_id: (record_id, True)),
        } | "Join" >> beam.CoGroupByKey()
        return (
            joined
            | "Row" >> beam.FlatMap(_stored_row, self._seen)
            | "Write" >> WriteToParquet(self._prefix, RECORDS_SCHEMA, codec="zstd", file_name_suffix=".parquet")
        )


class WriteMerges(beam.PTransform):
    """``(from, to)`` stored cluster ids -> the new segment's ``merges/`` Parquet file; returns its path."""

    def __init__(self, root: str, segment: str):
        super().__init__()
        self._prefix = FileSystems.join(root, MERGES + segment)

    def expand(self, merges):
        return (
            merges
            | "Row" >> beam.MapTuple(lambda a, b: {"from_cluster_id": a, "to_cluster_id": b})
            | "Write"
            >> WriteToParquet(self._prefix, MERGES_SCHEMA, codec="zstd", file_name_suffix=".parquet", num_shards=1)
        )


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
