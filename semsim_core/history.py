"""The history store: a folder holding everything semsim has seen, partitioned by k-means cell, so that later batch
runs deduplicate only their new records against it (docs/architecture.md, "The history store").

A history ``H`` (a local path or any ``pyarrow.fs`` URI, such as ``gs://bucket/h``) holds::

    H/manifest.json                           :class:`Manifest`: the only source of truth
    H/centroids-<sha256[:16]>.npy             the cells' centroids, (cells, dim) float32, content-addressed
    H/cell=00042/<segment>-<part>.parquet     :func:`cell_schema`: every record of the cell (nearest or margin cell)
    H/records/<segment>-<part>.parquet        :data:`RECORDS_SCHEMA`: one row per accepted record
    H/merges/<segment>-<part>.parquet         :data:`MERGES_SCHEMA`: cluster ids replaced by a later run
    H/_lock                                   who is writing now (one writer at a time)

A writer writes a segment's files, then commits: the manifest, with the segment appended, replaces the old one
atomically. Readers see only the files the manifest lists; anything else is an orphan of a crashed run.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import math
import os
import posixpath
import socket
import statistics
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from semsim_core.cells import assign_cells, train_partition, tune_margin
from semsim_core.keep import FIRST_ID, POLICIES
from semsim_core.locations import resolve
from semsim_core.normalize import text_hash

SCHEMA_VERSION = 2  # 2: records/ text_length
FORMAT = "semsim-history"
MANIFEST = "manifest.json"
LOCK = "_lock"
RECORDS = "records/"
MERGES = "merges/"
DTYPES = {"float32": pa.float32(), "float16": pa.float16()}

RECORDS_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("text_hash", pa.string()),
        ("event_time", pa.timestamp("us", tz="UTC")),
        ("cluster_id", pa.string()),
        ("embedded", pa.bool_()),  # False for exact copies: their vector is their representative's
        ("text_length", pa.int64()),  # characters (Unicode code points): --keep longest; schema 2 on, else null
    ]
)
LATER_COLUMNS = {"text_length"}  # columns a file of an older schema lacks: read as nulls


def record_row(record_id: str, text: str, event_time: datetime, cluster_id: str, embedded: bool) -> dict:
    """One row of ``records/`` (:data:`RECORDS_SCHEMA`) for an accepted record with this text."""
    return {
        "id": record_id,
        "text_hash": text_hash(text),
        "event_time": event_time,
        "cluster_id": cluster_id,
        "embedded": embedded,
        "text_length": len(text),
    }


MERGES_SCHEMA = pa.schema([("from_cluster_id", pa.string()), ("to_cluster_id", pa.string())])


class HistoryError(Exception):
    """One clear line naming the problem (callers print it)."""


def cell_schema(dim: int, dtype: str = "float32") -> pa.Schema:
    """The schema of a cell's Parquet files: ``cells`` lists the record's cells, its nearest one first."""
    if dtype not in DTYPES:
        raise ValueError(f"history dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    return pa.schema(
        [
            ("id", pa.string()),
            ("text", pa.string()),
            ("cells", pa.list_(pa.int32())),
            ("embedding", pa.list_(DTYPES[dtype], dim)),
        ]
    )


def cell_table(
    ids: Sequence[str],
    texts: Sequence[str],
    cells: Sequence[Sequence[int]],
    vectors: np.ndarray,
    dtype: str = "float32",
) -> pa.Table:
    """Rows of a cell file (:func:`cell_schema`): ``vectors`` is ``(rows, dim)``, stored as ``dtype``."""
    schema = cell_schema(vectors.shape[1], dtype)
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.dtype(dtype)).ravel())
    columns = [
        pa.array(ids, pa.string()),
        pa.array(texts, pa.string()),
        pa.array(cells, schema.field("cells").type),
        pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1]),
    ]
    return pa.Table.from_arrays(columns, schema=schema)


def resolve_clusters(cluster_ids: pa.ChunkedArray, merges: Mapping[str, str]) -> pa.ChunkedArray:
    """``cluster_ids`` with every id that ``merges`` replaced mapped to its final id (vectorised)."""
    keys = pa.array(list(merges), pa.string())
    position = pc.index_in(cluster_ids, value_set=keys)
    return pc.if_else(
        pc.is_null(position), cluster_ids, pc.take(pa.array(list(merges.values()), pa.string()), position)
    )


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def new_segment_id() -> str:
    """A fresh segment id that sorts by time: ``20261202T040506Z-<8 hex>``."""
    return f"{_now():%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


def cell_folder(cell: int) -> str:
    """The folder prefix of ``cell``'s files: ``cell=00042/``."""
    return f"cell={cell:05d}/"


@dataclass(frozen=True)
class Segment:
    """One commit: the files it added (relative to the history root) and how many records it accepted."""

    id: str
    committed: str  # ISO-8601 UTC; commit() stamps it when empty
    rows: int
    run: str  # free text: the run that wrote it (its output folder), or "compact"
    files: tuple[str, ...]


@dataclass(frozen=True)
class Manifest:
    """``manifest.json``: the model and partition the history was built with, and its committed segments."""

    model: str | None
    fingerprint: str | None
    dim: int
    dtype: str
    margin: float
    centroids: str  # relative name of the centroids file
    cells: int
    version: int = 0  # +1 per commit
    segments: tuple[Segment, ...] = ()
    keep: str = FIRST_ID  # the --keep policy every run on the store uses (stores before it was kept: first-id)

    def to_json(self) -> bytes:
        data = {"format": FORMAT, "schema_version": SCHEMA_VERSION, **asdict(self)}
        data["segments"] = [{**asdict(s), "files": list(s.files)} for s in self.segments]
        order = ("format", "schema_version", "version", "model", "fingerprint", "dim", "dtype", "margin")
        ordered = {k: data[k] for k in order} | {k: v for k, v in data.items() if k not in order}
        return json.dumps(ordered, indent=2).encode("utf-8") + b"\n"

    @classmethod
    def from_json(cls, data: bytes, where: str) -> Manifest:
        """Parse a manifest; ``where`` (the history root) names it in errors. Malformed, foreign or newer manifests
        raise :class:`HistoryError`."""
        try:
            raw = json.loads(data)
        except (ValueError, UnicodeDecodeError) as e:
            raise HistoryError(f"history {where}: {MANIFEST} is corrupt: {e}") from None
        if not isinstance(raw, dict):
            raise HistoryError(f"history {where}: {MANIFEST} is corrupt: not a JSON object")
        if raw.get("format") != FORMAT:
            raise HistoryError(f"history {where}: {MANIFEST} is not a semsim history (format {raw.get('format')!r})")
        schema = raw.get("schema_version")
        if not isinstance(schema, int):
            raise HistoryError(f"history {where}: {MANIFEST} is corrupt: schema_version {schema!r}")
        if schema > SCHEMA_VERSION:
            raise HistoryError(
                f"history {where} was written by a newer semsim (schema {schema}; this one reads {SCHEMA_VERSION})"
            )
        try:
            segments = tuple(
                Segment(str(s["id"]), str(s["committed"]), int(s["rows"]), str(s["run"]), tuple(map(str, s["files"])))
                for s in raw["segments"]
            )
            manifest = cls(
                model=raw["model"],
                fingerprint=raw["fingerprint"],
                dim=int(raw["dim"]),
                dtype=str(raw["dtype"]),
                margin=float(raw["margin"]),
                centroids=str(raw["centroids"]),
                cells=int(raw["cells"]),
                version=int(raw["version"]),
                segments=segments,
                keep=str(raw.get("keep", FIRST_ID)),
            )
        except KeyError as e:
            raise HistoryError(f"history {where}: {MANIFEST} is corrupt: no key {e}") from None
        except (TypeError, ValueError) as e:
            raise HistoryError(f"history {where}: {MANIFEST} is corrupt: {e}") from None
        if manifest.dtype not in DTYPES:
            raise HistoryError(f"history {where}: {MANIFEST} is corrupt: dtype {manifest.dtype!r}")
        if manifest.keep not in POLICIES:
            raise HistoryError(f"history {where}: {MANIFEST} is corrupt: keep {manifest.keep!r}")
        return manifest

    def files(self, prefix: str) -> list[str]:
        """The committed files under a folder prefix (``cell=00003/``, ``records/``, ``merges/``), in commit order."""
        return [f for s in self.segments for f in s.files if f.startswith(prefix)]

    def cell_files(self, cell: int) -> list[str]:
        """The committed files of ``cell``."""
        return self.files(cell_folder(cell))


def _describe(model: str | None, fingerprint: str | None, dim: int | None) -> str:
    details = f"fingerprint {fingerprint or 'unknown'}" + (f", dim {dim}" if dim is not None else "")
    return f"model {model} ({details})"


def check_compatible(
    manifest: Manifest, model: str, fingerprint: str | None, dim: int | None, *, root: str | None = None
) -> None:
    """Refuse a run whose model differs from the history's: by fingerprint when both are known (the same weights
    under another name or path are the same model), else by name; and by dimension when given. ``root`` names the
    history in the message."""
    if fingerprint is not None and manifest.fingerprint is not None:
        same_model = fingerprint == manifest.fingerprint
    else:
        same_model = model == manifest.model
    if not same_model or (dim is not None and dim != manifest.dim):
        name = f"history {root}" if root else "the history"
        raise HistoryError(
            f"{name} was built with {_describe(manifest.model, manifest.fingerprint, manifest.dim)}; "
            f"this run uses {_describe(model, fingerprint, dim)}"
        )


def _reason(e: BaseException) -> str:
    return (e.strerror if isinstance(e, OSError) and e.strerror else str(e)) or type(e).__name__


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # someone else's process, or a pid this system cannot have: not provably dead
    return True


class History:
    """A history store at ``root``; every read and write goes through its ``pyarrow.fs`` filesystem."""

    def __init__(self, root: str):
        self.root = root
        try:
            self._fs, path = resolve(root)
        except (pa.ArrowException, OSError, ValueError) as e:
            raise HistoryError(f"history {root}: cannot open: {_reason(e)}") from None
        self._base = path.rstrip("/") or "/"
        self._local = isinstance(self._fs, pafs.LocalFileSystem)

    def __repr__(self) -> str:
        return f"History({self.root!r})"

    def _path(self, relative: str) -> str:
        return posixpath.join(self._base, relative)

    # -- reading -------------------------------------------------------------------------------------------------

    def _read_bytes(self, relative: str) -> bytes:
        with self._fs.open_input_stream(self._path(relative)) as f:
            return f.read()

    def exists(self) -> bool:
        """Whether ``manifest.json`` is there."""
        return self._fs.get_file_info(self._path(MANIFEST)).type == pafs.FileType.File

    def manifest(self) -> Manifest:
        """The committed manifest."""
        try:
            data = self._read_bytes(MANIFEST)
        except FileNotFoundError:
            raise HistoryError(f"history {self.root} does not exist (no {MANIFEST})") from None
        except OSError as e:
            raise HistoryError(f"cannot read history {self.root}: {_reason(e)}") from None
        return Manifest.from_json(data, self.root)

    def centroids(self, manifest: Manifest) -> np.ndarray:
        """The (cells, dim) float32 centroids the manifest names."""
        try:
            data = self._read_bytes(manifest.centroids)
        except FileNotFoundError:
            raise HistoryError(f"history {self.root}: committed file {manifest.centroids} is missing") from None
        except OSError as e:
            raise HistoryError(f"cannot read history {self.root}: {_reason(e)}") from None
        try:
            centroids = np.load(io.BytesIO(data), allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise HistoryError(f"history {self.root}: committed file {manifest.centroids} is corrupt: {e}") from None
        if centroids.shape != (manifest.cells, manifest.dim):
            raise HistoryError(
                f"history {self.root}: committed file {manifest.centroids} is corrupt: shape {centroids.shape}, "
                f"expected ({manifest.cells}, {manifest.dim})"
            )
        return np.ascontiguousarray(centroids, dtype=np.float32)

    @contextlib.contextmanager
    def _reading(self, relative: str, kind: str) -> Iterator[pa.NativeFile]:
        """``relative`` opened for reading; a missing or unreadable file is a :class:`HistoryError`."""
        try:
            with self._fs.open_input_file(self._path(relative)) as f:
                yield f
        except FileNotFoundError:
            raise HistoryError(f"history {self.root}: {kind} {relative} is missing") from None
        except (pa.ArrowException, ValueError, KeyError, OSError) as e:
            raise HistoryError(f"history {self.root}: {kind} {relative} is corrupt: {e}") from None

    def _read_table(self, relative: str, columns: list[str] | None = None, kind: str = "committed file") -> pa.Table:
        """``columns`` of ``relative`` (all by default); one of :data:`LATER_COLUMNS` that the file lacks is null."""
        with self._reading(relative, kind) as f:
            file = pq.ParquetFile(f)
            names = file.schema_arrow.names
            missing = [c for c in columns or () if c in LATER_COLUMNS and c not in names]
            table = file.read(columns=[c for c in columns if c not in missing] if columns else None)
        for column in missing:
            table = table.append_column(column, pa.nulls(table.num_rows))
        return table

    def _read_as(
        self, relative: str, schema: pa.Schema, columns: list[str] | None, kind: str = "committed file"
    ) -> pa.Table:
        """``relative`` read and cast to ``schema`` (its ``columns``, all by default)."""
        wanted = schema if columns is None else pa.schema([schema.field(c) for c in columns])
        table = self._read_table(relative, wanted.names, kind)
        try:
            return table.select(wanted.names).cast(wanted)
        except (pa.ArrowException, ValueError, KeyError) as e:
            raise HistoryError(f"history {self.root}: {kind} {relative} is corrupt: {e}") from None

    @staticmethod
    def _check_columns(schema: pa.Schema, columns: list[str] | None) -> None:
        unknown = sorted(set(columns or ()) - set(schema.names))
        if unknown:
            raise ValueError(f"no such history columns: {unknown} (there are {schema.names})")

    def read_cell(self, manifest: Manifest, cell: int, columns: list[str] | None = None) -> pa.Table:
        """Every committed row of ``cell`` (``columns`` only, when given), embeddings as float32."""
        schema = cell_schema(manifest.dim, "float32")
        self._check_columns(schema, columns)
        tables = [self._read_as(f, schema, columns) for f in manifest.cell_files(cell)]
        if not tables:
            wanted = schema if columns is None else pa.schema([schema.field(c) for c in columns])
            return wanted.empty_table()
        return pa.concat_tables(tables)

    def read_files(self, files: list[str], columns: list[str] | None = None) -> pa.Table:
        """The rows of the given cell files, committed or not (a run's own new parts), embeddings as float32. The
        dimension is the files' own; ``files`` must not be empty."""
        if not files:
            raise ValueError("read_files needs at least one file")
        self._check_columns(cell_schema(1), columns)
        with self._reading(files[0], "file") as f:
            embedding = pq.read_schema(f).field("embedding").type  # a KeyError: no such column, a corrupt file
        if not pa.types.is_fixed_size_list(embedding):
            raise HistoryError(f"history {self.root}: file {files[0]} is corrupt: embedding of type {embedding}")
        schema = cell_schema(embedding.list_size, "float32")
        return pa.concat_tables([self._read_as(f, schema, columns, "file") for f in files])

    def read_records(self, manifest: Manifest, columns: list[str] | None = None) -> Iterator[pa.Table]:
        """One table per committed ``records/`` file."""
        self._check_columns(RECORDS_SCHEMA, columns)
        for relative in manifest.files(RECORDS):
            yield self._read_as(relative, RECORDS_SCHEMA, columns)

    def find_records(
        self, relative: str, wanted: Mapping[str, Iterable[str]], merges: Mapping[str, str], columns: list[str]
    ) -> pa.Table:
        """The rows of the committed ``records/`` file ``relative`` whose value in any column of ``wanted`` is one of
        that column's values (``{"id": ids}``; cluster ids after resolving them through ``merges``,
        :meth:`cluster_merges`), with ``columns``."""
        table = self._read_as(relative, RECORDS_SCHEMA, sorted({*columns, *wanted}))
        if "cluster_id" in table.column_names and merges:
            table = table.set_column(
                table.schema.get_field_index("cluster_id"), "cluster_id", resolve_clusters(table["cluster_id"], merges)
            )
        masks = [
            pc.is_in(table[column], value_set=pa.array(list(values), pa.string())) for column, values in wanted.items()
        ]
        return table.filter(functools.reduce(pc.or_, masks)).select(columns)

    def cluster_merges(self, manifest: Manifest) -> dict[str, str]:
        """Every replaced cluster id -> the id it finally became. Merges apply in commit order, each joining the
        ``from`` id's cluster to the ``to`` id's (chains ``a->b, b->c`` give ``a->c, b->c``; ``a->b, a->c`` joins
        all three in ``c``); a merge of two ids already joined changes nothing."""
        parent: dict[str, str] = {}

        def root(node: str) -> str:
            while parent.get(node, node) != node:
                parent[node] = parent.get(parent[node], parent[node])  # path halving
                node = parent[node]
            return node

        for relative in manifest.files(MERGES):
            table = self._read_as(relative, MERGES_SCHEMA, None)
            for old, new in zip(table["from_cluster_id"].to_pylist(), table["to_cluster_id"].to_pylist(), strict=True):
                old_root, new_root = root(old), root(new)
                if old_root != new_root:
                    parent[old_root] = new_root
        final = {node: root(node) for node in parent}
        return {k: v for k, v in final.items() if k != v}

    # -- writing -------------------------------------------------------------------------------------------------

    def _cannot_write(self, e: BaseException) -> HistoryError:
        return HistoryError(f"cannot write to history {self.root}: {_reason(e)}")

    def _write_bytes(self, relative: str, data: bytes) -> None:
        path = self._path(relative)
        try:
            self._fs.create_dir(posixpath.dirname(path), recursive=True)
            with self._fs.open_output_stream(path) as f:
                f.write(data)
        except OSError as e:
            raise self._cannot_write(e) from None

    def _write_atomically(self, relative: str, data: bytes) -> None:
        """Write under a temporary name, then rename over ``relative``: readers see the old file or the new one."""
        tmp = posixpath.join(posixpath.dirname(relative), f".{posixpath.basename(relative)}.{uuid.uuid4().hex[:8]}.tmp")
        self._write_bytes(tmp, data)
        try:
            self._fs.move(self._path(tmp), self._path(relative))
        except OSError as e:
            with contextlib.suppress(OSError):
                self._fs.delete_file(self._path(tmp))
            raise self._cannot_write(e) from None

    def write_centroids(self, centroids: np.ndarray) -> str:
        """Store ``centroids`` (float32) under their content hash, once; return the file's relative name."""
        buffer = io.BytesIO()
        np.save(buffer, np.ascontiguousarray(centroids, dtype=np.float32), allow_pickle=False)
        data = buffer.getvalue()
        name = f"centroids-{hashlib.sha256(data).hexdigest()[:16]}.npy"
        if self._fs.get_file_info(self._path(name)).type != pafs.FileType.File:
            self._write_atomically(name, data)
        return name

    def write_table(self, relative_path: str, table: pa.Table) -> str:
        """Write ``table`` as Parquet (zstd) at ``relative_path``, creating folders; return ``relative_path``.
        It stays invisible to readers until a committed segment lists it. Embeddings are written plain: floats
        neither compress nor dictionary-encode, and trying costs more than the write."""
        path = self._path(relative_path)
        plain = [name for name in table.column_names if name == "embedding"]
        columns = [name for name in table.column_names if name not in plain]
        try:
            self._fs.create_dir(posixpath.dirname(path), recursive=True)
            with self._fs.open_output_stream(path) as f:
                pq.write_table(
                    table, f, compression={**dict.fromkeys(columns, "zstd"), **dict.fromkeys(plain, "none")},
                    use_dictionary=columns, write_statistics=columns,
                )  # fmt: skip
        except OSError as e:
            raise self._cannot_write(e) from None
        return relative_path

    def cell_part_path(self, segment: str, cell: int) -> str:
        """A fresh part name for ``cell`` in ``segment``: ``cell=00042/<segment>-<8 hex>.parquet``."""
        return f"{cell_folder(cell)}{segment}-{uuid.uuid4().hex[:8]}.parquet"

    def _missing(self, relatives: list[str]) -> list[str]:
        if not relatives:
            return []
        infos = self._fs.get_file_info([self._path(r) for r in relatives])
        return [r for r, info in zip(relatives, infos, strict=True) if info.type != pafs.FileType.File]

    def verify(self, manifest: Manifest) -> None:
        """Check that every file the manifest commits (and its centroids) is there and that each Parquet file's
        footer reads, before a run relies on them (footers only: a few KB per file, read by 16 threads)."""
        files = [f for s in manifest.segments for f in s.files]
        missing = self._missing([manifest.centroids, *files])
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise HistoryError(f"history {self.root}: committed file {missing[0]} is missing{more}")
        with ThreadPoolExecutor(max_workers=16) as pool:
            list(pool.map(self._read_footer, files))

    def _read_footer(self, relative: str) -> None:
        with self._reading(relative, "committed file") as f:
            try:
                pq.read_metadata(f)
            except (pa.ArrowException, OSError) as e:
                raise HistoryError(f"history {self.root}: committed file {relative} is corrupt: {e}") from None

    def _check_version(self, current: Manifest | None, expected_version: int | None) -> None:
        """Refuse to write unless the committed version is ``expected_version`` (None: no manifest yet)."""
        if current is not None and current.version != expected_version:
            last = "created it" if expected_version is None else "committed"
            raise HistoryError(
                f"history {self.root} changed since this run started (version {current.version}, "
                f"expected {'none' if expected_version is None else expected_version}): another writer {last}"
            )
        if current is None and expected_version is not None:
            raise HistoryError(f"history {self.root} does not exist (no {MANIFEST})")

    def _replace_manifest(self, new: Manifest, expected_version: int | None) -> Manifest:
        """Check the version once more, then write ``new`` over ``manifest.json`` atomically."""
        self._check_version(self.manifest() if self.exists() else None, expected_version)
        self._write_atomically(MANIFEST, new.to_json())
        return new

    def commit(
        self, manifest: Manifest, segment: Segment, expected_version: int | None, centroids: np.ndarray | None = None
    ) -> Manifest:
        """Append ``segment`` (its files already written) and return the new manifest (version + 1).

        ``manifest`` gives the model and partition; ``expected_version`` None creates the history, else it must be
        the committed version. A segment already committed is not committed again (retries are safe). Hold the lock.
        """
        current = self.manifest() if self.exists() else None
        if current is not None and any(s.id == segment.id for s in current.segments):
            return current
        self._check_version(current, expected_version)
        for relative in segment.files:
            if relative.startswith("/") or ".." in relative.split("/") or "://" in relative:
                raise HistoryError(f"history {self.root}: segment {segment.id} file {relative!r} is not relative")
        missing = self._missing(list(segment.files))
        if missing:
            raise HistoryError(
                f"history {self.root}: cannot commit segment {segment.id}: its file {missing[0]} is missing"
                + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
            )
        if centroids is not None:
            if centroids.shape != (manifest.cells, manifest.dim):
                raise HistoryError(
                    f"history {self.root}: centroids of shape {centroids.shape}, expected "
                    f"({manifest.cells}, {manifest.dim})"
                )
            manifest = replace(manifest, centroids=self.write_centroids(centroids))
        elif self._missing([manifest.centroids]):
            raise HistoryError(f"history {self.root}: cannot commit: centroids file {manifest.centroids} is missing")
        if not segment.committed:
            segment = replace(segment, committed=_iso(_now()))
        previous = current.segments if current is not None else ()
        new = replace(manifest, version=(current.version if current else 0) + 1, segments=(*previous, segment))
        return self._replace_manifest(new, expected_version)

    # -- the lock ------------------------------------------------------------------------------------------------

    def lock_holder(self) -> dict | None:
        """Who holds ``_lock`` (owner, host, pid, since), or None when nobody does."""
        try:
            data = self._read_bytes(LOCK)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise HistoryError(f"cannot read history {self.root}: {_reason(e)}") from None
        try:
            holder = json.loads(data)
            if not isinstance(holder, dict):
                raise ValueError("not an object")
        except (ValueError, UnicodeDecodeError):
            return {"owner": "?", "host": "?", "pid": None, "since": "?"}  # half-written: held, by nobody known
        return holder

    @staticmethod
    def _pid_here(holder: dict) -> int | None:
        """The process id of a lock ``holder`` (:meth:`lock_holder`) when it ran on this host, else None."""
        pid = holder.get("pid")
        return pid if holder.get("host") == socket.gethostname() and isinstance(pid, int) else None

    def _stale(self, holder: dict) -> bool:
        pid = self._pid_here(holder)
        return pid is not None and not _pid_alive(pid)

    def held_here(self, holder: dict) -> bool:
        """Whether a lock ``holder`` (:meth:`lock_holder`) is a process still running on this host."""
        pid = self._pid_here(holder)
        return pid is not None and _pid_alive(pid)

    def _try_create_lock(self, data: bytes) -> bool:
        """Create ``_lock`` holding ``data`` unless it exists; whether it was created."""
        path = self._path(LOCK)
        try:
            self._fs.create_dir(self._base, recursive=True)
            if self._local:
                try:
                    with open(path, "xb") as f:
                        f.write(data)
                except FileExistsError:
                    return False
                return True
            if self._fs.get_file_info(path).type != pafs.FileType.NotFound:
                return False  # object stores: check, then write (one writer at a time is a convention there)
            with self._fs.open_output_stream(path) as f:
                f.write(data)
            return True
        except OSError as e:
            raise self._cannot_write(e) from None

    def lock(self, owner: str) -> None:
        """Take the writer's lock for ``owner``; a lock left by a dead process on this host is taken over."""
        mine = {"owner": owner, "host": socket.gethostname(), "pid": os.getpid(), "since": _iso(_now())}
        data = json.dumps(mine).encode("utf-8")
        for _ in range(3):
            if self._try_create_lock(data):
                return
            holder = self.lock_holder()
            if holder is None:
                continue  # released meanwhile
            if (holder.get("owner"), holder.get("host"), holder.get("pid")) == (owner, mine["host"], mine["pid"]):
                return  # this process holds it already
            if not self._stale(holder):
                raise HistoryError(
                    f"history {self.root} is locked by {holder.get('owner')} (pid {holder.get('pid')} on "
                    f"{holder.get('host')} since {holder.get('since')}): another semsim run is writing it; if that "
                    f"run is dead, run `semsim history unlock {self.root}`"
                )
            with contextlib.suppress(FileNotFoundError):
                self._fs.delete_file(self._path(LOCK))
        raise HistoryError(f"history {self.root}: cannot take its lock: other processes keep taking it")

    def unlock(self, owner: str | None = None) -> None:
        """Remove ``_lock`` if ``owner`` holds it (None: whoever does)."""
        holder = self.lock_holder()
        if holder is None or (owner is not None and holder.get("owner") != owner):
            return
        try:
            self._fs.delete_file(self._path(LOCK))
        except FileNotFoundError:
            pass
        except OSError as e:
            raise self._cannot_write(e) from None

    # -- upkeep --------------------------------------------------------------------------------------------------

    def _all_files(self) -> list[pafs.FileInfo]:
        try:
            infos = self._fs.get_file_info(pafs.FileSelector(self._base, recursive=True))
        except OSError as e:
            raise HistoryError(f"cannot read history {self.root}: {_reason(e)}") from None
        return [i for i in infos if i.type == pafs.FileType.File]

    def info(self) -> dict[str, Any]:
        """What the history holds: its model and partition, counts of records, rows per cell, files and bytes,
        merges, orphan files (written by runs that never committed) and the lock."""
        manifest = self.manifest()
        records = embedded = 0
        for table in self.read_records(manifest, ["embedded"]):
            records += table.num_rows
            embedded += int(pc.sum(table["embedded"]).as_py() or 0)
        per_cell = []
        for cell in range(manifest.cells):
            column = self.read_cell(manifest, cell, ["cells"])["cells"]
            nearest = pc.list_element(column, 0) if len(column) else pa.array([], pa.int32())
            per_cell.append(int(pc.sum(pc.equal(nearest, cell)).as_py() or 0))
        merges = sum(self._read_table(f, ["from_cluster_id"]).num_rows for f in manifest.files(MERGES))
        committed = [f for s in manifest.segments for f in s.files]
        on_disk = {posixpath.relpath(i.path, self._base): i.size for i in self._all_files()}
        missing = [f for f in committed if f not in on_disk]
        if missing:
            raise HistoryError(f"history {self.root}: committed file {missing[0]} is missing")
        known = {*committed, MANIFEST, LOCK, manifest.centroids}
        return {
            "root": self.root,
            "model": manifest.model,
            "fingerprint": manifest.fingerprint,
            "dim": manifest.dim,
            "dtype": manifest.dtype,
            "cells": manifest.cells,
            "margin": manifest.margin,
            "keep": manifest.keep,
            "schema_version": SCHEMA_VERSION,
            "version": manifest.version,
            "segments": len(manifest.segments),
            "records": records,
            "embedded": embedded,
            "cell_rows": {
                "min": min(per_cell, default=0),
                "median": statistics.median(per_cell) if per_cell else 0,
                "max": max(per_cell, default=0),
            },
            "files": len(committed),
            "bytes": sum(on_disk[f] or 0 for f in committed),
            "merges": merges,
            "orphans": sorted(f for f in on_disk if f not in known),
            "lock": self.lock_holder(),
        }

    def compact(self, owner: str) -> Manifest:
        """Under the lock: one file per cell, one records file with every cluster id resolved through the merges
        (which are dropped), committed as one segment; the replaced files are deleted after the commit."""
        with self._rewriting(owner) as written:
            manifest = self.manifest()
            merges_files = manifest.files(MERGES)
            records_files = manifest.files(RECORDS)
            rewrite_records = len(records_files) > 1 or (bool(records_files) and bool(merges_files))
            crowded = [c for c in range(manifest.cells) if len(manifest.cell_files(c)) > 1]
            if len(manifest.segments) <= 1 and not crowded and not rewrite_records and not merges_files:
                return manifest  # compact already
            segment_id = new_segment_id()
            replaced: list[str] = list(merges_files)
            schema = cell_schema(manifest.dim, manifest.dtype)
            for cell in crowded:
                table = self.read_cell(manifest, cell).cast(schema)
                written.append(self.write_table(self.cell_part_path(segment_id, cell), table))
                replaced.extend(manifest.cell_files(cell))
            rows = sum(self._read_table(f, ["id"]).num_rows for f in records_files)
            if rewrite_records:
                written.append(self._compact_records(manifest, f"{RECORDS}{segment_id}-{uuid.uuid4().hex[:8]}.parquet"))
                replaced.extend(records_files)
            segment = Segment(segment_id, "", rows, "compact", ())
            return self._commit_replacement(manifest, manifest, segment, written, replaced)

    def recentre(
        self,
        owner: str,
        threshold: float,
        target_recall: float,
        cells: int = 0,
        target_cell_size: int = 2_000,
        max_cell_size: int = 20_000,
        margin: float | None = None,
        sample_size: int = 50_000,
        seed: int = 0,
    ) -> Manifest:
        """Under the lock: train new centroids on the stored vectors (``cells`` of them, else one per
        ``target_cell_size`` records; cells the sample predicts over ``max_cell_size`` are split again, as a batch
        run trains them), with a margin of their own (``margin``, else tuned on the sample for ``target_recall`` of
        the pairs at ``threshold``, as a batch run tunes it: the old cells' margin says nothing of the new borders,
        and a one-cell store's is 0), and write each stored row again into its new cells (nearest, plus those within
        that margin), committed as one segment with the new centroids and margin; the old cell files and centroids
        are deleted after the commit. Records and merges are kept as they are. A stream started on the old centroids
        refuses the store from then on (restart it)."""
        with self._rewriting(owner) as written:
            manifest = self.manifest()
            ids, texts, vectors = self._stored_rows(manifest)
            if not ids:
                raise HistoryError(f"history {self.root} holds no vectors to train centroids on")
            sample = vectors[np.random.default_rng(seed).permutation(len(ids))[:sample_size]]  # spread: see tune_margin

            def margin_for(sample: np.ndarray, centroids: np.ndarray) -> float:
                return margin if margin is not None else tune_margin(sample, centroids, threshold, target_recall).margin

            k = cells or math.ceil(len(ids) / target_cell_size)
            centroids, new_margin = train_partition(sample, k, len(ids), max_cell_size, margin_for, seed)
            assigned = assign_cells(vectors, centroids, new_margin)
            members: list[list[int]] = [[] for _ in range(len(centroids))]
            for row, row_cells in enumerate(assigned):
                for cell in row_cells:
                    members[cell].append(row)
            segment_id = new_segment_id()
            for cell, rows in enumerate(members):
                if rows:
                    table = cell_table([ids[r] for r in rows], [texts[r] for r in rows], [assigned[r] for r in rows],
                                       vectors[rows], manifest.dtype)  # fmt: skip
                    written.append(self.write_table(self.cell_part_path(segment_id, cell), table))
            replaced = [f for cell in range(manifest.cells) for f in manifest.cell_files(cell)]
            moved = replace(
                manifest, cells=len(centroids), centroids=self.write_centroids(centroids), margin=new_margin
            )
            if moved.centroids != manifest.centroids:
                replaced.append(manifest.centroids)
                written.append(moved.centroids)
            segment = Segment(segment_id, "", sum(s.rows for s in manifest.segments), "recentre", ())
            return self._commit_replacement(manifest, moved, segment, written, replaced)

    @contextlib.contextmanager
    def _rewriting(self, owner: str) -> Iterator[list[str]]:
        """Hold the lock while the block writes files (it lists them in the list it is given) and commits: the files
        are deleted again if the block raises, before or instead of committing."""
        self.lock(owner)
        written: list[str] = []
        try:
            yield written
        except BaseException:
            self.discard(written)
            raise
        finally:
            self.unlock(owner)

    def _stored_rows(self, manifest: Manifest) -> tuple[list[str], list[str], np.ndarray]:
        """Every stored row once (from its nearest cell's files): ids, texts and float32 vectors."""
        ids: list[str] = []
        texts: list[str] = []
        vectors: list[np.ndarray] = []
        for cell in range(manifest.cells):
            table = self.read_cell(manifest, cell)
            nearest = pc.equal(pc.list_element(table["cells"], 0), cell)
            table = table.filter(nearest)
            ids += table["id"].to_pylist()
            texts += table["text"].to_pylist()
            if table.num_rows:
                vectors.append(np.stack(table["embedding"].to_numpy(zero_copy_only=False)).astype(np.float32))
        dim = manifest.dim
        return ids, texts, np.concatenate(vectors) if vectors else np.empty((0, dim), np.float32)

    def _commit_replacement(
        self, manifest: Manifest, new: Manifest, segment: Segment, written: list[str], replaced: list[str]
    ) -> Manifest:
        """Commit ``new`` (``manifest`` changed, or not) with one segment: every committed file less ``replaced``,
        plus ``written``; then delete the replaced files."""
        gone = set(replaced)
        kept = [f for s in manifest.segments for f in s.files if f not in gone]
        added = [f for f in written if f != new.centroids]
        segment = replace(segment, committed=_iso(_now()), files=tuple(sorted([*kept, *added])))
        missing = self._missing(list(segment.files))
        if missing:
            raise HistoryError(f"history {self.root}: committed file {missing[0]} is missing")
        committed = self._replace_manifest(
            replace(new, version=manifest.version + 1, segments=(segment,)), manifest.version
        )
        self.discard(replaced)
        return committed

    def discard(self, relatives: Iterable[str]) -> None:
        """Delete files no manifest lists (written, then not committed, or replaced), best effort: one left behind
        is an orphan, invisible to readers."""
        for relative in relatives:
            with contextlib.suppress(OSError):
                self._fs.delete_file(self._path(relative))

    def _compact_records(self, manifest: Manifest, relative: str) -> str:
        """Every committed records file into ``relative``, cluster ids resolved through the merges; one file read at
        a time."""
        merges = self.cluster_merges(manifest)
        old = pa.array(list(merges), pa.string())
        new = pa.array(list(merges.values()), pa.string())
        path = self._path(relative)
        try:
            self._fs.create_dir(posixpath.dirname(path), recursive=True)
            with (
                self._fs.open_output_stream(path) as f,
                pq.ParquetWriter(f, RECORDS_SCHEMA, compression="zstd") as writer,
            ):
                for table in self.read_records(manifest):
                    if len(old):
                        index = pc.index_in(table["cluster_id"], value_set=old)
                        resolved = pc.if_else(pc.is_valid(index), pc.take(new, index), table["cluster_id"])
                        table = table.set_column(table.schema.get_field_index("cluster_id"), "cluster_id", resolved)
                    writer.write_table(table)
        except OSError as e:
            raise self._cannot_write(e) from None
        return relative
