"""1M vectors through semsim's pair-finding transforms: recall, wall time and peak RSS vs exact all-pairs.

    python -m benchmarks.synthetic_pairs [-n 1000000] [--threshold 0.8] [--exact-sample 50000]

The generator (documented ground truth): ``--topics`` topic centres uniform on the unit sphere in ``--dim``
dimensions; each vector is its topic centre plus Gaussian noise of the same norm, normalised (so two vectors of one
topic have cosine ~0.5: a clustered background with no pairs above 0.8). Every ``--copy-every``-th vector is a planted
near-duplicate of the vector before it: that vector plus Gaussian noise of norm 0.2-0.7, normalised (cosine ~0.82-0.98).
Planted pairs with cosine >= threshold are the known ground truth.

The pipeline (FnApiRunner, one child process so its peak RSS is its own): generate -> TrainCentroids -> SearchCells
(vectors staged to files, one cell searched at a time) -> MeasureRecall (brute force for ``--recall-sample`` query
vectors) -> counts. Exact all-pairs is timed on a random
``--exact-sample`` subset with the same exact search (FAISS IndexFlatIP.range_search) and extrapolated by (n/m)^2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import apache_beam as beam
import numpy as np
from apache_beam.options.pipeline_options import PipelineOptions

from benchmarks.measure import run_measured
from pipelines.options import DEFAULT_TARGET_RECALL
from semsim_core.pairs import threshold_pairs
from semsim_core.rescore import ScoreBand
from transforms.cell_search import CELL_SIZES, CellFiles, SearchCells, largest
from transforms.cells import TrainCentroids
from transforms.recall import MeasureRecall
from transforms.vector_blocks import VectorBlock
from transforms.write import CountEach

PLANTED = "planted"


def topic_centres(topics: int, dim: int, seed: int) -> np.ndarray:
    centres = np.random.default_rng(seed).standard_normal((topics, dim)).astype(np.float32)
    return centres / np.linalg.norm(centres, axis=1, keepdims=True)


def _unit_noise(rng: np.random.Generator, rows: int, dim: int) -> np.ndarray:
    noise = rng.standard_normal((rows, dim)).astype(np.float32)
    return noise / np.linalg.norm(noise, axis=1, keepdims=True)


def generate_chunk(spec: tuple[int, int], centres: np.ndarray, copy_every: int, seed: int) -> Iterator:
    """Vectors ``start .. start+count-1`` as one :class:`VectorBlock` (no texts); planted pairs on the ``planted``
    output as ``(id_a, id_b, cosine)``."""
    start, count = spec
    rng = np.random.default_rng([seed, start])
    dim = centres.shape[1]
    topic = rng.integers(0, len(centres), count)
    vectors = centres[topic] + _unit_noise(rng, count, dim)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    copies = np.arange(count) % copy_every == copy_every - 1
    copies[0] = False
    strength = rng.uniform(0.2, 0.7, copies.sum()).astype(np.float32)[:, None]
    vectors[copies] = vectors[np.flatnonzero(copies) - 1] + strength * _unit_noise(rng, int(copies.sum()), dim)
    vectors[copies] /= np.linalg.norm(vectors[copies], axis=1, keepdims=True)
    ids = [f"v{start + i:08d}" for i in range(count)]
    for i in np.flatnonzero(copies):
        yield beam.pvalue.TaggedOutput(PLANTED, (ids[i - 1], ids[i], float(vectors[i - 1] @ vectors[i])))
    yield VectorBlock(ids, vectors, [""] * count)


def run_pipeline(args: argparse.Namespace) -> None:
    centres = topic_centres(args.topics, args.dim, args.seed)
    chunks = [(start, min(args.chunk, args.n - start)) for start in range(0, args.n, args.chunk)]
    options = PipelineOptions(["--runner", "FnApiRunner"])
    with beam.Pipeline(options=options) as p:
        generated = (
            p
            | "Chunks" >> beam.Create(chunks)
            | "Generate"
            >> beam.FlatMap(generate_chunk, centres, args.copy_every, args.seed).with_outputs(PLANTED, main="vectors")
        )
        vectors = generated.vectors
        train = TrainCentroids(
            0, args.target_cell_size, args.max_cell_size, args.kmeans_sample, args.threshold, DEFAULT_TARGET_RECALL,
            args.margin,
        )  # fmt: skip
        partition = vectors | "TrainCentroids" >> train
        work = str(args.out.parent / "work")
        files = CellFiles(work, work, None, "synthetic")
        search = SearchCells(files, partition, ScoreBand(args.threshold), args.max_cell_size, DEFAULT_TARGET_RECALL)
        found = vectors | "FindPairs" >> search
        planted_true = generated[PLANTED] | "AboveThreshold" >> beam.Filter(lambda p: p[2] >= args.threshold)
        planted_keys = planted_true | "PlantedKey" >> beam.Map(lambda p: ((p[0], p[1]), "planted"))
        found_keys = found["pairs"] | "FoundKey" >> beam.Map(lambda p: ((p.id_a, p.id_b), "found"))
        planted_found = (
            (planted_keys, found_keys)
            | "Both" >> beam.Flatten()
            | "ByPair" >> beam.GroupByKey()
            | "PlantedAndFound" >> beam.Filter(lambda kv: {"planted", "found"} <= set(kv[1]))
        )
        counted = {
            "vectors": vectors,
            "pairs": found["pairs"],
            "planted_true": planted_true,
            "planted_found": planted_found,
        }
        measured = counted | "Count" >> CountEach(blocks=("vectors",))
        measured["cells"] = partition | "CountCells" >> beam.Map(lambda p: len(p.centroids))
        measured["largest_cell"] = found[CELL_SIZES] | "Largest" >> beam.CombineGlobally(largest)
        measured["recall"] = {"vectors": vectors, "pairs": found["pairs"]} | MeasureRecall(
            args.recall_sample, args.threshold
        )
        values = {name: beam.pvalue.AsSingleton(pcoll) for name, pcoll in measured.items()}
        p | "Once" >> beam.Create([None]) | "WriteSummary" >> beam.Map(_write_summary, args.out, **values)


def _write_summary(_, path: Path, **measured) -> None:
    path.write_text(json.dumps(measured, default=lambda value: value.__dict__))


def exact_seconds(args: argparse.Namespace) -> tuple[float, int]:
    """Time exact all-pairs on a random subset of ``--exact-sample`` generated vectors."""
    centres = topic_centres(args.topics, args.dim, args.seed)
    generated = generate_chunk((0, args.exact_sample), centres, args.copy_every, args.seed)
    (block,) = [item for item in generated if not isinstance(item, beam.pvalue.TaggedOutput)]
    start = time.perf_counter()
    pairs = threshold_pairs(block.ids, block.vectors, args.threshold)
    return time.perf_counter() - start, len(pairs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--topics", type=int, default=2_000)
    parser.add_argument("--copy-every", type=int, default=10, help="every k-th vector is a near-copy of the one before")
    parser.add_argument("--threshold", type=float, default=0.8)
    parser.add_argument("--margin", type=float, default=0.1)
    parser.add_argument("--target-cell-size", type=int, default=2_000)
    parser.add_argument("--max-cell-size", type=int, default=20_000)
    parser.add_argument("--kmeans-sample", type=int, default=50_000)
    parser.add_argument("--recall-sample", type=int, default=2_000)
    parser.add_argument("--exact-sample", type=int, default=50_000)
    parser.add_argument("--chunk", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("/tmp/semsim-bench-synthetic/summary.json"))
    parser.add_argument("--pipeline-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.pipeline_only:
        run_pipeline(args)
        return

    args.out.parent.mkdir(parents=True, exist_ok=True)
    child = [sys.executable, "-m", "benchmarks.synthetic_pairs", "--pipeline-only", *sys.argv[1:]]
    if "--out" not in sys.argv:
        child += ["--out", str(args.out)]
    seconds, rss = run_measured(child)
    summary = json.loads(args.out.read_text())
    exact_s, exact_pairs = exact_seconds(args)
    extrapolated = exact_s * (args.n / args.exact_sample) ** 2
    recall = summary["recall"]
    print(f"n={args.n} dim={args.dim} topics={args.topics} threshold={args.threshold} margin={args.margin}")
    print(f"pipeline (FnApiRunner, generate + cells + pairs + recall): {seconds:.0f} s, peak RSS {rss:.2f} GiB")
    print(f"cells {summary['cells']}, largest cell {summary['largest_cell']}, pairs found {summary['pairs']}")
    print(
        f"planted pairs >= threshold: {summary['planted_true']}, found {summary['planted_found']} "
        f"(recall {summary['planted_found'] / max(summary['planted_true'], 1):.4f})"
    )
    print(
        f"brute-force recall on {recall['queries']} queries: {recall['found']}/{recall['true_pairs']} "
        f"= {recall['recall']:.4f}"
    )
    print(
        f"exact all-pairs on {args.exact_sample}: {exact_s:.1f} s ({exact_pairs} pairs); extrapolated to {args.n}: "
        f"{extrapolated:.0f} s = {extrapolated / seconds:.1f}x the pipeline"
    )


if __name__ == "__main__":
    main()
