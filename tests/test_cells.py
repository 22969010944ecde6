"""k-means cells: pairs against exact all-pairs, oversized-cell splitting, saved centroids."""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import semsim_core.cells as cells_module
from semsim_core.cells import (
    assign_cells,
    bounded_cell_pairs,
    owning_cell,
    rows_by_cell,
    split_oversized,
    train_centroids,
    tune_margin,
)
from semsim_core.embeddings_io import embeddings_table, parse_embeddings
from semsim_core.pairs import threshold_pairs
from semsim_core.records import EmbeddedRecord
from tests.conftest import (
    SAMPLE_PARAPHRASES,
    assert_invariants,
    borderline_pairs,
    run_batch,
    sample_titles,
    stsb_captions,
    write_jsonl,
)
from transforms.embeddings_io import saved_dimension
from transforms.vector_blocks import SmallestIdHashes, VectorBlock, id_hashes


@pytest.fixture(scope="module")
def stsb(stsb_test_vectors):
    sentences, vectors = stsb_test_vectors
    return [f"s{i:05d}" for i in range(len(sentences))], vectors


def cell_pairs(ids, vectors, centroids, margin, threshold):
    """All pairs found cell by cell, each kept only by its owning cell, as a list (duplicates would show)."""
    cells = assign_cells(vectors, centroids, margin)
    members = rows_by_cell(cells)
    found = []
    for cell, rows in members.items():
        for pair in threshold_pairs([ids[r] for r in rows], vectors[rows], threshold):
            if owning_cell(cells[ids.index(pair.id_a)], cells[ids.index(pair.id_b)]) == cell:
                found.append((pair.id_a, pair.id_b))
    return found


def test_margin_covering_all_borders_gives_exact_pairs(stsb):
    ids, vectors = stsb
    centroids = train_centroids(vectors, 8)
    exact = {(p.id_a, p.id_b) for p in threshold_pairs(ids, vectors, 0.75)}
    found = cell_pairs(ids, vectors, centroids, margin=2.0, threshold=0.75)
    assert len(found) == len(set(found)), "a pair is reported by one cell only"
    borderline = borderline_pairs(ids, vectors, 0.75)  # searched in other blocks, another summation order
    assert set(found) - borderline == exact - borderline


@pytest.mark.parametrize("cells", [4, 16, 32])
def test_a_margin_tuned_on_a_sample_keeps_the_target_recall(stsb, cells):
    """STSb test sentences at forced cell counts: the margin tune_margin picks on a sample of half of them keeps at
    least the target recall of the exact pairs at 0.8 on all of them, and every pair found is a true one."""
    ids, vectors = stsb
    shuffled = np.random.default_rng(cells).permutation(len(ids))
    sample = vectors[shuffled[: len(ids) // 2]]
    centroids = train_centroids(sample, cells)
    estimate = tune_margin(sample, centroids, 0.8, 0.995)
    assert estimate.pairs >= 300 and 0 < estimate.margin < 0.5, estimate
    exact = {(p.id_a, p.id_b) for p in threshold_pairs(ids, vectors, 0.8)}
    found = cell_pairs(ids, vectors, centroids, estimate.margin, 0.8)
    borderline = borderline_pairs(ids, vectors, 0.8)
    assert len(found) == len(set(found)) and set(found) - borderline <= exact, "precision 1"
    assert len(set(found) & exact) / len(exact) >= 0.995, (estimate, len(set(found) & exact), len(exact))
    assert len(cell_pairs(ids, vectors, centroids, 0.0, 0.8)) < len(exact), "without a margin, pairs are lost"


def test_one_cell_needs_no_margin(stsb):
    assert tune_margin(stsb[1][:500], train_centroids(stsb[1][:500], 1), 0.8, 0.995).margin == 0.0


def test_oversized_cell_searched_in_bounded_pieces(stsb, monkeypatch):
    """One cell of all STSb test sentences, over a bound of 600: searched in sub-cells of at most 600, whose own
    tuned margin keeps the target recall (with the one-cell margin 0.0 the sub-cells kept 93% of the pairs, with a
    fixed 0.1 97%), each pair once."""
    ids, vectors = stsb
    sizes = []
    real_search = cells_module.threshold_pairs
    monkeypatch.setattr(cells_module, "threshold_pairs", lambda i, v, t: sizes.append(len(i)) or real_search(i, v, t))
    found = bounded_cell_pairs(ids, vectors, 0.8, max_cell_size=600, target_recall=0.995)
    exact = {(p.id_a, p.id_b) for p in threshold_pairs(ids, vectors, 0.8)}
    assert len(ids) > 4 * 600 and len(sizes) > 4 and max(sizes) <= 600
    assert len({(p.id_a, p.id_b) for p in found}) == len(found)
    borderline = borderline_pairs(ids, vectors, 0.8)
    assert {(p.id_a, p.id_b) for p in found} - borderline <= exact, "precision 1"
    assert len({(p.id_a, p.id_b) for p in found} & exact) / len(exact) >= 0.99


def test_the_id_hash_sample_is_the_same_whatever_the_blocks(stsb):
    """The k-means and recall samples are the smallest id hashes, in hash order, whichever blocks and bundles the
    vectors came in."""
    ids, vectors = stsb
    texts = [f"text of {i}" for i in ids]
    expected = [ids[row] for row in np.argsort(id_hashes(ids))[:300]]
    sampler = SmallestIdHashes(300)
    samples = []
    for cuts in ([0, len(ids)], [0, 1, 700, 701, 2000, len(ids)], list(range(0, len(ids), 97)) + [len(ids)]):
        order = np.random.default_rng(len(cuts)).permutation(len(ids))
        pieces = [order[a:b] for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
        blocks = [VectorBlock([ids[r] for r in rows], vectors[rows], [texts[r] for r in rows]) for rows in pieces]
        bundles = [sampler.create_accumulator() for _ in range(3)]
        for k, block in enumerate(blocks):
            bundles[k % 3] = sampler.add_input(bundles[k % 3], block)
        samples.append(sampler.extract_output(sampler.merge_accumulators(bundles)))
    for sample in samples:
        assert sample.ids == expected
        rows = [ids.index(i) for i in expected]
        assert np.array_equal(sample.vectors, vectors[rows]) and sample.texts == [texts[r] for r in rows]
    larger = SmallestIdHashes(len(ids) + 1)  # fewer vectors than the sample holds: all of them, in hash order
    one_bundle = larger.add_input(larger.create_accumulator(), VectorBlock(ids, vectors, texts))
    everything = larger.extract_output(larger.merge_accumulators([one_bundle]))
    assert everything.ids == [ids[row] for row in np.argsort(id_hashes(ids))]
    empty = sampler.extract_output(sampler.merge_accumulators([sampler.create_accumulator()] * 2))
    assert len(empty) == 0


def test_split_oversized_balances_a_skewed_sample(embedder):
    """Captions (STSb MSRvid/images: 'A man is playing a guitar.') crowd one region; Reddit titles spread out."""
    vectors = embedder.encode(stsb_captions()[:700] + [r["text"] for r in sample_titles(300)])
    centroids = train_centroids(vectors, 2)
    before = np.bincount([c[0] for c in assign_cells(vectors, centroids, 0.0)])
    split = split_oversized(vectors, centroids, len(vectors), max_cell_size=250, margin=0.0)
    after = np.bincount([c[0] for c in assign_cells(vectors, split, 0.0)])
    assert before.max() > 250 >= after.max()
    assert len(split) > 2


def test_skewed_corpus_pipeline_bounds_cells_and_roundtrips_centroids(tmp_path):
    rows = [{"id": f"cap{i:04d}", "text": s} for i, s in enumerate(stsb_captions()[:600])]
    rows += [{"id": r["id"], "text": r["text"]} for r in sample_titles(150)]
    source = write_jsonl(tmp_path / "skewed.jsonl", rows)
    flags = ["--input", str(source), "--cells", "2", "--max-cell-size", "200", "--cell-margin", "0.05"]
    first = run_batch(tmp_path / "first", *flags)
    assert_invariants(first)
    assert first.summary.cells > 2 and first.summary.largest_cell <= 200

    centroids = tmp_path / "first" / "centroids.npy"
    again = run_batch(tmp_path / "again", *flags, "--centroids", str(centroids))
    np.testing.assert_allclose(np.load(centroids), np.load(tmp_path / "again" / "centroids.npy"), atol=1e-6)
    assert again.summary.cells == first.summary.cells
    key = ["id_a", "id_b"]
    assert (
        again.pairs.sort_values(key).reset_index(drop=True).equals(first.pairs.sort_values(key).reset_index(drop=True))
    )
    assert again.summary.semantic_pairs == first.summary.semantic_pairs


def test_a_given_cell_over_the_bound_keeps_its_pairs(tmp_path):
    """One given centroid with margin 0.0 (a one-cell history store's) over 750 records and a bound of 100: the cell
    is searched in sub-cells with a margin of their own, so the pairs are those of the unbounded run (before, the
    sub-cells took the cell's margin 0.0 and lost pairs at their borders)."""
    rows = [{"id": f"cap{i:04d}", "text": s} for i, s in enumerate(stsb_captions()[:600])]
    rows += [{"id": r["id"], "text": r["text"]} for r in sample_titles(150)]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    one_cell = run_batch(tmp_path / "one", "--input", str(source), "--cells", "1")
    assert one_cell.summary.cells == 1 and one_cell.summary.cell_margin == 0.0
    given = ["--input", str(source), "--centroids", str(tmp_path / "one" / "centroids.npy"), "--cell-margin", "0"]
    bounded = run_batch(tmp_path / "bounded", *given, "--max-cell-size", "100")
    assert_invariants(bounded)
    exact = set(zip(one_cell.pairs["id_a"], one_cell.pairs["id_b"], strict=True))
    found = set(zip(bounded.pairs["id_a"], bounded.pairs["id_b"], strict=True))
    assert bounded.summary.largest_cell == 750 and found <= exact
    assert len(found) / len(exact) >= 0.99, (len(found), len(exact))


def test_bad_centroids_file_is_one_line(tmp_path, capsys):
    from pipelines.cli import main

    source = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "text": "A girl is styling her hair."}])
    (tmp_path / "c.npy").write_bytes(b"not numpy")
    args = ["batch", "--input", str(source), "--output", str(tmp_path / "out"), "--centroids", str(tmp_path / "c.npy")]
    assert main(args) == 2
    assert capsys.readouterr().err.startswith(f"semsim batch: error: cannot read --centroids '{tmp_path}/c.npy'")


def test_embeddings_round_trip_without_the_model(tmp_path):
    rows = [json.loads(line) for line in SAMPLE_PARAPHRASES.read_text(encoding="utf-8").splitlines()[:60]]
    rows += [{"id": r["id"], "text": r["text"]} for r in sample_titles(200)]
    rows += [{"id": "copy-of-first", "text": rows[0]["text"].upper()}]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    # fp32 vectors: a run from saved embeddings cannot rescore (no texts), so it equals an fp32 run
    from_text = run_batch(
        tmp_path / "text", "--input", str(source), "--write-embeddings", "--cells", "3", "--backend", "torch"
    )
    embeddings = pq.read_table(tmp_path / "text" / "embeddings")
    assert embeddings.schema.field("embedding").type == pa.list_(pa.float32(), 384)
    assert sorted(embeddings.column("id").to_pylist()) == sorted(from_text.clusters["id"])
    assert not list((tmp_path / "text").glob("*/*temp*")) and not list((tmp_path / "text").glob("*/.temp*"))

    key = ["id_a", "id_b"]
    again = run_batch(tmp_path / "again", "--input-embeddings", str(tmp_path / "text" / "embeddings"), "--cells", "3")
    assert_invariants(again)
    assert "model_loads" not in again.counters and again.summary.model is None
    assert again.pairs.sort_values(key, ignore_index=True).equals(from_text.pairs.sort_values(key, ignore_index=True))
    assert again.clusters.sort_values("id", ignore_index=True).equals(
        from_text.clusters.sort_values("id", ignore_index=True)
    )

    strict = run_batch(
        tmp_path / "strict", "--input-embeddings", str(tmp_path / "text" / "embeddings"), "--threshold", "0.9"
    )
    ids = embeddings.column("id").to_pylist()
    vectors = np.stack(embeddings.column("embedding").to_numpy(zero_copy_only=False)).astype(np.float32)
    sims = vectors.astype(np.float64) @ vectors.T.astype(np.float64)
    copy = max("copy-of-first", rows[0]["id"])  # the exact group's other member is its representative
    upper = zip(*np.nonzero(np.triu(sims >= 0.9, k=1)), strict=True)
    expected = {(min(ids[i], ids[j]), max(ids[i], ids[j])) for i, j in upper}
    expected = {pair for pair in expected if copy not in pair} | {tuple(sorted(("copy-of-first", rows[0]["id"])))}
    borderline = borderline_pairs(ids, vectors, 0.9)
    assert set(map(tuple, strict.pairs[key].values)) - borderline == expected - borderline
    assert len(strict.pairs) < len(again.pairs)


def test_bad_embedding_rows_are_dead_letters(tmp_path):
    table = pa.table(
        {
            "id": ["ok", "short", "nan", "zero", None, "null"],
            "embedding": [
                [0.6, 0.8, 0.0],
                [1.0, 0.0],
                [float("nan"), 0.0, 1.0],
                [0.0, 0.0, 0.0],
                [1.0, 0.0, 0.0],
                None,
            ],
        }
    )
    pq.write_table(table, tmp_path / "e.parquet")
    with open(tmp_path / "e.parquet", "rb") as f:
        items = list(parse_embeddings("e.parquet", f))
    assert isinstance(items[0], EmbeddedRecord) and items[0].vector.dtype == np.float32
    np.testing.assert_allclose(items[0].vector, [0.6, 0.8, 0.0], rtol=1e-6)
    assert [getattr(i, "error", None) for i in items[1:]] == [
        "embedding has 2 values, expected 3",
        "embedding has non-finite values",
        "embedding is all zeros",
        "field 'id' is missing or empty",
        "field 'embedding' is null or empty",
    ]
    assert parse_embeddings("x.parquet", io.BytesIO(b"junk")).__next__().error.startswith("cannot read embeddings")


def test_saved_vectors_of_another_size_than_the_first_are_dead_letters(embedder, tmp_path):
    """``--input-embeddings`` over two files, one of real 384-value vectors and one of 10-value vectors (another
    model's): each file was checked against its own first row, so the run crashed stacking the two; now every
    vector must have the size of the first saved one (files in path order), and the others are dead letters."""
    titles = [row["text"] for row in sample_titles(60)]
    folder = tmp_path / "embeddings"
    folder.mkdir()
    pq.write_table(embeddings_table([f"t{i}" for i in range(60)], embedder.encode(titles)), folder / "a.parquet")
    other = np.random.default_rng(0).normal(size=(3, 10)).astype(np.float32)
    pq.write_table(embeddings_table(["x0", "x1", "x2"], other), folder / "b.parquet")
    assert saved_dimension(str(folder)) == 384

    batch = run_batch(tmp_path / "out", "--input-embeddings", str(folder))
    assert_invariants(batch)
    assert batch.summary.accepted == 60
    assert sorted(batch.dead_letters["error"]) == ["embedding has 10 values, expected 384"] * 3


def test_recall_report_matches_brute_force(tmp_path):
    write_jsonl(tmp_path / "in.jsonl", [{"id": r["id"], "text": r["text"]} for r in sample_titles(1500)])
    paraphrases = SAMPLE_PARAPHRASES.read_text(encoding="utf-8")
    (tmp_path / "para.jsonl").write_text(paraphrases, encoding="utf-8")
    flags = ["--input", str(tmp_path / "*.jsonl"), "--threshold", "0.75", "--write-embeddings", "--backend", "torch"]
    batch = run_batch(tmp_path / "out", *flags, "--cells", "16", "--cell-margin", "0", "--recall-sample", "700")

    table = pq.read_table(tmp_path / "out" / "embeddings")
    copies = set(batch.pairs[batch.pairs["kind"] == "exact"]["id_b"])
    keep = [i for i, record_id in enumerate(table.column("id").to_pylist()) if record_id not in copies]
    ids = [table.column("id")[i].as_py() for i in keep]
    vectors = np.stack(table.column("embedding").to_numpy(zero_copy_only=False)[keep]).astype(np.float32)
    queries = {ids[row] for row in np.argsort(id_hashes(ids))[:700]}
    truth = {(p.id_a, p.id_b) for p in threshold_pairs(ids, vectors, 0.75) if {p.id_a, p.id_b} & queries}
    semantic = batch.pairs[batch.pairs["kind"] == "semantic"]
    found = {(a, b) for a, b in zip(semantic["id_a"], semantic["id_b"], strict=True) if {a, b} & queries}
    report = batch.summary.recall
    # the run's brute force is numpy's, this one FAISS's: pairs at the threshold's last bits may count either way
    either_way = len({p for p in borderline_pairs(ids, vectors, 0.75) if set(p) & queries})
    assert report.queries == 700 and abs(report.true_pairs - len(truth)) <= either_way and len(truth) > 50
    assert abs(report.found - len(found & truth)) <= either_way
    assert report.found < report.true_pairs, "margin 0 over 16 cells loses some border pairs"
    assert report.recall == pytest.approx(len(found & truth) / len(truth), abs=either_way / len(truth) + 1e-12)
