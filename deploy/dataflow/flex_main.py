"""Flex-template entry point (FLEX_TEMPLATE_PYTHON_PY_FILE): submit one semsim pipeline to Dataflow and return.

The launcher passes the template's parameters as ``--name=value`` flags; ``SEMSIM_PIPELINE`` (set in the image) picks
the pipeline, ``batch`` or ``stream``. A flex template must not wait for its job, so neither pipeline is awaited.
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str]) -> int:
    from pipelines.options import OptionsError

    name = os.environ.get("SEMSIM_PIPELINE", "batch")
    if name not in ("batch", "stream"):
        print(f"SEMSIM_PIPELINE must be batch or stream, got {name!r}", file=sys.stderr)
        return 2
    if not any(arg.split("=")[0] == "--runner" for arg in argv):
        argv = ["--runner=DataflowRunner", *argv]  # semsim's own default runner is local
    try:
        if name == "stream":
            from pipelines import streaming_dedup

            streaming_dedup.start(argv)
        else:
            from pipelines import batch_dedup

            batch_dedup.start(argv)
    except OptionsError as e:
        print(f"semsim {name}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
