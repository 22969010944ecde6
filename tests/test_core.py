"""semsim_core on real embeddings: threshold search, clustering, embedder, STSb evaluation."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys

import numpy as np
import pytest
from huggingface_hub import constants as hub_constants

from semsim_core.clustering import connected_components, hdbscan_split
from semsim_core.embedder import DEFAULT_MODEL, model_error, resolve_model
from semsim_core.normalize import normalize_text, text_hash
from semsim_core.pairs import threshold_pairs
from semsim_core.ranking import best_f1_threshold
from semsim_core.records import EXACT, SEMANTIC, ClusterAssignment, make_pair
from tests.conftest import REPO, stsb_unique_sentences


@pytest.fixture(scope="module")
def stsb_vectors(stsb_test_vectors):
    sentences, vectors = stsb_test_vectors
    return [f"s{i:04d}" for i in range(800)], vectors[:800]


def brute_force(ids, vectors, threshold):
    """Pairs at or above ``threshold`` in float64, and the borderline ones (within 1e-5 of it), whose float32 side of
    the threshold depends on the kernel's summation order."""
    sims = vectors.astype(np.float64) @ vectors.T.astype(np.float64)
    pairs = {(ids[i], ids[j]): float(sims[i, j]) for i, j in itertools.combinations(range(len(ids)), 2)}
    return (
        {p: s for p, s in pairs.items() if s >= threshold},
        {p for p, s in pairs.items() if abs(s - threshold) < 1e-5},
    )


@pytest.mark.kernels
@pytest.mark.parametrize("threshold", [0.6, 0.8, 0.9])
def test_threshold_pairs_equal_brute_force(stsb_vectors, threshold):
    ids, vectors = stsb_vectors
    expected, borderline = brute_force(ids, vectors, threshold)
    found = threshold_pairs(ids, vectors, threshold, block_size=97)
    assert {(p.id_a, p.id_b) for p in found} - borderline == set(expected) - borderline
    assert all(abs(p.score - expected.get((p.id_a, p.id_b), threshold)) < 1e-5 for p in found)
    assert all(p.kind == "semantic" for p in found) and len(expected) > 0


def dyadic_unit_vectors(count: int, dim: int, seed: int) -> np.ndarray:
    """Unit vectors whose entries are +-3/4, +-1/2 and three +-1/4 (squares sum to 1) at random places: every inner
    product is a multiple of 1/16, exact in float32 whatever the kernel and summation order."""
    rng = np.random.default_rng(seed)
    vectors = np.zeros((count, dim), dtype=np.float32)
    for row in vectors:
        places = rng.choice(dim, 5, replace=False)
        row[places] = np.array([0.75, 0.5, 0.25, 0.25, 0.25]) * rng.choice([-1, 1], 5)
    return vectors


@pytest.mark.kernels
@pytest.mark.parametrize("dim", [8, 384])
def test_threshold_is_inclusive(dim):
    vectors = dyadic_unit_vectors(400, dim, seed=dim)
    ids = [f"v{i:03d}" for i in range(len(vectors))]
    exact = vectors.astype(np.float64) @ vectors.T.astype(np.float64)
    assert np.all(exact * 16 == np.round(exact * 16)) and np.allclose(np.diag(exact), 1.0)
    for threshold in sorted({float(s) for s in exact[np.triu_indices(len(ids), 1)] if s > 0})[-3:]:
        expected = {(ids[i], ids[j]) for i, j in itertools.combinations(range(len(ids)), 2) if exact[i, j] >= threshold}
        at = threshold_pairs(ids, vectors, threshold, block_size=64)
        assert {(p.id_a, p.id_b) for p in at} == expected and min(p.score for p in at) == threshold
        above = float(np.nextafter(np.float32(threshold), np.float32(2)))
        assert {(p.id_a, p.id_b) for p in threshold_pairs(ids, vectors, above)} == {
            pair for pair in expected if exact[ids.index(pair[0]), ids.index(pair[1])] >= above
        }


def test_connected_components_transitive_and_order_free():
    edges = [("b", "c"), ("c", "d"), ("x", "y"), ("a", "b")]
    expected = {
        "a": ClusterAssignment("a", "a", True, 4),
        "b": ClusterAssignment("b", "a", False, 4),
        "c": ClusterAssignment("c", "a", False, 4),
        "d": ClusterAssignment("d", "a", False, 4),
        "x": ClusterAssignment("x", "x", True, 2),
        "y": ClusterAssignment("y", "x", False, 2),
    }
    assert connected_components(edges) == expected
    assert connected_components(reversed(edges)) == expected
    assert connected_components([(b, a) for a, b in edges]) == expected


def test_hdbscan_splits_a_chain_and_only_splits():
    """Two tight groups joined by one weak pair are one component, which HDBSCAN splits; an exact copy stays with its
    original, a loosely attached record with its best partner, and a component too small to split stays whole."""
    tight = [("a1", "a2", 0.97), ("a1", "a3", 0.96), ("a2", "a3", 0.95), ("b1", "b2", 0.96), ("b1", "b3", 0.97)]
    pairs = [make_pair(a, b, score, SEMANTIC) for a, b, score in [*tight, ("b2", "b3", 0.95), ("b2", "n", 0.82)]]
    pairs += [make_pair("a3", "b1", 0.81, SEMANTIC), make_pair("a1", "a1-copy", 1.0, EXACT)]
    edges = hdbscan_split(pairs)
    assert set(edges) <= {(p.id_a, p.id_b) for p in pairs}
    clusters = {}
    for record, assignment in connected_components(edges).items():
        clusters.setdefault(assignment.cluster_id, set()).add(record)
    assert sorted(clusters.values(), key=min) == [{"a1", "a1-copy", "a2", "a3"}, {"b1", "b2", "b3", "n"}]
    chain = [make_pair("x", "y", 0.99, SEMANTIC), make_pair("y", "z", 0.81, SEMANTIC)]
    assert hdbscan_split(chain) == [("x", "y"), ("y", "z")], "three records cannot make two clusters of two"


@pytest.mark.kernels
def test_embedder_unit_vectors_in_input_order(embedder):
    texts = stsb_unique_sentences()[:40]
    together = embedder.encode(texts)
    assert together.dtype == np.float32 and together.shape == (40, embedder.dim)
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    one_by_one = np.vstack([embedder.encode([t]) for t in texts[::-1]])[::-1]
    assert np.min(np.einsum("ij,ij->i", together, one_by_one)) > 0.9999
    assert embedder.encode([]).shape == (0, embedder.dim)


def test_embedder_counts_truncated_texts(embedder):
    sentences = stsb_unique_sentences()
    long_post = " ".join(sentences[:60])  # several hundred tokens of real text, over the 256-token window
    assert len(embedder.model.tokenizer(long_post)["input_ids"]) > embedder.max_seq_length
    assert embedder.count_truncated([long_post, sentences[0], long_post, "é" * 300]) == 2


def test_model_resolution_and_errors(tmp_path, monkeypatch):
    assert os.path.isfile(os.path.join(resolve_model(DEFAULT_MODEL), "modules.json"))
    assert resolve_model("sentence-transformers/all-MiniLM-L6-v2") == resolve_model(DEFAULT_MODEL)
    assert resolve_model("some-org/other-model") == "some-org/other-model"
    assert model_error(DEFAULT_MODEL) is None
    # a hub name loads from the Hugging Face cache without the hub (a name without a slash as sentence-transformers')
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    for repo in ("some-org/other-model", "sentence-transformers/paraphrase-model"):
        cached = tmp_path / "hub" / f"models--{repo.replace('/', '--')}"
        (cached / "refs").mkdir(parents=True)
        (cached / "refs" / "main").write_text("0" * 40)
        (cached / "snapshots" / ("0" * 40)).mkdir(parents=True)
        (cached / "snapshots" / ("0" * 40) / "config.json").write_text("{}")
    assert model_error("some-org/other-model") is None and model_error("paraphrase-model") is None
    assert model_error("some-org/missing").endswith("not in the Hugging Face cache, and HF_HUB_OFFLINE is set")
    assert "does not exist" in model_error(str(tmp_path / "missing"))
    (tmp_path / "file").write_text("")
    assert "not a directory" in model_error(str(tmp_path / "file"))
    assert "no sentence-transformers model" in model_error(str(tmp_path))


def test_normalisation_and_hash():
    assert normalize_text("  A girl is  STYLING\ther hair. ") == "a girl is styling her hair."
    assert text_hash("A girl is styling her hair.") == text_hash("a girl is  styling her hair.\n")
    assert text_hash("A girl is styling her hair.") != text_hash("A girl is brushing her hair.")


def test_best_f1_threshold_hand_checked():
    cosines = np.array([0.95, 0.9, 0.85, 0.7, 0.6, 0.5])
    labels = np.array([True, True, False, True, False, False])
    # cut at 0.7: tp=3, fp=1, fn=0 -> P=0.75, R=1, F1=6/7; cut at 0.9: P=1, R=2/3, F1=0.8
    threshold, f1, precision, recall = best_f1_threshold(cosines, labels)
    assert (threshold, precision, recall) == (0.7, 0.75, 1.0)
    assert f1 == pytest.approx(6 / 7)


def test_no_core_module_imports_beam():
    """semsim_core is the pure library: importing every module of it loads no part of Apache Beam."""
    code = (
        "import importlib, pkgutil, sys, semsim_core; "
        "[importlib.import_module(m.name) for m in pkgutil.walk_packages(semsim_core.__path__, 'semsim_core.')]; "
        "print(sorted(m for m in sys.modules if m.startswith('apache_beam')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
