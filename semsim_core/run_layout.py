"""The ``--output`` folder of a run: what each entry is called, and ``summary.json`` as a typed record.

A batch run writes::

    OUT/pairs/*.parquet        PAIRS_SCHEMA        every duplicate pair (exact and semantic)
    OUT/clusters/*.parquet     CLUSTERS_SCHEMA     one row per accepted record
    OUT/dead_letter/*.parquet  DEAD_LETTER_SCHEMA  one row per rejected input
    OUT/removed/*.parquet      REMOVED_SCHEMA      without --history: each accepted record its cluster did not keep
    OUT/deduplicated/*.parquet the input's fields  with --write-deduplicated: each cluster's kept record
    OUT/cluster_changes/*.parquet  CLUSTER_CHANGES_SCHEMA  with --history: history records whose cluster id changed
    OUT/embeddings/*.parquet   embeddings_schema   with --write-embeddings: one vector per accepted record
    OUT/centroids.npy          the cells' centroids (float32, one row per cell)
    OUT/_work/                 the run's staged vectors and cell files (without --history), removed when it ends
    OUT/summary.json           :class:`Summary`, written once every other entry is committed: the run's
                               success marker
    OUT/report.html            ``semsim report``'s page on the run
    OUT/.semsim-staged-<id>/   a run replacing the one in OUT (``--overwrite``) writes its entries here; they move
                               into OUT once it has finished (``run_files.promote``), so a crash leaves one whole run

A stream writes the three Parquet folders and ``cluster_changes`` (the cluster ids each post merged), in files per
window. Everything that writes or reads a run goes
through these names.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import pyarrow as pa

from semsim_core.records import (
    CLUSTER_CHANGES_SCHEMA,
    CLUSTERS_SCHEMA,
    DEAD_LETTER_SCHEMA,
    PAIRS_SCHEMA,
    REMOVED_SCHEMA,
)

PAIRS = "pairs"
CLUSTERS = "clusters"
DEAD_LETTER = "dead_letter"
CLUSTER_CHANGES = "cluster_changes"
REMOVED = "removed"
DEDUPLICATED = "deduplicated"
EMBEDDINGS = "embeddings"
CENTROIDS = "centroids.npy"
WORK = "_work"
SUMMARY = "summary.json"
REPORT = "report.html"  # written by `semsim report` beside the run it shows
STAGED_RUN_PREFIX = ".semsim-staged-"  # + a segment id: where a run replacing the run in OUT writes until it ends
PROMOTING = "summary.json.promoting"  # a staged run's summary while its entries move into OUT
OUTPUT_SCHEMAS: dict[str, pa.Schema] = {PAIRS: PAIRS_SCHEMA, CLUSTERS: CLUSTERS_SCHEMA, DEAD_LETTER: DEAD_LETTER_SCHEMA}
HISTORY_OUTPUT_SCHEMAS = {CLUSTER_CHANGES: CLUSTER_CHANGES_SCHEMA}  # batch: --history runs only; stream: always
REMOVAL_SCHEMAS = {REMOVED: REMOVED_SCHEMA}  # written by batch runs without --history
# a run's own entries; nothing else is
RUN_ENTRIES = (
    *OUTPUT_SCHEMAS, *HISTORY_OUTPUT_SCHEMAS, *REMOVAL_SCHEMAS, DEDUPLICATED, EMBEDDINGS, CENTROIDS, WORK, SUMMARY,
    REPORT,
)  # fmt: skip


@dataclass(frozen=True)
class ReadSpec:
    """How a run read its text input, so that ``semsim report`` can find example texts again."""

    input: list[str] | None
    format: str | None
    id_field: str
    text_field: str
    max_text_bytes: int
    time_field: str | None = None
    quoting: str = "csv"


@dataclass(frozen=True)
class Recall:
    """Pair recall of the cell partition on a brute-force sample (``--recall-sample``)."""

    queries: int  # sampled query vectors
    true_pairs: int  # pairs at or above the threshold that involve a query, by brute force against every vector
    found: int  # those the pipeline reported
    recall: float  # found / true_pairs (1.0 when there are none)


@dataclass(frozen=True)
class HistoryCounts:
    """What a ``--history`` run read from and added to its history store."""

    path: str
    segment: str  # the segment this run commits
    created: bool  # the run created the store
    records_before: int  # accepted records in the store when the run started
    records_added: int
    exact_matches: int  # new records whose normalised text was already in the store (exact pairs, not embedded)
    pairs_with_history: int  # semantic pairs between a new record and a stored one
    cluster_changes: int  # stored records whose cluster id changed (their cluster was merged into another)
    demoted: int = 0  # stored records their cluster kept until this run, now in removed/ (an earlier record joined)


@dataclass(frozen=True)
class Summary:
    """``summary.json`` of a batch run: the settings that decide its results, then what it measured."""

    threshold: float
    model: str | None  # None on --input-embeddings runs
    input_embeddings: str | None
    backend_requested: str | None
    rescore_band: float
    cluster_method: str
    runner: str
    read: ReadSpec
    outputs: dict[str, str]  # output name -> folder
    keep: str = "first-id"  # the --keep policy that chose each cluster's kept record
    target_recall: float | None = None  # the pair recall the cells' margin was tuned for (--target-recall)
    backend: str | None = None  # the concrete backends the workers ran, comma-separated
    inputs: int = 0  # records read, accepted or not
    accepted: int = 0
    dead_letters: int = 0
    exact_pairs: int = 0
    semantic_pairs: int = 0
    embedded: int = 0  # vectors embedded (one per exact group)
    clusters: int = 0
    removed: int | None = None  # accepted records their cluster did not keep (rows of removed/)
    deduplicated: int | None = None  # with --write-deduplicated: rows of deduplicated/
    cells: int = 0
    cell_margin: float | None = None  # a vector also joins every cell within this of its nearest (tuned, stored, given)
    largest_cell: int = 0
    rescored_pairs: int | None = None  # with a rescore band: pairs in it, rescored with fp32
    rescored_texts: int | None = None
    recall: Recall | None = None
    history: HistoryCounts | None = None
    wall_seconds: float | None = None  # from the pipeline's start to its end, as the launching process saw it
    # seconds the runner measured in each top-level step (its elements, bundle starts and ends), summed over workers
    step_seconds: dict[str, float] | None = None
    # left out of the JSON when not measured
    _OPTIONAL = (
        "removed", "deduplicated", "rescored_pairs", "rescored_texts", "recall", "history", "cell_margin",
        "wall_seconds", "step_seconds",
    )  # fmt: skip

    def measured(self, **values: Any) -> Summary:
        """This summary with measured fields set (``recall`` given as a dict)."""
        for name, kind in (("recall", Recall), ("history", HistoryCounts)):
            if isinstance(values.get(name), dict):
                values[name] = kind(**values[name])
        return replace(self, **values)

    def to_json(self) -> bytes:
        data = {k: v for k, v in asdict(self).items() if v is not None or k not in self._OPTIONAL}
        return json.dumps(data, indent=2, sort_keys=True).encode("utf-8") + b"\n"

    @classmethod
    def from_json(cls, raw: bytes | str) -> Summary:
        """Parse a summary; unknown keys (from a newer semsim) are ignored, a missing or mistyped one is a
        ValueError."""
        data = json.loads(raw)
        if not isinstance(data, dict) or not isinstance(data.get("threshold"), (int, float)):
            raise ValueError("not a semsim batch summary (no threshold)")
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        try:
            values["read"] = ReadSpec(**values["read"])
            for name, kind in (("recall", Recall), ("history", HistoryCounts)):
                if values.get(name) is not None:
                    values[name] = kind(**values[name])
            return cls(**values)
        except (KeyError, TypeError) as e:
            raise ValueError(f"not a semsim batch summary ({e})") from None


def recall_shortfall(summary: Summary) -> str | None:
    """One line when the run's measured pair recall is below its ``--target-recall``, else None."""
    recall, target = summary.recall, summary.target_recall
    if recall is None or target is None or recall.recall >= target:
        return None
    return (
        f"pair recall {recall.recall:.4f} ({recall.found} of {recall.true_pairs} sampled pairs) is below the target "
        f"{target:g}: pairs were lost at cell borders (margin {summary.cell_margin}); rerun with a larger --cell-margin"
    )


def counts(summary: Summary) -> dict[str, int]:
    """The summary's record and pair counts, by name, in the order a report shows them."""
    names = (
        "inputs", "accepted", "dead_letters", "exact_pairs", "semantic_pairs", "embedded", "clusters", "cells",
        "largest_cell",
    )  # fmt: skip
    return {name: getattr(summary, name) for name in names}
