"""Shared fixtures: the bundled model, real data slices, and a helper that runs the batch pipeline."""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.batch_dedup import counters, run
from semsim_core.backend_choice import cpu_profile
from semsim_core.embedder import Embedder
from semsim_core.evaluation import read_stsb
from semsim_core.normalize import normalize_text
from semsim_core.run_layout import Summary

REPO = Path(__file__).resolve().parents[1]
STSB_TEST = REPO / "tests" / "data" / "stsbenchmark" / "sts-test.csv"
STSB_DEV = REPO / "tests" / "data" / "stsbenchmark" / "sts-dev.csv"
SAMPLE_TITLES = REPO / "data" / "sample" / "reddit_titles.jsonl"
SAMPLE_PARAPHRASES = REPO / "data" / "sample" / "stsb_train_paraphrases.jsonl"


@pytest.fixture(scope="session", autouse=True)
def backend_cache(tmp_path_factory) -> Iterator[Path]:
    """Backends built by the tests go to a fresh cache folder, never the user's: ``$SEMSIM_TEST_CACHE`` (so that
    scripts/test.sh's two runs share it) or the session's own."""
    folder = Path(os.environ.get("SEMSIM_TEST_CACHE") or tmp_path_factory.getbasetemp()) / "semsim-cache"
    folder.mkdir(parents=True, exist_ok=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SEMSIM_CACHE", str(folder))
        yield folder


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    """The model exactly as sentence-transformers runs it (fp32 torch)."""
    return Embedder.load(backend="torch")


@pytest.fixture(scope="session")
def stsb_test_vectors(embedder, backend_cache) -> tuple[list[str], np.ndarray]:
    """The distinct STSb test sentences and their vectors from sentence-transformers' own ``encode`` (fp32),
    embedded once for every test that needs them: the first pytest worker to ask embeds them into the session's cache
    folder, the others wait and read (a run with instruction-set caps keeps its own file: its vectors come from other
    kernels)."""
    sentences = stsb_unique_sentences()
    path = backend_cache / f"stsb-test-vectors{'-avx2-caps' if os.environ.get('SEMSIM_AVX2_CAPS') else ''}.npy"
    with open(backend_cache / "stsb-test-vectors.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not path.exists():
            partial = path.with_suffix(".partial.npy")
            np.save(partial, embedder.model.encode(sentences, normalize_embeddings=True))
            partial.rename(path)
    return sentences, np.load(path)


def borderline_pairs(ids: list[str], vectors: np.ndarray, threshold: float, tol: float = 1e-5) -> set[tuple[str, str]]:
    """Pairs whose cosine (float64) is within ``tol`` of ``threshold``: which side of it a float32 kernel puts them
    on depends on its summation order, so tests comparing two kernels leave them out."""
    exact = vectors.astype(np.float64) @ vectors.T.astype(np.float64)
    rows, cols = np.nonzero(np.triu(np.abs(exact - threshold) < tol, k=1))
    return {(min(ids[i], ids[j]), max(ids[i], ids[j])) for i, j in zip(rows, cols, strict=True)}


def stsb_unique_sentences(path: Path = STSB_TEST) -> list[str]:
    """The distinct sentences of an STSb file (distinct after normalisation), in file order."""
    data = read_stsb(str(path))
    by_norm: dict[str, str] = {}
    for sentence in data.first + data.second:
        by_norm.setdefault(normalize_text(sentence), sentence)
    return list(by_norm.values())


def stsb_captions(path: Path = STSB_DEV) -> list[str]:
    """The distinct sentences of an STSb file's video-caption genres (MSRvid, images): short, crowded together."""
    captions = set()
    with open(path, encoding="utf-8") as f:
        for line in f:
            columns = line.rstrip("\n").split("\t")
            if columns[1] in ("MSRvid", "images"):
                captions.update(columns[5:7])
    return sorted(captions)


def sample_titles(limit: int) -> list[dict]:
    with open(SAMPLE_TITLES, encoding="utf-8") as f:
        return [json.loads(line) for line, _ in zip(f, range(limit), strict=False)]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@dataclass
class BatchRun:
    summary: Summary
    counters: dict[str, int]
    pairs: pd.DataFrame
    clusters: pd.DataFrame
    dead_letters: pd.DataFrame
    removed: pd.DataFrame


def fast_int8_backend() -> str:
    """The int8 backend that runs faster on this CPU, for tests that embed thousands of texts with one: OpenVINO's
    with VNNI or AMX, ONNX Runtime's without (2 threads, 400 texts: 2,557/s against 1,288/s on a Sapphire Rapids
    Xeon; 242/s against 423/s on an AVX2-only EPYC)."""
    flags = cpu_profile()["flags"].split()
    return "openvino-int8" if {"avx512_vnni", "avx_vnni", "amx_int8"} & set(flags) else "onnx-int8"


def fp32_unless_named(flags: Sequence[str]) -> list[str]:
    """``flags`` with ``--backend torch`` in front unless they name a backend."""
    named = any(flag.startswith("--backend") for flag in flags)
    return [*flags] if named else ["--backend", "torch", *flags]


def run_batch(output: Path, *flags: str) -> BatchRun:
    """Run the batch pipeline with ``flags`` and read back every output. The backend is fp32 ``torch`` unless
    ``flags`` name one: tests of anything but the backends then find the model's own pairs on every CPU."""
    summary, result = run(["--output", str(output), *fp32_unless_named(flags)])
    return BatchRun(
        summary,
        counters(result),
        pd.read_parquet(output / "pairs"),
        pd.read_parquet(output / "clusters"),
        pd.read_parquet(output / "dead_letter"),
        pd.read_parquet(output / "removed"),
    )


def assert_invariants(batch: BatchRun) -> None:
    """The output contract (docs/architecture.md): every input is accepted or a dead letter, every accepted id has
    exactly one cluster row."""
    s = batch.summary
    assert s.inputs == s.accepted + s.dead_letters
    assert s.accepted == len(batch.clusters) and batch.clusters["id"].is_unique
    assert s.dead_letters == len(batch.dead_letters)
    assert s.exact_pairs + s.semantic_pairs == len(batch.pairs)
    assert s.clusters == int(batch.clusters["is_representative"].sum())
    assert (batch.pairs["id_a"] < batch.pairs["id_b"]).all()
    assert not batch.pairs.duplicated(["id_a", "id_b"]).any()
    reps = batch.clusters[batch.clusters["is_representative"]]
    if not s.history:  # a stored cluster keeps its id when a new record becomes the one it keeps
        assert (reps["id"] == reps["cluster_id"]).all()
    # every accepted record is kept (its cluster's representative) or removed, once; with history, removed/ also
    # lists the stored records that this run's earlier ones replaced as kept
    removed = batch.removed
    demoted = s.history.demoted if s.history else 0
    assert s.removed == len(removed) == s.accepted - s.clusters + demoted
    assert removed["id"].is_unique and not removed["id"].isin(reps["id"]).any()
    if not s.history:
        assert (removed["kept_id"] == removed["id"].map(batch.clusters.set_index("id")["cluster_id"])).all()
    assert (removed["via"].map(lambda via: via[0]) == removed["id"]).all()
    assert (removed["via"].map(lambda via: via[-1]) == removed["kept_id"]).all()
    sizes = batch.clusters.groupby("cluster_id")["id"].count()
    if s.history and s.history.records_before:  # sizes count the stored members too
        assert (batch.clusters["cluster_size"] >= batch.clusters["cluster_id"].map(sizes)).all()
    else:
        assert (batch.clusters["cluster_size"] == batch.clusters["cluster_id"].map(sizes)).all()
