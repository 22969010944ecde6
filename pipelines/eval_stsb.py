"""``semsim eval stsb``: Spearman correlation on STS Benchmark and the best-F1 paraphrase threshold."""

from __future__ import annotations

import json
import sys

from pipelines.command_parser import CommandParser
from semsim_core.backends import CHOICES, DEFAULT_BACKEND, backend_error
from semsim_core.embedder import DEFAULT_MODEL, Embedder, model_error
from semsim_core.evaluation import evaluate_stsb, read_stsb
from semsim_core.formats import TableError


def main(argv: list[str]) -> int:
    parser = CommandParser(prog="semsim eval stsb", description=__doc__)
    parser.add_argument("--file", required=True, help="an STS Benchmark file, e.g. sts-test.csv (tab-separated)")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="sentence-transformers name or local path")
    parser.add_argument("--backend", choices=CHOICES, default=DEFAULT_BACKEND, help="inference backend (default: auto)")
    parser.add_argument(
        "--paraphrase-min-score",
        type=float,
        default=4.0,
        help="gold score from which a pair counts as a paraphrase for the threshold search (0-5)",
    )
    args = parser.parse_args(argv)
    error = model_error(args.model) or backend_error(args.backend)
    if error:
        parser.error(error)
    try:
        data = read_stsb(args.file)
    except TableError as e:
        parser.error(f"--file: {e}")
    paraphrases = sum(gold >= args.paraphrase_min_score for gold in data.gold)
    if not 0 < paraphrases < len(data.gold):
        parser.error(
            f"--paraphrase-min-score {args.paraphrase_min_score:g}: {paraphrases} of the {len(data.gold)} pairs are "
            "paraphrases then; the threshold search needs both paraphrases and others"
        )
    embedder = Embedder.load(args.model, args.backend)
    report = evaluate_stsb(embedder, data, args.paraphrase_min_score)
    print(
        json.dumps({"file": args.file, "model": args.model, "backend": embedder.backend, **report._asdict()}, indent=2)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
