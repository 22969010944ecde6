"""Cells vs exact all-pairs on real titles: pair recall and wall time, measured in one run.

    python -m benchmarks.cells_recall [--titles TITLES.tsv.gz] [-n 50000]

Embeds the titles once (``semsim batch --write-embeddings``), then for each threshold runs ``semsim batch
--input-embeddings`` twice: exact (one cell, never split) and with the default cells and margin. Recall is the share
of the exact run's semantic pairs that the cell run finds. Each run is a child process: wall time and peak RSS.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from benchmarks.measure import SEMSIM, run_measured
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
        source = write_titles(folder, read_titles(args.titles, args.n))
        seconds, rss = run_measured(
            [SEMSIM, "batch", "--input", str(source), "--output", str(embeddings.parent), "--write-embeddings"]
        )
        print(f"embed {args.n} titles once: {seconds:.0f} s, peak RSS {rss:.2f} GiB")

    print(
        f"{'threshold':>9} {'exact pairs':>11} {'exact s':>8} {'exact GiB':>9} {'cells':>6} {'cells s':>8} "
        f"{'cells GiB':>9} {'recall':>7} {'speed-up':>8}"
    )
    for threshold in args.thresholds:
        runs = {}
        for name, flags in (("exact", ["--cells", "1", "--max-cell-size", "1000000000"]), ("cells", args.cell_flags)):
            out = args.workdir / f"{name}-{args.n}-{threshold}"
            cmd = [SEMSIM, "batch", "--input-embeddings", str(embeddings), "--output", str(out), "--overwrite"]
            seconds, rss = run_measured([*cmd, "--threshold", str(threshold), *flags])
            runs[name] = (seconds, rss, semantic_pairs(out), Summary.from_json((out / SUMMARY).read_text()))
        exact, cells = runs["exact"][2], runs["cells"][2]
        recall = len(exact & cells) / max(len(exact), 1)
        print(
            f"{threshold:>9} {len(exact):>11} {runs['exact'][0]:>8.1f} {runs['exact'][1]:>9.2f} "
            f"{runs['cells'][3].cells:>6} {runs['cells'][0]:>8.1f} {runs['cells'][1]:>9.2f} {recall:>7.4f} "
            f"{runs['exact'][0] / runs['cells'][0]:>7.2f}x"
        )


if __name__ == "__main__":
    main()
