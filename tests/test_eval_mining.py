"""``semsim eval mining``: paraphrase-mining average precision and best F1 of a batch run against gold pairs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.cli import main
from semsim_core.formats import TableError
from semsim_core.mining_eval import expand_exact_groups, mining_report, read_gold_pairs, unordered
from tests.conftest import STSB_DEV, borderline_pairs, write_jsonl


def dev_rows() -> list[list[str]]:
    with open(STSB_DEV, encoding="utf-8") as f:
        return [line.rstrip("\n").split("\t") for line in f]


@pytest.fixture(scope="module")
def dev_slice(tmp_path_factory) -> tuple[Path, Path, dict[str, str], set[tuple[str, str]]]:
    """Corpus: both sentences of every 5th STSb dev pair (600 records, ids ``dev<row>a``/``b``). Gold: every dev pair
    with score >= 4 ("mostly equivalent"); those outside the slice are not in the corpus."""
    folder = tmp_path_factory.mktemp("mining")
    rows = dev_rows()
    texts = {f"dev{n:04d}{side}": rows[n][5 + i] for n in range(0, len(rows), 5) for i, side in enumerate("ab")}
    gold = {(f"dev{n:04d}a", f"dev{n:04d}b") for n, row in enumerate(rows) if float(row[4]) >= 4}
    corpus = write_jsonl(folder / "corpus.jsonl", [{"id": k, "text": v} for k, v in texts.items()])
    with open(folder / "gold.csv", "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id_a", "id_b"])
        writer.writerows(sorted(gold))
    return corpus, folder / "gold.csv", texts, gold


def test_expand_exact_groups_by_hand():
    rows = [
        ("a", "b", 1.0, "exact"),
        ("a", "c", 1.0, "exact"),
        ("a", "x", 0.9, "semantic"),
        ("d", "x", 0.7, "semantic"),
    ]
    assert expand_exact_groups(rows) == {
        ("a", "b"): 1.0, ("a", "c"): 1.0, ("b", "c"): 1.0,
        ("a", "x"): 0.9, ("b", "x"): 0.9, ("c", "x"): 0.9,
        ("d", "x"): 0.7,
    }  # fmt: skip


def test_mining_report_by_hand():
    candidates = {("a", "b"): 0.9, ("a", "c"): 0.9, ("b", "c"): 0.8, ("c", "d"): 0.7}
    report = mining_report(candidates, {("a", "b"), ("b", "c"), ("d", "e")})
    # runs of equal scores count together: precision 1/2 after the 0.9 run, 2/3 after 0.8; 3 gold pairs in all
    assert report.average_precision == pytest.approx((1 / 2 + 2 / 3) / 3, abs=1e-15)
    assert (report.f1, report.precision, report.recall) == pytest.approx((2 / 3, 2 / 3, 2 / 3), abs=1e-15)
    assert report.threshold == pytest.approx(0.75)
    assert (report.candidate_pairs, report.gold_pairs, report.gold_found) == (4, 3, 2)
    assert mining_report({}, {("a", "b")}).average_precision == 0.0


def test_read_gold_pairs(tmp_path):
    path = write_jsonl(
        tmp_path / "gold.jsonl", [{"id_a": "b", "id_b": "a"}, {"id_a": "a", "id_b": "b"}, {"id_a": 7, "id_b": "c"}]
    )
    assert read_gold_pairs(str(path)) == {("a", "b"), ("7", "c")}
    (tmp_path / "gold.tsv").write_text("id_a\tid_b\nx\tx\n", encoding="utf-8")
    with pytest.raises(TableError, match=r"gold.tsv:2: id_a and id_b are the same id 'x'"):
        read_gold_pairs(str(tmp_path / "gold.tsv"))


def test_matches_sentence_transformers_evaluator(embedder, dev_slice):
    """The formula is ParaphraseMiningEvaluator's: same ranked pairs (all pairs, its own encoding) -> same figures."""
    from sentence_transformers.sentence_transformer.evaluation import ParaphraseMiningEvaluator
    from sentence_transformers.util import cos_sim

    ids, sentences = list(dev_slice[2])[:300], list(dev_slice[2].values())[:300]
    gold = {pair for pair in dev_slice[3] if pair[0] in ids and pair[1] in ids}
    evaluator = ParaphraseMiningEvaluator(
        dict(zip(ids, sentences, strict=True)), sorted(gold), top_k=len(ids), max_pairs=len(ids) ** 2, write_csv=False
    )
    expected = evaluator(embedder.model)
    vectors = embedder.model.encode(sentences, batch_size=evaluator.batch_size, convert_to_tensor=True)
    scores = cos_sim(vectors, vectors).numpy()
    candidates = {(ids[i], ids[j]): float(scores[i, j]) for i in range(len(ids)) for j in range(i + 1, len(ids))}
    report = mining_report({unordered(*pair): score for pair, score in candidates.items()}, gold)
    for name in ("average_precision", "f1", "precision", "recall", "threshold"):
        assert getattr(report, name) == pytest.approx(expected[name], abs=1e-12), name
    assert 0 < report.average_precision < 1


def test_eval_mining_equals_exact_all_pairs(dev_slice, tmp_path, capsys):
    corpus, gold_file, texts, gold = dev_slice
    out = tmp_path / "run"
    flags = ["--input", str(corpus), "--gold", str(gold_file), "--output", str(out), "--backend", "torch"]
    assert main(["eval", "mining", *flags, "--write-embeddings"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["records"] == len(texts) == 600 and report["threshold_floor"] == 0.5
    in_corpus = {pair for pair in gold if pair[0] in texts and pair[1] in texts}
    assert report["gold_pairs"] == len(in_corpus) == 51 and report["gold_pairs_not_in_corpus"] == len(gold) - 51

    # The exact computation, in one cell: all-pairs cosine of the run's own embeddings with numpy. A pair within
    # 1e-5 of the floor is on whichever side the run's kernel put it (its pairs/ say which).
    saved = pd.read_parquet(out / "embeddings")
    ids, vectors = saved["id"].tolist(), np.stack(saved["embedding"].to_list()).astype(np.float32)
    sims = vectors @ vectors.T
    first, second = np.triu_indices(len(ids), k=1)
    run_pairs = pd.read_parquet(out / "pairs")
    reported = set(zip(run_pairs["id_a"], run_pairs["id_b"], strict=True))
    either_way = borderline_pairs(ids, vectors, 0.5)
    exact = {
        pair: float(sims[i, j])
        for i, j in zip(first, second, strict=True)
        if (pair := unordered(ids[i], ids[j])) in reported or (pair not in either_way and sims[i, j] >= np.float32(0.5))
    }
    expected = mining_report(exact, in_corpus)
    assert report["candidate_pairs"] == expected.candidate_pairs and report["gold_found"] == expected.gold_found
    assert report["average_precision"] == pytest.approx(expected.average_precision, abs=1e-9)
    assert report["f1"] == pytest.approx(expected.f1, abs=1e-9)
    assert 0 < report["average_precision"] < 1


def test_bad_gold_and_threshold_fail_with_one_line(dev_slice, tmp_path, capsys):
    corpus = str(dev_slice[0])
    bad = tmp_path / "gold.csv"
    bad.write_text("first,second\ndev0000a,dev0000b\n", encoding="utf-8")
    assert main(["eval", "mining", "--input", corpus, "--gold", str(bad)]) == 2
    assert capsys.readouterr().err.splitlines() == [f"semsim eval mining: error: {bad}: missing column(s) id_a, id_b"]
    assert main(["eval", "mining", "--input", corpus, "--gold", str(dev_slice[1]), "--threshold", "0.8"]) == 2
    assert "use --threshold-floor, not --threshold" in capsys.readouterr().err
    assert main(["eval", "mining", "--input", corpus, "--gold", str(dev_slice[1]), "--threshold-floor", "0"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "semsim eval mining: error: --threshold-floor must be in (0, 1], got 0.0"
    ]
