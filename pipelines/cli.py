"""The ``semsim`` command: one entry point for batch, stream, eval, calibrate and report."""

from __future__ import annotations

import logging
import os
import sys

USAGE = """usage: semsim <command> [flags]

commands:
  batch       find near-duplicates in files: semsim batch --input GLOB --output DIR [--threshold T] [--model M]
              [--runner R] [any Beam pipeline flag]   (semsim batch --help for all flags)
  stream      match Pub/Sub posts as they arrive: semsim stream --subscription projects/P/subscriptions/S --output DIR
              [--centroids PATH] [--notify-topic T] [--retention 30d | --max-per-cell N] [Beam flags]
  eval stsb   STS Benchmark Spearman and best-F1 threshold: semsim eval stsb --file sts-test.csv [--model M]
  eval mining paraphrase-mining average precision and best F1 of semsim batch's pairs against gold pairs:
              semsim eval mining --input CORPUS --gold PAIRS [--threshold-floor 0.5] [semsim batch flags]
  calibrate   precision / recall / F1 by threshold on labeled pairs: semsim calibrate --pairs FILE
              [--format F] [--positive-min S] [--target-precision P] [--out PREFIX]
  report      one self-contained HTML page on a batch run: semsim report OUT_DIR [--html FILE] [--examples N]
              [--top-clusters K] [--input GLOB]   (semsim report --help for all flags)
  history     what a history store holds, and its upkeep: semsim history {info,compact,recentre,unlock} H
"""


def _quiet_model_loading() -> None:
    """No transformers warnings or progress bars when a model loads, unless the user's environment asks for them
    (read when transformers is imported, which a model loaded from the backend cache never does)."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("semsim.progress").setLevel(logging.INFO)  # --progress-seconds lines
    logging.getLogger("semsim.backend").setLevel(logging.INFO)  # what --backend auto chose, with the rates measured
    if args[:1] == ["report"]:  # before the model-loading set-up: a report loads no model
        from pipelines import report

        return report.main(args[1:])
    if args[:1] == ["history"]:
        from pipelines import history_cli

        return history_cli.main(args[1:])
    _quiet_model_loading()
    if args[:1] == ["batch"]:
        from pipelines import batch_dedup

        return batch_dedup.main(args[1:])
    if args[:1] == ["stream"]:
        from pipelines import streaming_dedup

        return streaming_dedup.main(args[1:])
    if args[:2] == ["eval", "stsb"]:
        from pipelines import eval_stsb

        return eval_stsb.main(args[2:])
    if args[:2] == ["eval", "mining"]:
        from pipelines import eval_mining

        return eval_mining.main(args[2:])
    if args[:1] == ["calibrate"]:
        from pipelines import calibrate

        return calibrate.main(args[1:])
    if args[:1] == ["eval"]:
        if args[1:2] in (["-h"], ["--help"]):
            commands = USAGE[USAGE.index("  eval") : USAGE.index("  calibrate")]
            print(f"usage: semsim eval {{stsb,mining}} [flags]\n\n{commands}")
            return 0
        said = f"unknown command 'eval {args[1]}'" if len(args) > 1 else "semsim eval needs a command"
        print(f"semsim: error: {said}: eval stsb or eval mining (semsim eval --help)", file=sys.stderr)
        return 2
    if args and args[0] not in ("-h", "--help"):
        print(f"semsim: error: unknown command {args[0]!r} (semsim --help lists them)", file=sys.stderr)
        return 2
    print(USAGE, file=sys.stdout if args else sys.stderr)
    return 0 if args else 2


if __name__ == "__main__":
    sys.exit(main())
