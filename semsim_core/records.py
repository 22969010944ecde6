"""Records flowing through semsim and the Parquet schemas of its outputs (docs/architecture.md, "Output contract")."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pyarrow as pa


class Record(NamedTuple):
    """One accepted input record.

    ``source`` and ``position`` locate it (file path and 1-based line or row number); they order records
    deterministically when two share an id. ``time``: its event time in microseconds since the Unix epoch (UTC),
    from ``--time-field``; None when not given. ``fields``: every field of the input record, as parsed, when the
    parser was asked to keep them (``ParseConfig.keep_fields``, for ``deduplicated/``); else None.
    """

    id: str
    text: str
    source: str
    position: int
    time: int | None = None
    fields: dict | None = None

    @property
    def locator(self) -> str:
        return f"{self.source}:{self.position}"

    @property
    def raw(self) -> str:
        return self.text


class EmbeddedRecord(NamedTuple):
    """One accepted row of saved embeddings (``--input-embeddings``): an id and its unit float32 vector."""

    id: str
    vector: np.ndarray
    source: str
    position: int

    @property
    def locator(self) -> str:
        return f"{self.source}:{self.position}"

    @property
    def raw(self) -> str:
        return f"embedding of {self.id!r}"


class DeadLetter(NamedTuple):
    """One rejected input: where it came from, what it was, and a reason a person can act on."""

    source: str
    raw: str
    error: str


class Pair(NamedTuple):
    """An unordered pair of duplicate records, ``id_a < id_b``; ``kind`` is ``exact`` or ``semantic``."""

    id_a: str
    id_b: str
    score: float
    kind: str


class ClusterAssignment(NamedTuple):
    """The cluster of one accepted record; ``cluster_id`` is the id of the cluster's representative."""

    id: str
    cluster_id: str
    is_representative: bool
    cluster_size: int


class ClusterChange(NamedTuple):
    """A cluster id merged into another: in a batch run with ``--history``, one per stored record whose cluster this
    run merged (``id`` the record); in a stream, one per cluster id a post's arrival merged into its own (``id`` the
    post)."""

    id: str
    cluster_id: str  # its cluster now
    previous_cluster_id: str


EXACT = "exact"
SEMANTIC = "semantic"

PAIRS_SCHEMA = pa.schema([("id_a", pa.string()), ("id_b", pa.string()), ("score", pa.float32()), ("kind", pa.string())])
CLUSTERS_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("cluster_id", pa.string()),
        ("is_representative", pa.bool_()),
        ("cluster_size", pa.int64()),
    ]
)
CLUSTER_CHANGES_SCHEMA = pa.schema(
    [("id", pa.string()), ("cluster_id", pa.string()), ("previous_cluster_id", pa.string())]
)
REMOVED_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("kept_id", pa.string()),
        ("score", pa.float32()),
        ("kind", pa.string()),
        ("via", pa.list_(pa.string())),
    ]
)
DEAD_LETTER_SCHEMA = pa.schema([("source", pa.string()), ("raw", pa.string()), ("error", pa.string())])


def embeddings_schema(dim: int) -> pa.Schema:
    """``embeddings/``: ``id string, embedding fixed_size_list<float32>[dim]``."""
    return pa.schema([("id", pa.string()), ("embedding", pa.list_(pa.float32(), dim))])


def make_pair(id_1: str, id_2: str, score: float, kind: str) -> Pair:
    """Return the pair of two distinct ids in canonical order (``id_a < id_b``)."""
    if id_1 == id_2:
        raise ValueError(f"a pair needs two distinct ids, got {id_1!r} twice")
    id_a, id_b = (id_1, id_2) if id_1 < id_2 else (id_2, id_1)
    return Pair(id_a, id_b, float(score), kind)
