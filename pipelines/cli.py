"""The ``semsim`` command: ``semsim batch ...`` and ``semsim eval stsb ...``."""

from __future__ import annotations

import logging
import sys

USAGE = """usage: semsim <command> [flags]

commands:
  batch       find near-duplicates in files: semsim batch --input GLOB --output DIR [--threshold T] [--model M]
              [--runner R] [any Beam pipeline flag]   (semsim batch --help for all flags)
  stream      match Pub/Sub posts as they arrive: semsim stream --subscription projects/P/subscriptions/S --output DIR
              [--centroids PATH] [--notify-topic T] [--retention 30d | --max-per-cell N] [Beam flags]
  eval stsb   STS Benchmark Spearman and best-F1 threshold: semsim eval stsb --file sts-test.csv [--model M]
"""


def _quiet_model_loading() -> None:
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    _quiet_model_loading()
    if args[:1] == ["batch"]:
        from pipelines import batch_dedup

        if {"-h", "--help"} & set(args[1:]):
            from pipelines.options import BatchDedupOptions

            BatchDedupOptions(["--help"])  # argparse prints the flags and exits
        return batch_dedup.main(args[1:])
    if args[:1] == ["stream"]:
        from pipelines import streaming_dedup

        if {"-h", "--help"} & set(args[1:]):
            from pipelines.options import StreamingDedupOptions

            StreamingDedupOptions(["--help"])
        return streaming_dedup.main(args[1:])
    if args[:2] == ["eval", "stsb"]:
        from pipelines import eval_stsb

        return eval_stsb.main(args[2:])
    print(USAGE, file=sys.stderr if args and args[0] not in ("-h", "--help") else sys.stdout)
    return 0 if args[:1] in (["-h"], ["--help"]) else 2


if __name__ == "__main__":
    sys.exit(main())
