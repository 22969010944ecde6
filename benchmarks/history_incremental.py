"""Incremental runs against a history store vs one full run, on real titles, measured in one session.

    python -m benchmarks.history_incremental [--titles TITLES.tsv.gz] [--history-size 100000] [--new 10000]
        [--history-dtype float16] [-- FLAGS]

Builds a history store from the first ``--history-size`` titles (``semsim batch --history``, timed too), then
deduplicates the next ``--new`` titles against it (the incremental run), then runs one full ``semsim batch`` over
all of them with the store's centroids. Prints each run's wall time and peak RSS, the full / incremental ratio, and
whether the pairs agree: the full run's pairs against the union of the two history runs' pairs. Each run is a child
process. Default: the committed 3,000-title sample (2,700 + 300).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import pandas as pd

from benchmarks.measure import SEMSIM, machine, run_measured
from benchmarks.titles import SAMPLE_TITLES, read_titles, write_titles


def _pairs(*folders: Path) -> set[tuple[str, str, str]]:
    pairs = pd.concat([pd.read_parquet(folder / "pairs") for folder in folders])
    return set(zip(pairs["id_a"], pairs["id_b"], pairs["kind"], strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--titles", type=Path, default=SAMPLE_TITLES, help="titles file (default: the sample)")
    parser.add_argument("--history-size", type=int, default=2_700)
    parser.add_argument("--new", type=int, default=300)
    parser.add_argument("--history-dtype", choices=("float32", "float16"), default="float32", help="the store's")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/semsim-bench-history"))
    parser.add_argument("flags", nargs=argparse.REMAINDER, help="extra semsim batch flags for every run")
    args = parser.parse_args()
    args.flags = args.flags[1:] if args.flags[:1] == ["--"] else args.flags

    titles = read_titles(args.titles, args.history_size + args.new)
    if len(titles) < args.history_size + args.new:
        parser.error(f"{args.titles} holds {len(titles)} titles, fewer than --history-size + --new")
    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    old = write_titles(args.workdir, titles[: args.history_size], "old.jsonl")
    new = write_titles(args.workdir, titles[args.history_size :], "new.jsonl", args.history_size)
    history = args.workdir / "history"
    print(machine())
    print(f"{len(titles) - args.history_size} new titles against {args.history_size} stored")

    def batch(name: str, *flags: str) -> float:
        out = args.workdir / name
        seconds, rss = run_measured([SEMSIM, "batch", "--output", str(out), *flags, *args.flags])
        print(f"{name:>12}: {seconds:7.1f} s, peak RSS {rss:5.2f} GiB")
        return seconds

    batch("build", "--input", str(old), "--history", str(history), "--history-dtype", args.history_dtype)
    incremental = batch("incremental", "--input", str(new), "--history", str(history))
    centroids = next(history.glob("centroids-*.npy"))
    full = batch("full", "--input", str(old), "--input", str(new), "--centroids", str(centroids))
    print(f"full / incremental: {full / incremental:.1f}x")
    daily, whole = _pairs(args.workdir / "build", args.workdir / "incremental"), _pairs(args.workdir / "full")
    print(
        f"pairs: full {len(whole)}, build + incremental {len(daily)}, in both {len(daily & whole)}, "
        f"only full {len(whole - daily)}, only incremental {len(daily - whole)}"
    )


if __name__ == "__main__":
    main()
