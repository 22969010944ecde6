"""Embedding throughput: ``semsim batch`` vs a plain ``SentenceTransformer.encode`` loop, measured in one run.

    python -m benchmarks.embed_throughput [--titles ../shared/datasets/reddit_titles_500k.tsv.gz] [-n 5000]

Prints sentences/s for the plain loop (the baseline) and for the whole pipeline, their ratio, and where the
pipeline's time goes (model load, encoding, the rest of the pipeline).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import tempfile
import time
from pathlib import Path

from pipelines.batch_dedup import run
from semsim_core.embedder import Embedder

DEFAULT_TITLES = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "reddit_titles_500k.tsv.gz"


def read_titles(path: Path, n: int) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        return [row["title"] for row, _ in zip(reader, range(n), strict=False)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--titles", type=Path, default=DEFAULT_TITLES, help="Reddit titles .tsv.gz (column 'title')")
    parser.add_argument("-n", type=int, default=5000, help="number of titles")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    titles = read_titles(args.titles, args.n)

    Embedder.load(batch_size=args.batch_size)  # the first load reads the files from disk; the pipeline's is warm
    start = time.perf_counter()
    embedder = Embedder.load(batch_size=args.batch_size)
    load_s = time.perf_counter() - start
    embedder.model.encode(titles[:64], batch_size=args.batch_size)  # warm-up
    start = time.perf_counter()
    embedder.model.encode(titles, batch_size=args.batch_size)
    plain_s = time.perf_counter() - start
    start = time.perf_counter()
    for i in range(0, len(titles), 256):
        embedder.encode(titles[i : i + 256])
    windows_s = time.perf_counter() - start

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "titles.jsonl"
        data.write_text("".join(json.dumps({"id": f"t{i}", "text": t}) + "\n" for i, t in enumerate(titles)))
        start = time.perf_counter()
        out = str(Path(tmp) / "out")
        summary, _ = run(["--input", str(data), "--output", out, "--batch-size", str(args.batch_size)])
        pipeline_s = time.perf_counter() - start

    embedded = summary["embedded"]
    print(f"titles: {len(titles)} (embedded by the pipeline after the exact pre-pass: {embedded})")
    print(f"plain SentenceTransformer.encode, batch {args.batch_size}: {len(titles) / plain_s:8.1f} sentences/s")
    print(f"Embedder.encode in windows of 256:          {len(titles) / windows_s:8.1f} sentences/s")
    print(f"semsim batch, whole pipeline (incl. load):  {len(titles) / pipeline_s:8.1f} sentences/s")
    print(f"ratio pipeline / plain encode:              {plain_s / pipeline_s:8.2f}x")
    encode_s = windows_s * embedded / len(titles)
    rest = pipeline_s - load_s - encode_s
    print(f"pipeline {pipeline_s:.1f} s = load ~{load_s:.1f} s + encoding ~{encode_s:.1f} s + the rest ~{rest:.1f} s")


if __name__ == "__main__":
    main()
