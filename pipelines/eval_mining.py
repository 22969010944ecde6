"""``semsim eval mining``: paraphrase-mining average precision and best F1 of ``semsim batch``'s pairs against gold
duplicate pairs (the measure of sentence-transformers' ParaphraseMiningEvaluator).

Runs the batch pipeline on the corpus at --threshold-floor, ranks every pair it reports (exact copies expanded to
every pair of their group) by score, and scores that ranking against the gold pairs whose two ids are both in the
corpus. Any ``semsim batch`` flag passes through (``--input``, ``--model``, ``--backend``, Beam flags, ...).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile

from apache_beam.io.filesystems import FileSystems

from pipelines import batch_dedup
from pipelines.command_parser import CommandParser, unknown_argument
from pipelines.options import BatchDedupOptions, OptionsError, unknown_flags
from pipelines.run_files import read_parquet_folder
from semsim_core import run_layout as layout
from semsim_core.formats import TABLE_FORMATS, TableError
from semsim_core.mining_eval import expand_exact_groups, mining_report, read_gold_pairs
from semsim_core.records import CLUSTERS_SCHEMA, PAIRS_SCHEMA

PROG = "semsim eval mining"


def _parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog=PROG,
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
        epilog="Also: --input CORPUS (required) and any other semsim batch flag (semsim batch --help).",
    )
    parser.add_argument(
        "--gold", required=True, metavar="PAIRS", help="gold duplicate pairs: CSV/TSV/JSONL with id_a and id_b"
    )
    parser.add_argument("--gold-format", choices=("auto", *TABLE_FORMATS), default="auto")
    parser.add_argument(
        "--threshold-floor",
        type=float,
        metavar="F",
        default=0.5,
        help="the batch run's --threshold: pairs below it are not ranked (default 0.5)",
    )
    parser.add_argument(
        "--output", metavar="DIR", help="keep the batch run's outputs in this folder (default: a temporary one)"
    )
    return parser


def evaluate(batch_flags: list[str], gold_path: str, gold_format: str, floor: float, output: str) -> dict:
    """Run ``semsim batch`` into ``output`` at ``floor`` and score its pairs against the gold pairs."""
    gold = read_gold_pairs(gold_path, gold_format)
    summary, _ = batch_dedup.run([*batch_flags, "--output", output, "--threshold", repr(floor)])
    clusters = read_parquet_folder(FileSystems.join(output, layout.CLUSTERS), CLUSTERS_SCHEMA)
    corpus = set(clusters.column("id").to_pylist())
    in_corpus = {pair for pair in gold if pair[0] in corpus and pair[1] in corpus}
    if not in_corpus:
        raise TableError(f"{gold_path}: no gold pair has both ids in the corpus ({len(corpus)} records)")
    table = read_parquet_folder(FileSystems.join(output, layout.PAIRS), PAIRS_SCHEMA)
    candidates = expand_exact_groups(zip(*(column.to_pylist() for column in table.columns), strict=True))
    report = mining_report(candidates, in_corpus)
    return {
        "gold": gold_path,
        "records": summary.accepted,
        "gold_pairs_not_in_corpus": len(gold) - len(in_corpus),
        "threshold_floor": floor,
        "model": summary.model,
        "backend": summary.backend,
        **report._asdict(),
    }


def main(argv: list[str]) -> int:
    """Entry point: print the report as JSON; bad options or gold pairs print one line and exit 2."""
    parser = _parser()
    args, batch_flags = parser.parse_known_args(argv)
    unknown, known = unknown_flags(batch_flags, BatchDedupOptions)
    error = None
    if any(flag == "--threshold" or flag.startswith("--threshold=") for flag in batch_flags):
        error = "use --threshold-floor, not --threshold: it sets the batch run's threshold"
    elif unknown:  # suggested from this command's flags too
        error = unknown_argument(unknown[0], [*parser._option_string_actions, *known])
    elif not 0.0 < args.threshold_floor <= 1.0:
        error = f"--threshold-floor must be in (0, 1], got {args.threshold_floor}"
    if error is None:
        try:
            with tempfile.TemporaryDirectory(prefix="semsim-mining-") as scratch:
                output = args.output or scratch
                report = evaluate(batch_flags, args.gold, args.gold_format, args.threshold_floor, output)
        except (OptionsError, TableError) as e:
            error = str(e)
    if error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
