"""The history store (semsim_core/history.py) on real Parquet files, and `semsim history`."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pytest

from pipelines import history_cli
from semsim_core.history import (
    LATER_COLUMNS,
    MERGES_SCHEMA,
    RECORDS_SCHEMA,
    SCHEMA_VERSION,
    History,
    HistoryError,
    Manifest,
    Segment,
    cell_schema,
    check_compatible,
    new_segment_id,
)

DIM = 4
CELLS = 3
CENTROIDS = np.eye(CELLS, DIM, dtype=np.float32)


def _manifest(dtype: str = "float32") -> Manifest:
    return Manifest(
        model="all-MiniLM-L6-v2", fingerprint="abc", dim=DIM, dtype=dtype, margin=0.05, centroids="", cells=CELLS
    )


def _cell_table(ids: list[str], cells: list[list[int]], dtype: str = "float32", seed: int = 0) -> pa.Table:
    vectors = np.random.default_rng(seed).standard_normal((len(ids), DIM)).astype(dtype)
    embedding = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), DIM)
    columns = [pa.array(ids), pa.array([f"text {i}" for i in ids]), pa.array(cells, pa.list_(pa.int32())), embedding]
    return pa.Table.from_arrays(columns, schema=cell_schema(DIM, dtype))


def _records_table(
    ids: list[str], clusters: list[str], embedded: list[bool] | None = None, lengths: list[int] | None = None
) -> pa.Table:
    """Records rows; without ``lengths``, as schema 1 wrote them (no ``text_length`` column)."""
    moment = datetime(2026, 1, 2, tzinfo=UTC)
    data = {
        "id": ids,
        "text_hash": [f"h{i}" for i in ids],
        "event_time": [moment] * len(ids),
        "cluster_id": clusters,
        "embedded": embedded if embedded is not None else [True] * len(ids),
    }
    if lengths is None:
        return pa.Table.from_pydict(data, schema=pa.schema([f for f in RECORDS_SCHEMA if f.name not in LATER_COLUMNS]))
    return pa.Table.from_pydict({**data, "text_length": lengths}, schema=RECORDS_SCHEMA)


def _write_segment(
    history: History,
    rows: dict[int, pa.Table],
    records: pa.Table,
    merges: list[tuple[str, str]] = (),
    segment_id: str | None = None,
) -> Segment:
    segment_id = segment_id or new_segment_id()
    files = [history.write_table(history.cell_part_path(segment_id, cell), table) for cell, table in rows.items()]
    files.append(history.write_table(f"records/{segment_id}-0.parquet", records))
    if merges:
        table = pa.Table.from_pylist([{"from_cluster_id": a, "to_cluster_id": b} for a, b in merges], MERGES_SCHEMA)
        files.append(history.write_table(f"merges/{segment_id}-0.parquet", table))
    return Segment(segment_id, "", records.num_rows, "out/run", tuple(files))


def _first(history: History, dtype: str = "float32") -> Manifest:
    """A history with one segment: a, b in cell 0 (b also in cell 1), c in cell 2."""
    segment = _write_segment(
        history,
        {
            0: _cell_table(["a", "b"], [[0], [0, 1]], dtype),
            1: _cell_table(["b"], [[0, 1]], dtype),
            2: _cell_table(["c"], [[2]], dtype, seed=1),
        },
        _records_table(["a", "b", "c"], ["a", "a", "c"]),
    )
    return history.commit(_manifest(dtype), segment, None, centroids=CENTROIDS)


def _second(history: History, manifest: Manifest) -> Manifest:
    """A second segment: d in cell 0 joins clusters a and c (c -> a), e copies d."""
    dtype = manifest.dtype
    segment = _write_segment(
        history,
        {0: _cell_table(["d"], [[0, 2]], dtype, seed=2), 2: _cell_table(["d"], [[0, 2]], dtype, seed=2)},
        _records_table(["d", "e"], ["a", "a"], [True, False], [6, 6]),
        merges=[("c", "a")],
    )
    return history.commit(manifest, segment, manifest.version)


def test_create_append_and_read(tmp_path):
    history = History(str(tmp_path / "h"))
    assert not history.exists()
    with pytest.raises(HistoryError, match="does not exist"):
        history.manifest()
    first = _first(history)
    assert history.exists() and first.version == 1 and len(first.segments) == 1
    assert first.centroids.startswith("centroids-") and first.centroids.endswith(".npy")
    assert history.manifest() == first
    np.testing.assert_array_equal(history.centroids(first), CENTROIDS)
    assert history.write_centroids(CENTROIDS) == first.centroids  # content-addressed: the same name, written once
    assert first.segments[0].committed.endswith("Z")
    raw = json.loads((tmp_path / "h" / "manifest.json").read_bytes())
    assert raw["format"] == "semsim-history" and raw["schema_version"] == SCHEMA_VERSION and raw["cells"] == CELLS

    second = _second(history, first)
    assert second.version == 2 and [s.id for s in second.segments][0] == first.segments[0].id
    assert len(second.segments) == 2 and second.centroids == first.centroids
    cell0 = history.read_cell(second, 0)
    assert sorted(cell0["id"].to_pylist()) == ["a", "b", "d"]
    assert cell0.schema == cell_schema(DIM)
    assert history.read_cell(second, 1, ["id"]).to_pylist() == [{"id": "b"}]
    assert sum(t.num_rows for t in history.read_records(second)) == 5
    assert history.manifest().cell_files(2) == second.files("cell=00002/")
    with pytest.raises(ValueError, match="no such history columns"):
        history.read_cell(second, 0, ["nope"])


def test_commit_is_idempotent_and_refuses_a_stale_version(tmp_path):
    history = History(str(tmp_path / "h"))
    first = _first(history)
    again = history.commit(_manifest(), first.segments[0], None, centroids=CENTROIDS)  # a retried create
    assert again == first
    second = _second(history, first)
    assert history.commit(first, second.segments[-1], first.version) == second  # a retried append
    late = _write_segment(history, {0: _cell_table(["x"], [[0]])}, _records_table(["x"], ["x"]))
    with pytest.raises(HistoryError, match=r"changed since this run started \(version 2, expected 1\)"):
        history.commit(first, late, first.version)
    with pytest.raises(HistoryError, match="another writer created it"):
        history.commit(_manifest(), late, None, centroids=CENTROIDS)
    missing = Segment("s-missing", "", 1, "r", ("cell=00000/gone.parquet",))
    with pytest.raises(HistoryError, match="gone.parquet is missing"):
        history.commit(second, missing, second.version)
    assert history.manifest() == second


def test_orphans_are_invisible_and_listed(tmp_path):
    history = History(str(tmp_path / "h"))
    first = _first(history)
    orphan = history.write_table(history.cell_part_path(new_segment_id(), 0), _cell_table(["z"], [[0]]))
    assert "z" not in history.read_cell(first, 0)["id"].to_pylist()
    info = history.info()
    assert info["orphans"] == [orphan]
    assert info["records"] == 3 and info["embedded"] == 3 and info["segments"] == 1 and info["files"] == 4
    assert info["cell_rows"] == {"min": 0, "median": 1, "max": 2}  # b counts in cell 0 only, its nearest
    assert info["bytes"] > 0 and info["merges"] == 0 and info["lock"] is None
    assert info["model"] == "all-MiniLM-L6-v2" and info["dim"] == DIM and info["version"] == 1


def test_float16_round_trip(tmp_path):
    history = History(str(tmp_path / "h"))
    manifest = _first(history, "float16")
    table = history.read_cell(manifest, 0)
    assert table.schema.field("embedding").type == pa.list_(pa.float32(), DIM)
    expected = np.random.default_rng(0).standard_normal((2, DIM)).astype(np.float32)
    got = np.stack(table["embedding"].to_numpy(zero_copy_only=False))
    np.testing.assert_allclose(got, expected, atol=1e-3, rtol=1e-3)
    part = history.write_table(history.cell_part_path(new_segment_id(), 0), _cell_table(["n"], [[0]], "float16"))
    new = history.read_files([part, *manifest.cell_files(0)], ["id", "embedding"])  # a run's own parts, uncommitted
    assert new["id"].to_pylist() == ["n", "a", "b"] and new.schema.field("embedding").type == pa.list_(
        pa.float32(), DIM
    )
    with pytest.raises(HistoryError, match="file cell=00000/gone.parquet is missing"):
        history.read_files(["cell=00000/gone.parquet"])


def test_missing_and_corrupt_files(tmp_path):
    history = History(str(tmp_path / "h"))
    manifest = _first(history)
    path = manifest.cell_files(0)[0]
    (tmp_path / "h" / path).write_bytes(b"not parquet at all")
    with pytest.raises(HistoryError, match=f"committed file {path} is corrupt"):
        history.read_cell(manifest, 0)
    with pytest.raises(HistoryError, match=f"committed file {path} is corrupt"):
        history.verify(manifest)
    (tmp_path / "h" / path).unlink()
    with pytest.raises(HistoryError, match=f"committed file {path} is missing"):
        history.read_cell(manifest, 0)
    with pytest.raises(HistoryError, match=f"committed file {path} is missing"):
        history.verify(manifest)
    (tmp_path / "h" / manifest.centroids).write_bytes(b"junk")
    with pytest.raises(HistoryError, match="is corrupt"):
        history.centroids(manifest)


def test_newer_and_corrupt_manifests_are_refused(tmp_path):
    history = History(str(tmp_path / "h"))
    _first(history)
    path = tmp_path / "h" / "manifest.json"
    raw = json.loads(path.read_bytes())
    path.write_text(json.dumps({**raw, "schema_version": SCHEMA_VERSION + 1}))
    with pytest.raises(
        HistoryError,
        match=rf"written by a newer semsim \(schema {SCHEMA_VERSION + 1}; this one reads {SCHEMA_VERSION}\)",
    ):
        history.manifest()
    path.write_text('{"format": "semsim-history", "schema_ver')
    with pytest.raises(HistoryError, match="manifest.json is corrupt"):
        history.manifest()
    path.write_text(json.dumps({k: v for k, v in raw.items() if k != "cells"}))
    with pytest.raises(HistoryError, match="manifest.json is corrupt: no key 'cells'"):
        history.manifest()
    path.write_text(json.dumps({**raw, "format": "other"}))
    with pytest.raises(HistoryError, match="not a semsim history"):
        history.manifest()


def test_lock_is_exclusive_and_stale_locks_are_taken_over(tmp_path):
    history = History(str(tmp_path / "h"))
    history.lock("run-a")
    history.lock("run-a")  # this process holds it already
    assert history.lock_holder()["owner"] == "run-a"
    with pytest.raises(HistoryError, match=r"is locked by run-a \(pid \d+ on .* since .*\): another semsim run") as e:
        history.lock("run-b")
    assert f"semsim history unlock {history.root}" in str(e.value)
    history.unlock("run-b")  # not its lock: left alone
    assert history.lock_holder()["owner"] == "run-a"
    history.unlock("run-a")
    assert history.lock_holder() is None

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = {"owner": "crashed", "host": socket.gethostname(), "pid": dead.pid, "since": "2026-01-01T00:00:00Z"}
    (tmp_path / "h" / "_lock").write_text(json.dumps(stale))
    history.lock("run-b")
    assert history.lock_holder()["owner"] == "run-b" and history.lock_holder()["pid"] == os.getpid()
    elsewhere = {**stale, "host": "another-host"}
    (tmp_path / "h" / "_lock").write_text(json.dumps(elsewhere))
    with pytest.raises(HistoryError, match="is locked by crashed"):
        history.lock("run-c")  # a dead pid on another host proves nothing
    history.unlock()
    assert history.lock_holder() is None


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_read_only_location(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(HistoryError, match="cannot write to history .*: Permission denied"):
            History(str(folder)).lock("run")
        with pytest.raises(HistoryError, match="cannot write to history"):
            History(str(folder / "h")).write_table("records/x.parquet", _records_table(["a"], ["a"]))
    finally:
        folder.chmod(0o700)


def test_cluster_merges_resolve_chains(tmp_path):
    """Chains resolve to their end; an id merged twice (a stream's cells can replace one id twice) joins both
    clusters; a merge between ids already joined (the reverse of one) changes nothing."""
    history = History(str(tmp_path / "h"))
    manifest = _first(history)
    for merges in ([("a", "b"), ("x", "y")], [("b", "c")], [("x", "z"), ("c", "a"), ("q", "q")]):
        segment = _write_segment(history, {}, _records_table([], []), merges)
        manifest = history.commit(manifest, segment, manifest.version)
    assert history.cluster_merges(manifest) == {"a": "c", "b": "c", "x": "z", "y": "z"}


def test_check_compatible():
    manifest = _manifest()
    check_compatible(manifest, "all-MiniLM-L6-v2", "abc", DIM)
    check_compatible(manifest, "all-MiniLM-L6-v2", None, None)
    check_compatible(manifest, "sentence-transformers/all-MiniLM-L6-v2", "abc", DIM)  # the same weights, named apart
    with pytest.raises(
        HistoryError, match=r"history H was built with model all-MiniLM-L6-v2 \(fingerprint abc, dim 4\)"
    ):
        check_compatible(manifest, "other-model", None, 8, root="H")
    with pytest.raises(HistoryError, match="this run uses model all-MiniLM-L6-v2 \\(fingerprint zzz"):
        check_compatible(manifest, "all-MiniLM-L6-v2", "zzz", None)
    with pytest.raises(HistoryError, match="dim 8"):
        check_compatible(manifest, "all-MiniLM-L6-v2", "abc", 8)


def _contents(history: History, manifest: Manifest) -> dict:
    cells = {}
    for cell in range(manifest.cells):
        table = history.read_cell(manifest, cell).sort_by("id")
        cells[cell] = (table["id"].to_pylist(), np.stack(table["embedding"].to_numpy(zero_copy_only=False)))
    return cells


def test_compact(tmp_path):
    history = History(str(tmp_path / "h"))
    before = _second(history, _first(history, "float16"))
    orphan = history.write_table(history.cell_part_path(new_segment_id(), 1), _cell_table(["z"], [[1]]))
    data = _contents(history, before)
    old_files = [f for s in before.segments for f in s.files]

    after = history.compact("compactor")
    assert after.version == before.version + 1 and len(after.segments) == 1
    segment = after.segments[0]
    assert segment.run == "compact" and segment.rows == 5
    assert all(len(after.cell_files(c)) == 1 for c in range(CELLS))
    assert len(after.files("records/")) == 1 and after.files("merges/") == []
    assert history.manifest() == after and history.lock_holder() is None
    for cell, (ids, vectors) in _contents(history, after).items():
        assert ids == data[cell][0]
        np.testing.assert_array_equal(vectors, data[cell][1])
    records = pa.concat_tables(history.read_records(after)).sort_by("id")
    assert records["cluster_id"].to_pylist() == ["a", "a", "a", "a", "a"]  # c -> a resolved
    assert records["embedded"].to_pylist() == [True, True, True, True, False]
    assert records["text_length"].to_pylist() == [None, None, None, 6, 6]  # schema 1 files had no lengths
    assert history.cluster_merges(after) == {}
    on_disk = {str(p.relative_to(tmp_path / "h")) for p in (tmp_path / "h").rglob("*") if p.is_file()}
    assert orphan in on_disk and history.info()["orphans"] == [orphan]
    replaced = set(old_files) - set(segment.files)
    assert replaced and not replaced & on_disk  # the replaced files are deleted
    assert history.compact("compactor") == after  # compact already: nothing to do


def test_compact_leaves_bad_data_alone(tmp_path):
    history = History(str(tmp_path / "h"))
    before = _second(history, _first(history))
    broken = before.cell_files(0)[1]
    (tmp_path / "h" / broken).write_bytes(b"junk")
    listing = sorted(p for p in (tmp_path / "h").rglob("*") if p.is_file())
    with pytest.raises(HistoryError, match="is corrupt"):
        history.compact("compactor")
    assert history.manifest() == before and history.lock_holder() is None
    assert sorted(p for p in (tmp_path / "h").rglob("*") if p.is_file()) == listing
    history.lock("someone")
    with pytest.raises(HistoryError, match="is locked by someone"):
        history.compact("compactor")
    assert history.lock_holder()["owner"] == "someone"


def test_cli(tmp_path, capsys):
    root = str(tmp_path / "h")
    history = History(root)
    _second(history, _first(history))
    assert history_cli.main(["info", root]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["segments"] == 2 and info["records"] == 5 and info["embedded"] == 4 and info["merges"] == 1
    assert info["keep"] == "first-id"

    assert history_cli.main(["compact", root]) == 0
    out = capsys.readouterr().out
    assert "2 segments, 8 files (version 2) -> 1 segments, 4 files (version 3)" in out

    history.lock("live-run")  # this process: running on this host
    assert history_cli.main(["unlock", root]) == 2
    assert "which is still running on this host: stop it first" in capsys.readouterr().err
    assert history_cli.main(["unlock", root, "--force"]) == 0
    assert "it was locked by live-run" in capsys.readouterr().out and history.lock_holder() is None
    assert history_cli.main(["unlock", root]) == 0
    assert "is not locked" in capsys.readouterr().out

    for command in ("info", "unlock"):  # a mistyped path is not "not locked"
        assert history_cli.main([command, str(tmp_path / "nowhere")]) == 2
        assert "does not exist (no manifest.json)" in capsys.readouterr().err
    with pytest.raises(SystemExit) as refused:  # argparse's exit, as the installed command exits
        history_cli.main(["frobnicate", root])
    assert refused.value.code == 2 and "semsim history: error:" in capsys.readouterr().err


def test_through_a_uri_filesystem():
    """Every read and write goes through pyarrow.fs: the same steps work on a non-local filesystem (mock://)."""
    history = History("mock:///h")
    manifest = _second(history, _first(history))
    history.lock("run-a")
    with pytest.raises(HistoryError, match="is locked by run-a"):
        history.lock("run-b")
    history.unlock("run-a")
    after = history.compact("compactor")
    assert after.version == manifest.version + 1 and history.info()["files"] == 4 and history.info()["orphans"] == []
