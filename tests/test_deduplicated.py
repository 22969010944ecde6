"""Keep policies, deduplicated/ and removed/ on real Reddit reposts (tests/data/reddit_reposts.jsonl), where a
repost often came later than its original and has the smaller id."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from semsim_core.embeddings_io import embeddings_table
from tests.conftest import REPO, assert_invariants, run_batch, sample_titles, write_jsonl

REPOSTS = REPO / "tests" / "data" / "reddit_reposts.jsonl"
FLAGS = ("--text-field", "title", "--time-field", "created_utc", "--write-deduplicated")
# (earlier post, later repost with the smaller id): exact copies, a near copy, and a chain
EXACT_COPIES = ("ui51l", "12771e")  # "[3FM] Rope", 2012-06-03 and 2012-10-28
NEAR_COPIES = ("vj200", "1edyye")  # "There once was a man from Nantucket" and the same with "..."
# nn8r5 (2011) ~ 18uj93 (2013) ~ vll13 (2012); nn8r5 and vll13 score under the threshold
CHAIN = ("nn8r5", "18uj93", "vll13")


def reposts() -> list[dict]:
    return [json.loads(line) for line in REPOSTS.read_text(encoding="utf-8").splitlines()]


def bad_times() -> list[dict]:
    """Two real titles whose time field is missing or not a time."""
    first, second = sample_titles(2)
    return [
        {"id": first["id"], "title": first["text"]},
        {"id": second["id"], "title": second["text"], "created_utc": "last tuesday"},
    ]


def kept_of(batch, record_id: str) -> str:
    return batch.clusters.set_index("id").loc[record_id, "cluster_id"]


def pair_scores(batch) -> dict[frozenset, float]:
    return {frozenset((p.id_a, p.id_b)): p.score for p in batch.pairs.itertuples()}


def check_deduplicated(batch, output: Path, accepted: list[dict]) -> pd.DataFrame:
    """deduplicated/ holds exactly the kept records, with every input field; with removed/ it covers every accepted
    record once."""
    table = pq.read_table(output / "deduplicated")
    kept = set(batch.clusters.loc[batch.clusters["is_representative"], "id"])
    rows = table.to_pandas()
    assert batch.summary.deduplicated == len(rows) == len(kept) and set(rows["id"]) == kept
    assert set(rows["id"]).isdisjoint(batch.removed["id"])
    assert len(rows) + len(batch.removed) == batch.summary.accepted == len(accepted)
    by_id = {r["id"]: r for r in accepted}
    for row in rows.to_dict("records"):
        assert row == by_id[row["id"]], "every field, as read"
    return table


def test_keep_earliest_removed_paths_and_dead_letters(tmp_path):
    records = reposts()
    source = write_jsonl(tmp_path / "reposts.jsonl", records + bad_times())
    batch = run_batch(tmp_path / "out", "--input", str(source), *FLAGS)
    assert_invariants(batch)
    assert batch.summary.keep == "earliest" and batch.summary.read.time_field == "created_utc"
    errors = sorted(batch.dead_letters["error"])
    assert errors == ["field 'created_utc' is 'last tuesday': expected Unix seconds or an ISO 8601 time",
                      "missing time field 'created_utc'"]  # fmt: skip
    assert kept_of(batch, EXACT_COPIES[1]) == EXACT_COPIES[0], "the earlier post, not the smaller id"
    assert kept_of(batch, NEAR_COPIES[1]) == NEAR_COPIES[0]
    assert {kept_of(batch, i) for i in CHAIN} == {"nn8r5"}

    removed = batch.removed.set_index("id")
    scores = pair_scores(batch)
    assert removed.loc["12771e", "kind"] == "exact" and list(removed.loc["12771e", "via"]) == ["12771e", "ui51l"]
    assert list(removed.loc["vll13", "via"]) == ["vll13", "18uj93", "nn8r5"], "transitive: through the 2013 post"
    assert frozenset(("vll13", "nn8r5")) not in scores
    for row in batch.removed.itertuples():  # each path is a chain of reported pairs; its weakest pair is the score
        links = [frozenset(link) for link in zip(row.via, row.via[1:], strict=False)]
        assert all(link in scores for link in links) and row.via[-1] == row.kept_id
        assert row.score == pytest.approx(min(scores[link] for link in links))
    assert batch.summary.removed == len(batch.removed) > 5

    table = check_deduplicated(batch, tmp_path / "out", records)
    types = {f.name: f.type for f in table.schema}
    assert types == {"id": pa.string(), "title": pa.string(), "created_utc": pa.float64(), "subreddit": pa.string(),
                     "score": pa.int64(), "is_self": pa.bool_()}  # fmt: skip


def test_first_id_and_longest_over_two_formats(tmp_path):
    records = reposts()
    half = len(records) // 2
    write_jsonl(tmp_path / "a.jsonl", records[:half])
    table = pa.Table.from_pylist(records[half:])
    pq.write_table(table.set_column(4, "score", table.column("score").cast(pa.int32())), tmp_path / "b.parquet")
    inputs = ("--input", str(tmp_path / "a.jsonl"), "--input", str(tmp_path / "b.parquet"))

    first_id = run_batch(tmp_path / "first", *inputs, *FLAGS, "--keep", "first-id")
    assert_invariants(first_id)
    assert kept_of(first_id, EXACT_COPIES[0]) == EXACT_COPIES[1], "the smaller id, though it came later"
    assert kept_of(first_id, "nn8r5") == "18uj93"

    longest = run_batch(tmp_path / "longest", *inputs, *FLAGS, "--keep", "longest")
    assert_invariants(longest)
    assert kept_of(longest, NEAR_COPIES[0]) == NEAR_COPIES[1], "the title with the trailing dots"
    assert longest.summary.keep == "longest"
    deduplicated = check_deduplicated(longest, tmp_path / "longest", records)
    assert deduplicated.schema.field("score").type == pa.int64(), "int64 (JSON) and int32 (Parquet) unify as int64"


def test_saved_embeddings_with_the_input_for_its_fields(tmp_path):
    """--input-embeddings with --input: the input is the record set (times, fields, texts), the saved vectors are
    looked up by id; a record without a saved vector is a dead letter, a saved vector without a record is counted."""
    records = reposts()
    first = run_batch(tmp_path / "first", "--input", str(write_jsonl(tmp_path / "all.jsonl", records)), *FLAGS[:2],
                      "--write-embeddings")  # fmt: skip
    sizes = first.clusters.set_index("id")["cluster_size"]
    alone = next(r for r in records if sizes[r["id"]] == 1)  # its vector will be unused
    new, zeros = sample_titles(2)  # not in the saved embeddings; saved as all zeros
    added = [{"id": r["id"], "title": r["text"], "created_utc": 1.4e9} for r in (new, zeros)]
    source = write_jsonl(tmp_path / "input.jsonl", [r for r in records if r is not alone] + added)
    folder = tmp_path / "first" / "embeddings"
    bad = folder / "bad.parquet"
    pq.write_table(embeddings_table([zeros["id"]], np.zeros((1, 384), np.float32)), bad)
    saved = ("--input-embeddings", str(folder))
    batch = run_batch(tmp_path / "out", "--input", str(source), *saved, *FLAGS)
    assert_invariants(batch)
    assert batch.summary.model is None and "model_loads" not in batch.counters
    assert batch.counters["unused_embeddings"] == 1
    assert (batch.counters["inputs"], batch.counters["dead_letters"]) == (batch.summary.inputs, 2), "the run's own"
    assert batch.counters["saved_inputs"] == len(records) + 1 and batch.counters["saved_dead_letters"] == 1
    assert sorted(batch.dead_letters["error"]) == [
        f"id {new['id']!r} has no vector in --input-embeddings {folder}",
        f"the vector of id {zeros['id']!r} in --input-embeddings is unusable ({bad}:1: embedding is all zeros)",
    ]
    assert pair_scores(batch) == pair_scores(first), "the saved vectors, bit for bit"
    assert kept_of(batch, EXACT_COPIES[1]) == EXACT_COPIES[0], "earliest, from the input's times"
    check_deduplicated(batch, tmp_path / "out", [r for r in records if r is not alone])
