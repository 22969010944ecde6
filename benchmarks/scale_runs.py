"""How wall time and peak memory of one full ``semsim batch`` grow with the number of titles, measured in one session.

    python -m benchmarks.scale_runs [--titles TITLES.tsv.gz] [--sizes 50000 100000 200000 500000] [-- FLAGS]

Each size is one child process (its peak RSS is its own) over the first N titles; FLAGS go to every run (e.g.
``--history /tmp/h`` is not allowed: each run gets a fresh store with ``--with-history``). Default: the committed
3,000-title sample at 1,000 and 3,000.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from benchmarks.measure import SEMSIM, machine, run_measured
from benchmarks.titles import SAMPLE_TITLES, read_titles, write_titles


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--titles", type=Path, default=SAMPLE_TITLES, help="titles file (default: the sample)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 3_000])
    parser.add_argument("--with-history", action="store_true", help="each run creates a fresh history store")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/semsim-bench-scale"))
    parser.add_argument("flags", nargs=argparse.REMAINDER, help="extra semsim batch flags for every run")
    args = parser.parse_args()
    args.flags = args.flags[1:] if args.flags[:1] == ["--"] else args.flags

    titles = read_titles(args.titles, max(args.sizes))
    print(f"{machine()}; {'with' if args.with_history else 'without'} --history")
    print(f"{'titles':>8} {'wall s':>8} {'peak RSS GiB':>12} {'titles/s':>9}")
    for size in sorted(args.sizes):
        folder = args.workdir / str(size)
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        source = write_titles(folder, titles[:size])
        command = [SEMSIM, "batch", "--input", str(source), "--output", str(folder / "out"), *args.flags]
        if args.with_history:
            command += ["--history", str(folder / "history")]
        seconds, rss = run_measured(command)
        print(f"{min(size, len(titles)):>8} {seconds:>8.1f} {rss:>12.2f} {min(size, len(titles)) / seconds:>9.0f}")


if __name__ == "__main__":
    main()
