"""Cells vs exact all-pairs on real titles: pair recall and wall time, measured in one run.

    python -m benchmarks.cells_recall [--titles TITLES.tsv.gz] [-n 50000]

Embeds the titles once (``semsim batch --write-embeddings``), then for each threshold runs ``semsim batch
--input-embeddings`` three times: exact (one cell, never split), the default cells with the margin tuned for
``--target-recall`` (the default), and the same cells with the fixed margin 0.1 semsim used before. Recall is the
share of the exact run's semantic pairs that a run finds; "sample recall" is what the run measured itself on its
brute-force sample. Each run is a child process: wall time and peak RSS.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from benchmarks.measure import SEMSIM, machine, run_measured
from benchmarks.titles import SAMPLE_TITLES, read_titles, write_titles
from semsim_core.run_layout import SUMMARY, Summary


def semantic_pairs(folder: Path) -> set[tuple[str, str]]:
    pairs = pd.read_parquet(folder / "pairs")
    pairs = pairs[pairs["kind"] == "semantic"]
    return set(zip(pairs["id_a"], pairs["id_b"], strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--titles", type=Path, default=SAMPLE_TITLES, help="titles file (default: the committed sample)"
    )
    parser.add_argument("-n", type=int, default=50_000)
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.75, 0.8, 0.9])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/semsim-bench-cells"))
    parser.add_argument("--cell-flags", nargs=argparse.REMAINDER, default=[], help="extra flags for the cell runs")
    args = parser.parse_args()

    embeddings = args.workdir / f"embed-{args.n}" / "embeddings"
    if not embeddings.exists():
        folder = args.workdir / f"titles-{args.n}"
        folder.mkdir(parents=True, exist_ok=True)
        titles = read_titles(args.titles, args.n)
        source = write_titles(folder, titles)
        seconds, rss = run_measured(
            [SEMSIM, "batch", "--input", str(source), "--output", str(embeddings.parent), "--write-embeddings"]
        )
        print(f"embed {len(titles)} titles once: {seconds:.0f} s, peak RSS {rss:.2f} GiB")

    print(machine())
    print(
        f"{'threshold':>9} {'run':>6} {'pairs':>7} {'s':>7} {'GiB':>5} {'cells':>5} {'margin':>7} {'recall':>7} "
        f"{'sample recall':>13} {'speed-up':>8}"
    )
    variants = (
        ("exact", ["--cells", "1", "--max-cell-size", "1000000000"]),
        ("tuned", args.cell_flags),  # the default: the margin tuned for --target-recall
        ("0.1", [*args.cell_flags, "--cell-margin", "0.1"]),  # the fixed margin semsim used before
    )
    for threshold in args.thresholds:
        runs = {}
        for name, flags in variants:
            out = args.workdir / f"{name}-{args.n}-{threshold}"
            cmd = [SEMSIM, "batch", "--input-embeddings", str(embeddings), "--output", str(out), "--overwrite"]
            seconds, rss = run_measured([*cmd, "--threshold", str(threshold), *flags])
            runs[name] = (seconds, rss, semantic_pairs(out), Summary.from_json((out / SUMMARY).read_text()))
        exact = runs["exact"][2]
        for name, (seconds, rss, pairs, summary) in runs.items():
            recall = len(exact & pairs) / max(len(exact), 1)
            sample = f"{summary.recall.recall:.4f}" if summary.recall else "-"
            print(
                f"{threshold:>9} {name:>6} {len(pairs):>7} {seconds:>7.1f} {rss:>5.2f} {summary.cells:>5} "
                f"{summary.cell_margin or 0:>7.4f} {recall:>7.4f} {sample:>13} {runs['exact'][0] / seconds:>7.2f}x"
            )


if __name__ == "__main__":
    main()
