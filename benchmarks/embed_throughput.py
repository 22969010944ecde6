"""Embedding speed per backend, raw and inside ``semsim batch``, plus ``semsim batch`` vs sentence-transformers'
``util.paraphrase_mining``; every ratio is measured in this one run.

    python -m benchmarks.embed_throughput [--titles ../shared/datasets/reddit_titles_500k.tsv.gz] [-n 5000]
        [--backends torch onnx-int8 ...] [--mining 20000]

Every time is the best of ``--repeat`` runs (``--mining-repeat`` for the paraphrase_mining part); a backend's raw and
pipeline runs alternate. For each backend: raw ``Embedder.encode`` of the titles (the backend built beforehand, so no
export is timed), its ratio to the baseline (plain ``SentenceTransformer.encode``, fp32, batch 32), its STS Benchmark
test Spearman, and ``semsim batch --backend B`` on the same titles: whole run (incl. model load) and the encoding rate
inside its DoFns (``embedded`` / ``encode_ms``), each as a ratio to the raw backend. A pipeline run loads its model
afresh, and a fresh model's first batches are slower, so "fresh/s" is the raw encode of a freshly loaded model and
"paired" the median ratio of each pipeline run's encoding rate to the fresh raw encode just before it: Beam's own
overhead. Then ``semsim batch`` with each of ``--mining-backends`` (torch and openvino are fp32) vs
``paraphrase_mining`` (same model, top_k 100) on ``--mining`` titles: time ratio, the share of paraphrase_mining's
pairs at or above the threshold that semsim finds (directly or through an exact group), and the encoding rate inside
the pipeline as a ratio to a raw encode of the same titles by the same backend.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import statistics
import tempfile
import time
from pathlib import Path

import pandas as pd

from pipelines.batch_dedup import counters, run
from pipelines.options import DEFAULT_THRESHOLD
from semsim_core.backends import BACKENDS
from semsim_core.embedder import EmbedConfig, Embedder
from semsim_core.evaluation import evaluate_stsb
from semsim_core.mining_eval import expand_exact_groups

REPO = Path(__file__).resolve().parents[1]
DEFAULT_TITLES = REPO.parent / "shared" / "datasets" / "reddit_titles_500k.tsv.gz"
STSB_TEST = REPO / "tests" / "data" / "stsbenchmark" / "sts-test.csv"


def read_titles(path: Path, n: int) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        return [row["title"] for row, _ in zip(reader, range(n), strict=False)]


def write_titles(folder: Path, titles: list[str]) -> Path:
    path = folder / "titles.jsonl"
    path.write_text("".join(json.dumps({"id": f"t{i}", "text": t}) + "\n" for i, t in enumerate(titles)))
    return path


def timed(fn, *args, repeat: int = 1):
    """``fn(*args)``'s result and its fastest time over ``repeat`` calls (this machine is noisy: the best of a few
    runs is the stable figure)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn(*args)
        best = min(best, time.perf_counter() - start)
    return result, best


def run_batch(data: Path, out: Path, backend: str) -> tuple[float, float, int]:
    """Whole-run seconds of one ``semsim batch``, the seconds spent encoding inside its DoFns (``encode_ms``) and the
    texts they embedded."""
    (_, result), seconds = timed(run, ["--input", str(data), "--output", str(out), "--backend", backend])
    measured = counters(result)
    return seconds, measured["encode_ms"] / 1000, measured["embedded"]


def compare_backends(titles: list[str], backends: list[str], folder: Path, repeat: int) -> None:
    base = Embedder.load(backend="torch")
    base.model.encode(titles[:64], batch_size=32)
    _, baseline_s = timed(base.model.encode, titles, repeat=repeat)
    baseline = len(titles) / baseline_s
    data = write_titles(folder, titles)
    print(f"baseline: SentenceTransformer.encode fp32, batch 32, {len(titles)} titles: {baseline:.1f} sentences/s")
    columns = ("backend", "raw/s", "vs base", "Spearman", "batch/s", "vs raw", "in-DoFn/s", "vs raw", "fresh/s")
    columns += ("paired",)
    print(" ".join(f"{c:>{w}}" for c, w in zip(columns, (14, 7, 7, 8, 7, 6, 9, 6, 7, 6), strict=True)))
    for backend in backends:
        embedder = Embedder(base.model, EmbedConfig(backend=backend))
        embedder.encode(titles[:64])
        spearman = evaluate_stsb(embedder, str(STSB_TEST)).spearman
        raw_rates, fresh_rates, run_rates, dofn_rates = [], [], [], []
        for attempt in range(repeat):  # raw and pipeline alternate, so the machine's drift weighs on both alike
            raw_rates.append(len(titles) / timed(embedder.encode, titles)[1])
            # Each pipeline run loads its model afresh, whose first batches run slower (kernels are created per
            # input shape); the raw encode of a fresh model measures that same work without Beam.
            fresh = Embedder(base.model, EmbedConfig(backend=backend))
            fresh_rates.append(len(titles) / timed(fresh.encode, titles)[1])
            seconds, encode_s, embedded = run_batch(data, folder / f"{backend}-{attempt}", backend)
            run_rates.append(len(titles) / seconds)
            dofn_rates.append(embedded / encode_s)
        raw, whole, in_dofn, cold = max(raw_rates), max(run_rates), max(dofn_rates), max(fresh_rates)
        paired = statistics.median(d / f for d, f in zip(dofn_rates, fresh_rates, strict=True))
        print(
            f"{backend:>14} {raw:7.1f} {raw / baseline:6.2f}x {spearman:8.4f} {whole:7.1f} {whole / raw:5.2f}x "
            f"{in_dofn:9.1f} {in_dofn / raw:5.2f}x {cold:7.1f} {paired:5.2f}x"
        )


def semsim_pairs(out: Path) -> set[tuple[str, str]]:
    """Every pair ``semsim batch`` reports, directly or through an exact group (see ``expand_exact_groups``)."""
    pairs = pd.read_parquet(out / "pairs", columns=["id_a", "id_b", "score", "kind"])
    return set(expand_exact_groups(pairs.itertuples(index=False, name=None)))


def compare_paraphrase_mining(titles: list[str], backends: list[str], folder: Path, repeat: int) -> None:
    from sentence_transformers import util

    model = Embedder.load(backend="torch").model
    mined, mining_s = timed(lambda: util.paraphrase_mining(model, titles, batch_size=32, top_k=100), repeat=repeat)
    expected = {tuple(sorted((f"t{i}", f"t{j}"))) for score, i, j in mined if score >= DEFAULT_THRESHOLD}
    data = write_titles(folder, titles)
    print(
        f"{len(titles)} titles: paraphrase_mining (top_k 100) {mining_s:.1f} s, {len(expected)} pairs >= "
        f"{DEFAULT_THRESHOLD}"
    )
    for backend in backends:
        outs = [folder / f"mining-{backend}-{attempt}" for attempt in range(repeat)]
        semsim_s, encode_s, embedded = min(run_batch(data, out, backend) for out in outs)
        found = semsim_pairs(outs[-1])
        share = len(expected & found) / max(1, len(expected))
        raw = Embedder(model, EmbedConfig(backend=backend))
        raw.encode(titles[:64])
        _, raw_s = timed(raw.encode, titles, repeat=repeat)
        print(
            f"  semsim batch --backend {backend}: {semsim_s:.1f} s ({encode_s:.1f} s encoding {embedded} texts, "
            f"{embedded / encode_s / (len(titles) / raw_s):.2f}x the raw rate: {raw_s:.1f} s for all {len(titles)}) = "
            f"{mining_s / semsim_s:.2f}x faster; finds {share:.4f} of those pairs ({len(found)} pairs in all)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--titles", type=Path, default=DEFAULT_TITLES, help="Reddit titles .tsv.gz (column 'title')")
    parser.add_argument("-n", type=int, default=5000, help="titles for the backend comparison")
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    parser.add_argument(
        "--mining", type=int, default=20000, help="titles for the paraphrase_mining comparison (0: skip)"
    )
    parser.add_argument(
        "--mining-backends", nargs="+", choices=BACKENDS, default=["torch", "openvino", "openvino-int8"]
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per backend measure; the best counts")
    parser.add_argument("--mining-repeat", type=int, default=1, help="runs per paraphrase_mining comparison")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        compare_backends(read_titles(args.titles, args.n), args.backends, Path(tmp), args.repeat)
        if args.mining:
            compare_paraphrase_mining(
                read_titles(args.titles, args.mining), args.mining_backends, Path(tmp), args.mining_repeat
            )


if __name__ == "__main__":
    main()
